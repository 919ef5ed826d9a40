package kube_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/scale-dev/scale/deploy/kubeplane"
	"github.com/scale-dev/scale/internal/testenv"
	"github.com/scale-dev/scale/services/chaos-runner/internal/kube"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func podSpec() corev1.PodSpec {
	return corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "fake.invalid/fake:1",
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m")}}}}}
}

// runningPods lists the namespace's running pods with a label selector.
func runningPods(t *testing.T, c kubernetes.Interface, ns, sel string) []string {
	t.Helper()
	list, err := c.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: sel, FieldSelector: "status.phase=Running"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			names = append(names, p.Name)
		}
	}
	slices.Sort(names)
	return names
}

// TestAttackOnARealControlPlane: on a real apiserver and controller manager,
// fixed-percent picks from the opted-in pods only (never a pod without the
// label, never the runner's own), the ReplicaSet replaces what was killed,
// an eviction a PodDisruptionBudget forbids is refused, not forced, and a
// drained node is cordoned and its pods run elsewhere.
func TestAttackOnARealControlPlane(t *testing.T) {
	p := kubeplane.Start(t, kubeplane.Options{})
	ctx := context.Background()
	c := p.Client
	const ns = "chaos"
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The controller manager creates the namespace's default service account
	// a moment later; a pod created before it is refused.
	testenv.Poll(t, "the namespace's default service account", 30*time.Second, func() (bool, error) {
		_, err := c.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, err
	})
	victim := map[string]string{"app": "victim", kube.OptIn: "true"}
	replicas := int32(4)
	if _, err := c.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "victim"},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "victim"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: victim}, Spec: podSpec()}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, labels := range map[string]map[string]string{
		"bystander": {"app": "victim"}, // not opted in
		"runner":    victim,            // the runner's own pod
	} {
		if _, err := c.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Spec: podSpec()}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	before := testenv.Poll(t, "6 pods running", 60*time.Second, func() (bool, []string) {
		names := runningPods(t, c, ns, "app=victim")
		return len(names) == 6, names
	})

	d := kube.Driver{Client: c, Self: ns + "/runner"}
	target := kube.Target{Namespace: ns, Selector: "app=victim", Mode: kube.FixedPercent, Value: 50}
	cands, err := d.Candidates(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	if len(cands) != 4 {
		t.Fatalf("%d candidates, want the Deployment's 4 (not the bystander, not the runner)", len(cands))
	}
	out, err := d.Attack(ctx, target, kube.Force, 0, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 {
		t.Fatalf("fixed-percent 50 of 4 killed %v, want 2", out)
	}
	for _, o := range out {
		if !o.Killed || o.Pod == ns+"/runner" || o.Pod == ns+"/bystander" {
			t.Errorf("outcome %+v", o)
		}
	}
	after := testenv.Poll(t, "the ReplicaSet replaces the killed pods", 60*time.Second, func() (bool, []string) {
		names := runningPods(t, c, ns, "app=victim")
		return len(names) == 6, names
	})
	replaced := 0
	for _, n := range after {
		if !slices.Contains(before, n) {
			replaced++
		}
	}
	if replaced != 2 {
		t.Errorf("pods before %v, after %v: %d new, want 2", before, after, replaced)
	}

	// Eviction respects the budget: none may go while it allows 0 disruptions.
	all := intstr.FromInt32(5) // the Deployment's 4 and the runner
	if _, err := c.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "victim"},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: &all, Selector: &metav1.LabelSelector{MatchLabels: victim}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Poll(t, "the disruption controller to count the budget", 30*time.Second, func() (bool, int32) {
		pdb, err := c.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "victim", metav1.GetOptions{})
		return err == nil && pdb.Status.ExpectedPods == 5, pdb.Status.ExpectedPods
	})
	out, err = d.Attack(ctx, kube.Target{Namespace: ns, Selector: "app=victim", Mode: kube.One}, kube.Evict, -1, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].Killed || out[0].Refused == "" {
		t.Fatalf("eviction against a budget that allows none: %+v, want refused", out)
	}
	if names := runningPods(t, c, ns, "app=victim"); len(names) != 6 {
		t.Errorf("after a refused eviction %d pods run, want 6", len(names))
	}

	// A drain: the node is cordoned, its pods evicted and placed elsewhere.
	if err := c.PolicyV1().PodDisruptionBudgets(ns).Delete(ctx, "victim", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	victimPods, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=victim," + kube.OptIn + "=true"})
	if err != nil {
		t.Fatal(err)
	}
	node := ""
	for _, p := range victimPods.Items {
		if p.Name != "runner" && p.Spec.NodeName != "" {
			node = p.Spec.NodeName
			break
		}
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	out, err = d.Drain(dctx, node)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("draining %s evicted nothing", node)
	}
	for _, o := range out {
		if !o.Killed {
			t.Errorf("drain of %s: %+v", node, o)
		}
	}
	n, err := c.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil || !n.Spec.Unschedulable {
		t.Fatalf("node %s after the drain: unschedulable %v, %v", node, n.Spec.Unschedulable, err)
	}
	testenv.Poll(t, "the Deployment's pods running again, none on the drained node", 60*time.Second, func() (bool, []string) {
		list, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=victim", FieldSelector: "status.phase=Running"})
		if err != nil {
			return false, nil
		}
		var on []string
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && p.OwnerReferences != nil {
				on = append(on, p.Name+"@"+p.Spec.NodeName)
			}
		}
		ok := len(on) == 4
		for _, x := range on {
			ok = ok && !strings.HasSuffix(x, "@"+node)
		}
		return ok, on
	})
	if err := d.Cordon(ctx, node, false); err != nil {
		t.Fatal(err)
	}
}
