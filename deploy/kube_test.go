package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/scale-dev/scale/deploy/kubeplane"
	"github.com/scale-dev/scale/internal/cgroup"
	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/objstore"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/synth"
	"github.com/scale-dev/scale/internal/testenv"
	"github.com/scale-dev/scale/internal/transport"
	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/ingest"
)

const (
	e2eNamespace = "scale-e2e"
	e2eRelease   = "prod"
	extractName  = e2eRelease + "-scale-extract"
)

// TestExtractAutoscalesOnQueueLag installs the chart on a real control plane
// (etcd, kube-apiserver, kube-controller-manager with its HPA controller
// syncing every second, kube-scheduler, kwok nodes) into a namespace that
// enforces restricted Pod Security, with an external-metrics adapter serving
// the real JetStream consumer's lag, and a stand-in kubelet that runs one real
// extract process for each Ready extract pod. It shows: idle → 1 replica; a
// backlog of 200 → ceil(200/50) = 4; 5,000 → the maximum 10; the consumer
// missing → scaling stops with the replicas unchanged; real workers drain the
// backlog while the chaos runner (as its own service account) force-kills half
// the extract pods, the ReplicaSet replaces them, and every file ends as
// exactly one song or failure; drained → back to 1. Then a chaos experiment
// with environment kubernetes (chaos-runner run) kills half the extract pods
// during its own workload and passes on its own accounting. And the runner's
// RBAC: it may delete pods in its namespace, not in kube-system, and not touch
// nodes.
func TestExtractAutoscalesOnQueueLag(t *testing.T) {
	if testing.Short() {
		t.Skip("the control-plane test takes about a minute")
	}
	p := kubeplane.Start(t, kubeplane.Options{ControllerArgs: []string{"--horizontal-pod-autoscaler-sync-period=1s"}})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		t.Log(p.Logs())
		pods, _ := p.Client.CoreV1().Pods(e2eNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=extract"})
		for _, pod := range pods.Items {
			t.Logf("pod %s phase %s node %q deleting %v ready %v conditions %v", pod.Name, pod.Status.Phase, pod.Spec.NodeName,
				pod.DeletionTimestamp != nil, podReady(pod), pod.Status.Conditions)
		}
	})
	ctx := context.Background()
	c := p.Client
	bins := binaries(t)

	pgURL := testenv.PostgresURL(t)
	natsURL := testenv.NATS(t).ClientURL()
	conn, err := transport.Connect(natsURL, "e2e", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.NC.Close)
	adapter := startLagAdapter(t, conn.JS)
	adapter.register(t, p)

	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e2eNamespace,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().Secrets(e2eNamespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "scale-postgres"},
		StringData: map[string]string{"url": pgURL, "reader-url": pgURL, "owner-url": pgURL}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	vals := readValues(t, chartDir+"/ci/hpa-external-values.yaml")
	var overrides map[string]any
	if err := yaml.Unmarshal([]byte(fmt.Sprintf(`
externalNats: {url: %q}
ingest: {enabled: false}
extract: {settings: {ackWait: 5s}}
chaosRunner: {enabled: true}
`, natsURL)), &overrides); err != nil {
		t.Fatal(err)
	}
	objs, err := renderAs(e2eRelease, e2eNamespace, mergeValues(vals, overrides))
	if err != nil {
		t.Fatal(err)
	}
	kl := &kubelet{t: t, client: c, bins: bins, procs: map[types.UID]*launcher.Process{}, seen: map[types.UID]bool{}}

	// The release's migration Job, run for real (kwok only pretends to run pods).
	migrate := findObject(t, objs, "Job", e2eRelease+"-scale-migrate-")
	var job struct {
		Spec struct {
			Template corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(migrate.doc, &job); err != nil {
		t.Fatal(err)
	}
	runToEnd(t, kl, job.Spec.Template.Spec.Containers[0], e2eNamespace)

	start := time.Now()
	apply(t, p, objs)
	t.Logf("chart applied (server-side, strict field validation, restricted Pod Security) in %s", time.Since(start).Round(time.Millisecond))

	// Idle: the lag is 0 and the HPA holds the minimum.
	waitHPA(t, c, "idle: 1 replica, metric 0", 60*time.Second, func(h *autoscalingv2.HorizontalPodAutoscaler) bool {
		return condition(h, autoscalingv2.ScalingActive) == corev1.ConditionTrue && h.Status.DesiredReplicas == 1 && externalValue(h) == 0
	})

	// A backlog of 200: ceil(200/50) = 4.
	st, err := store.Open(ctx, pgURL, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	corpus := t.TempDir()
	stats, err := synth.Measure(testenv.SharedCorpus(t))
	if err != nil {
		t.Fatal(err)
	}
	writeCorpus(t, stats, filepath.Join(corpus, "a"), 200, 12)
	writeCorpus(t, stats, filepath.Join(corpus, "b"), 4800, 13)
	discover(t, conn, st, corpus, "a")
	waitReplicas(t, c, "a backlog of 200 → 4 replicas", 30*time.Second, 4)
	time.Sleep(3 * time.Second) // several HPA syncs: it stays at 4
	if r := replicas(t, c); r != 4 {
		t.Fatalf("a backlog of 200 with 50 per replica: %d replicas, want 4", r)
	}

	// 5,000: the maximum, 10.
	published := time.Now()
	discover(t, conn, st, corpus, "b")
	waitReplicas(t, c, "a backlog of 5,000 → 10 replicas", 60*time.Second, 10)
	toScale := time.Since(published)
	testenv.Poll(t, "10 extract pods ready", 60*time.Second, func() (bool, int32) {
		d, err := c.AppsV1().Deployments(e2eNamespace).Get(ctx, extractName, metav1.GetOptions{})
		return err == nil && d.Status.ReadyReplicas == 10, d.Status.ReadyReplicas
	})
	t.Logf("time to scale 4 → 10 replicas: %s (spec), %s (10 pods ready)", toScale.Round(time.Millisecond), time.Since(published).Round(time.Millisecond))
	waitHPA(t, c, "ScalingLimited at the maximum", 20*time.Second, func(h *autoscalingv2.HorizontalPodAutoscaler) bool {
		return condition(h, autoscalingv2.ScalingLimited) == corev1.ConditionTrue
	})

	// The consumer missing: no metric, scaling stops, replicas unchanged.
	if err := conn.JS.DeleteConsumer(ctx, events.StreamDiscovered, events.ConsumerExtract); err != nil {
		t.Fatal(err)
	}
	waitHPA(t, c, "the consumer missing: ScalingActive false", 30*time.Second, func(h *autoscalingv2.HorizontalPodAutoscaler) bool {
		return condition(h, autoscalingv2.ScalingActive) == corev1.ConditionFalse
	})
	time.Sleep(3 * time.Second)
	if r := replicas(t, c); r != 10 {
		t.Fatalf("with the consumer missing the replicas went to %d, want 10 unchanged", r)
	}
	runToEnd(t, kl, job.Spec.Template.Spec.Containers[0], e2eNamespace) // the consumer again

	// Real workers drain the backlog; half the extract pods are killed on the way.
	kl.cpus = 0.03 // about 65 files/s per worker: the drain lasts long enough to watch
	kl.start(e2eNamespace, "app.kubernetes.io/component=extract")
	drainStart := time.Now()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		info, err := consumerInfo(conn)
		t.Logf("consumer at the end: %+v %v; replicas %d; processes running %d", info, err, replicas(t, c), kl.running())
		for _, l := range kl.logs() {
			t.Logf("a worker's log:\n%s", tail(l, 3000))
		}
	})
	testenv.Poll(t, "the first files done", 60*time.Second, func() (bool, int64) {
		a, err := st.Account(ctx)
		return err == nil && a.Done+a.Failed >= 300, a.Done + a.Failed
	})
	token := serviceAccountToken(t, c, e2eRelease+"-scale-chaos-runner")
	runnerConfig := filepath.Join(t.TempDir(), "runner.kubeconfig")
	if err := p.WriteKubeconfig(runnerConfig, token); err != nil {
		t.Fatal(err)
	}
	killed, err := exec.Command(bins["chaos-runner"], "pods", "kill", "--namespace", e2eNamespace, "--selector",
		"app.kubernetes.io/component=extract", "--mode", "fixed-percent", "--value", "50", "--how", "force",
		"--seed", "7", "--kubeconfig", runnerConfig).CombinedOutput()
	if err != nil {
		t.Fatalf("chaos-runner pods kill: %v\n%s", err, killed)
	}
	if n := strings.Count(string(killed), `"killed":true`); n != 5 {
		t.Fatalf("fixed-percent 50 of 10 killed %d pods, want 5:\n%s", n, killed)
	}
	t.Logf("killed during the drain:\n%s", killed)
	// The ReplicaSet replaces them: five new pods become Ready (before the
	// shrinking backlog lets the HPA take replicas away again).
	testenv.Poll(t, "the killed pods replaced", 30*time.Second, func() (bool, int) {
		n := kl.seenCount()
		return n >= 15, n
	})
	final := testenv.Poll(t, "every file a song or a failure", 180*time.Second, func() (bool, store.Accounting) {
		a, err := st.Account(ctx)
		return err == nil && a.Discovered == 5000 && a.Balanced(), a
	})
	t.Logf("accounting: %+v; extract pods Ready %d, processes started %d, killed %d", final, kl.seenCount(), kl.startedCount(), kl.killedCount())
	for _, e := range kl.exited() {
		t.Errorf("an extract process exited on its own: %s", e)
	}
	if kl.killedCount() < 5 {
		t.Errorf("the stand-in kubelet killed %d processes for deleted pods, want at least the 5 killed", kl.killedCount())
	}
	drained := time.Now()
	waitReplicas(t, c, "drained → back to 1 replica", 60*time.Second, 1)
	t.Logf("5,000 files drained by real workers in %s; back to 1 replica %s after the drain began", drained.Sub(drainStart).Round(time.Millisecond),
		time.Since(drainStart).Round(time.Millisecond))
	runKubernetesExperiment(t, p, c, kl, bins, stats, corpus, natsURL, pgURL)
	kl.stop()

	// The runner's service account: pods here, nothing in kube-system, no nodes.
	sa := "system:serviceaccount:" + e2eNamespace + ":" + e2eRelease + "-scale-chaos-runner"
	allowed := func(attrs authorizationv1.ResourceAttributes) bool {
		t.Helper()
		sar, err := c.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: sa, ResourceAttributes: &attrs}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return sar.Status.Allowed
	}
	for _, tt := range []struct {
		attrs authorizationv1.ResourceAttributes
		want  bool
	}{
		{authorizationv1.ResourceAttributes{Namespace: e2eNamespace, Verb: "delete", Resource: "pods"}, true},
		{authorizationv1.ResourceAttributes{Namespace: e2eNamespace, Verb: "create", Resource: "pods", Subresource: "eviction"}, true},
		{authorizationv1.ResourceAttributes{Namespace: "kube-system", Verb: "delete", Resource: "pods"}, false},
		{authorizationv1.ResourceAttributes{Verb: "patch", Resource: "nodes"}, false},
		{authorizationv1.ResourceAttributes{Namespace: e2eNamespace, Verb: "delete", Resource: "deployments", Group: "apps"}, false},
		{authorizationv1.ResourceAttributes{Namespace: e2eNamespace, Verb: "get", Resource: "secrets"}, false},
	} {
		if got := allowed(tt.attrs); got != tt.want {
			t.Errorf("%s %+v: allowed %v, want %v", sa, tt.attrs, got, tt.want)
		}
	}
	// With the opt-in node role (an upgrade with chaosRunner.nodeAttacks) it may cordon and drain.
	objs, err = renderAs(e2eRelease, e2eNamespace, mergeValues(mergeValues(vals, overrides), map[string]any{"chaosRunner": map[string]any{"nodeAttacks": true}}))
	if err != nil {
		t.Fatal(err)
	}
	var roles []object
	for _, o := range objs {
		if strings.HasPrefix(o.Kind, "ClusterRole") {
			roles = append(roles, o)
		}
	}
	if len(roles) != 2 {
		t.Fatalf("nodeAttacks rendered %d cluster roles and bindings, want 2", len(roles))
	}
	apply(t, p, roles)
	for _, attrs := range []authorizationv1.ResourceAttributes{
		{Verb: "patch", Resource: "nodes"},
		{Namespace: "kube-system", Verb: "create", Resource: "pods", Subresource: "eviction"},
	} {
		// The authorizer reads bindings from an informer's cache, so one just
		// applied counts a moment later (CI once asked within that moment).
		testenv.Poll(t, fmt.Sprintf("the node role to allow %s %+v", sa, attrs), 10*time.Second, func() (bool, bool) {
			ok := allowed(attrs)
			return ok, ok
		})
	}
}

// runKubernetesExperiment runs `chaos-runner run` with environment
// kubernetes against the release, as the runner's service account: it ingests
// 1,000 more files, kills half the extract pods (force) 2 s in, and judges the
// run by its own accounting: every file exactly once, every similar list
// equal to a brute force (similarity runs for real from here on).
func runKubernetesExperiment(t *testing.T, p *kubeplane.Plane, c kubernetes.Interface, kl *kubelet, bins map[string]string,
	stats synth.Stats, corpus, natsURL, pgURL string) {
	t.Helper()
	sim := &kubelet{t: t, client: c, bins: bins, procs: map[types.UID]*launcher.Process{}, seen: map[types.UID]bool{}}
	sim.start(e2eNamespace, "app.kubernetes.io/component=similarity")
	more := filepath.Join(corpus, "c")
	writeCorpus(t, stats, more, 1000, 99)
	dir := t.TempDir()
	exp := filepath.Join(dir, "extract-pods.yaml")
	if err := os.WriteFile(exp, []byte(fmt.Sprintf(`name: extract-pods-killed
description: half the extract pods force-deleted while a backlog drains
seed: 5
environment: {type: kubernetes, namespace: %s, release: %s}
workload:
  corpus: {folder: %q}
method:
  - name: half the extract pods
    type: pod-kill
    target: {component: extract, mode: percent, value: 50}
    how: force
    at: 2s
`, e2eNamespace, e2eRelease, more)), 0o644); err != nil {
		t.Fatal(err)
	}
	token := serviceAccountToken(t, c, e2eRelease+"-scale-chaos-runner")
	kubeconfig := filepath.Join(dir, "runner.kubeconfig")
	if err := p.WriteKubeconfig(kubeconfig, token); err != nil {
		t.Fatal(err)
	}
	before := kl.killedCount()
	cmd := exec.Command(bins["chaos-runner"], "run", "--dir", filepath.Join(dir, "run"), "--kubeconfig", kubeconfig, exp)
	cmd.Env = append(os.Environ(), "SCALE_NATS_URL="+natsURL, "SCALE_POSTGRES_URL="+pgURL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("chaos-runner run (environment kubernetes): %v\n%s", err, tail(string(out), 6000))
	}
	data, err := os.ReadFile(filepath.Join(dir, "run", "journal.json"))
	if err != nil {
		t.Fatal(err)
	}
	var j struct {
		Verdict string `json:"verdict"`
		Faults  []struct {
			Step struct {
				Targets []string `json:"targets"`
			} `json:"step"`
		} `json:"faults"`
		Accounting struct {
			Files      int      `json:"files"`
			Lost       []string `json:"lost"`
			Duplicated []string `json:"duplicated"`
		} `json:"accounting"`
	}
	if err := json.Unmarshal(data, &j); err != nil {
		t.Fatal(err)
	}
	if j.Verdict != "passed" || len(j.Faults) != 1 || len(j.Faults[0].Step.Targets) == 0 || j.Accounting.Files != 1000 ||
		len(j.Accounting.Lost)+len(j.Accounting.Duplicated) != 0 {
		t.Fatalf("journal: %+v", j)
	}
	t.Logf("experiment extract-pods-killed: %s; pods killed %v; 1,000 files, 0 lost, 0 duplicated; extract processes killed %d",
		j.Verdict, j.Faults[0].Step.Targets, kl.killedCount()-before)
}

// mergeValues lays b over a (maps merged key by key).
func mergeValues(a, b map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if am, ok := out[k].(map[string]any); ok {
			if bm, ok := v.(map[string]any); ok {
				out[k] = mergeValues(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

func findObject(t *testing.T, objs []object, kind, namePrefix string) object {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && strings.HasPrefix(o.Name, namePrefix) {
			return o
		}
	}
	t.Fatalf("no %s %s* rendered", kind, namePrefix)
	return object{}
}

// apply applies the rendered objects: first all of them as a server-side
// dry run with strict field validation (an unknown field, an invalid value or
// a pod that restricted Pod Security rejects fails here), then for real; the
// helm test pod is only dry-run.
func apply(t *testing.T, p *kubeplane.Plane, objs []object) {
	t.Helper()
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(p.Config)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(p.Config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	for _, dryRun := range []bool{true, false} {
		for _, o := range objs {
			var u unstructured.Unstructured
			if err := yaml.Unmarshal(o.doc, &u.Object); err != nil {
				t.Fatal(err)
			}
			if u.GetAnnotations()["helm.sh/hook"] == "test" && !dryRun {
				continue
			}
			gvk := u.GroupVersionKind()
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				t.Fatalf("%s: %v", o, err)
			}
			res := dyn.Resource(m.Resource)
			var client dynamic.ResourceInterface = res
			if m.Scope.Name() == meta.RESTScopeNameNamespace {
				client = res.Namespace(e2eNamespace)
			}
			body, err := u.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			force := true
			opts := metav1.PatchOptions{FieldManager: "scale-e2e", FieldValidation: "Strict", Force: &force}
			if dryRun {
				opts.DryRun = []string{metav1.DryRunAll}
			}
			if _, err := client.Patch(ctx, u.GetName(), types.ApplyPatchType, body, opts); err != nil {
				t.Fatalf("applying %s (dry run %v): %v", o, dryRun, err)
			}
		}
	}
}

func replicas(t *testing.T, c kubernetes.Interface) int32 {
	t.Helper()
	d, err := c.AppsV1().Deployments(e2eNamespace).Get(context.Background(), extractName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

func waitReplicas(t *testing.T, c kubernetes.Interface, what string, timeout time.Duration, want int32) {
	t.Helper()
	testenv.Poll(t, what, timeout, func() (bool, int32) {
		r := replicas(t, c)
		return r == want, r
	})
}

func waitHPA(t *testing.T, c kubernetes.Interface, what string, timeout time.Duration, ok func(*autoscalingv2.HorizontalPodAutoscaler) bool) {
	t.Helper()
	testenv.Poll(t, what, timeout, func() (bool, string) {
		h, err := c.AutoscalingV2().HorizontalPodAutoscalers(e2eNamespace).Get(context.Background(), extractName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return ok(h), fmt.Sprintf("current %d desired %d metric %d conditions %v", h.Status.CurrentReplicas, h.Status.DesiredReplicas,
			externalValue(h), h.Status.Conditions)
	})
}

func condition(h *autoscalingv2.HorizontalPodAutoscaler, typ autoscalingv2.HorizontalPodAutoscalerConditionType) corev1.ConditionStatus {
	for _, c := range h.Status.Conditions {
		if c.Type == typ {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

func externalValue(h *autoscalingv2.HorizontalPodAutoscaler) int64 {
	for _, m := range h.Status.CurrentMetrics {
		if m.External != nil && m.External.Current.AverageValue != nil {
			return m.External.Current.AverageValue.Value() * int64(max(h.Status.CurrentReplicas, 1))
		}
	}
	return -1
}

// writeCorpus writes n synthetic files into dir with the repository's seeded
// generator, shaped like the shared corpus (stats); 2 % are damaged.
func writeCorpus(t *testing.T, stats synth.Stats, dir string, n int, seed uint64) {
	t.Helper()
	if err := synth.WriteCorpus(context.Background(), stats, dir, n, seed, 0.02, nil); err != nil {
		t.Fatal(err)
	}
}

// discover runs ingest (in this process) over one part of the corpus.
func discover(t *testing.T, conn *transport.Conn, st *store.Store, corpus, part string) {
	t.Helper()
	objects, err := objstore.New(context.Background(), objstore.S3Config{Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ingest.Run(context.Background(), ingest.Deps{JS: conn.JS, Store: st, Objects: objects,
		Log: slog.New(slog.DiscardHandler), Metrics: prometheus.NewRegistry()}, ingest.Options{Source: filepath.Join(corpus, part)}); err != nil {
		t.Fatal(err)
	}
}

// serviceAccountToken asks the TokenRequest API for a token of a service account.
func serviceAccountToken(t *testing.T, c kubernetes.Interface, sa string) string {
	t.Helper()
	tr, err := c.CoreV1().ServiceAccounts(e2eNamespace).CreateToken(context.Background(), sa, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// runToEnd runs a pod's container as a real process and waits for it to exit 0.
func runToEnd(t *testing.T, kl *kubelet, c corev1.Container, ns string) {
	t.Helper()
	proc := kl.startContainer(ns, "job", c)
	select {
	case <-proc.Done():
		if err := proc.Wait(); err != nil {
			t.Fatalf("%s %v: %v\n%s", c.Name, c.Args, err, proc.Log())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("%s %v did not finish\n%s", c.Name, c.Args, proc.Log())
	}
}

// kubelet stands in for the kubelet of kwok's nodes: for each Ready pod it
// selects, it runs the pod's container as a real process of ours (the image's
// binary, the pod's arguments and environment, secrets resolved); when the pod
// goes, the process gets SIGTERM and the pod's grace period, or SIGKILL at once
// when the pod was force-deleted.
type kubelet struct {
	t       *testing.T
	client  kubernetes.Interface
	bins    map[string]string
	mu      sync.Mutex
	procs   map[types.UID]*launcher.Process
	seen    map[types.UID]bool // every pod that was Ready
	cpus    float64            // each worker process's CPU cap (0: none)
	groups  int
	exits   []string // processes that exited on their own, with their log's end
	started int
	killed  int
	cancel  context.CancelFunc
	done    chan struct{}
}

func (k *kubelet) start(ns, selector string) {
	ctx, cancel := context.WithCancel(context.Background())
	k.cancel, k.done = cancel, make(chan struct{})
	go func() {
		defer close(k.done)
		for ctx.Err() == nil {
			k.sync(ctx, ns, selector)
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	k.t.Cleanup(k.stop)
}

// stop ends the loop and stops every process it runs.
func (k *kubelet) stop() {
	if k.cancel == nil {
		return
	}
	k.cancel()
	<-k.done
	k.mu.Lock()
	defer k.mu.Unlock()
	for uid, p := range k.procs {
		p.Stop(5 * time.Second) //nolint:errcheck // the test is ending
		delete(k.procs, uid)
	}
}

func (k *kubelet) sync(ctx context.Context, ns, selector string) {
	list, err := k.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return
	}
	live := map[types.UID]corev1.Pod{}
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && podReady(p) {
			live[p.UID] = p
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for uid, pod := range live {
		k.seen[uid] = true
		proc, ok := k.procs[uid]
		if ok {
			select {
			case <-proc.Done(): // exited: the kubelet restarts a container (restartPolicy Always)
				k.exits = append(k.exits, fmt.Sprintf("%s: %v\n%s", pod.Name, proc.Wait(), tail(proc.Log(), 1500)))
			default:
				continue
			}
		}
		if proc := k.startContainer(ns, pod.Name, pod.Spec.Containers[0]); proc != nil {
			k.procs[uid] = proc
			k.started++
		}
	}
	for uid, proc := range k.procs {
		if _, ok := live[uid]; ok {
			continue
		}
		delete(k.procs, uid)
		k.killed++
		// Gone from the API at once (a force delete) or terminating: either
		// way the worker dies without finishing, which is what chaos tests.
		proc.Signal(syscall.SIGKILL) //nolint:errcheck // it may have exited
	}
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func tail(s string, n int) string { return s[max(0, len(s)-n):] }

func (k *kubelet) seenCount() int { k.mu.Lock(); defer k.mu.Unlock(); return len(k.seen) }

func (k *kubelet) exited() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.exits...)
}

func (k *kubelet) running() int { k.mu.Lock(); defer k.mu.Unlock(); return len(k.procs) }

// logs are the logs of the processes running now.
func (k *kubelet) logs() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, p := range k.procs {
		out = append(out, p.Log())
	}
	return out
}

func consumerInfo(conn *transport.Conn) (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cons, err := conn.JS.Consumer(ctx, events.StreamDiscovered, events.ConsumerExtract)
	if err != nil {
		return nil, err
	}
	return cons.Info(ctx)
}

func (k *kubelet) startedCount() int { k.mu.Lock(); defer k.mu.Unlock(); return k.started }
func (k *kubelet) killedCount() int  { k.mu.Lock(); defer k.mu.Unlock(); return k.killed }

// startContainer starts a container's binary (from its image's name) with its
// environment; its ops endpoint moves to a free loopback port.
func (k *kubelet) startContainer(ns, pod string, c corev1.Container) *launcher.Process {
	k.t.Helper()
	binary, _ := scaleBinary(c.Image)
	env := []string{"SCALE_OPS_ADDR=127.0.0.1:0"}
	for _, e := range c.Env {
		if e.Name == "SCALE_OPS_ADDR" {
			continue
		}
		value := e.Value
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			s, err := k.client.CoreV1().Secrets(ns).Get(context.Background(), e.ValueFrom.SecretKeyRef.Name, metav1.GetOptions{})
			if err != nil {
				k.t.Errorf("pod %s: secret %s: %v", pod, e.ValueFrom.SecretKeyRef.Name, err)
				continue
			}
			value = string(s.Data[e.ValueFrom.SecretKeyRef.Key])
		}
		env = append(env, e.Name+"="+value)
	}
	proc, err := launcher.Start(launcher.Spec{Name: pod, Binary: k.bins[binary], Args: c.Args, Env: env,
		LogPath: filepath.Join(k.t.TempDir(), pod+".log")})
	if err != nil {
		k.t.Errorf("starting %s for pod %s: %v", binary, pod, err)
		return nil
	}
	if k.cpus > 0 {
		// A small pod: its CPU capped, as a container's limit would, so that
		// a worker's rate is a pod's and not the machine's.
		k.groups++
		g, err := cgroup.Limit(fmt.Sprintf("e2e-%d", k.groups), k.cpus)
		if err == nil {
			err = g.Add(proc.Pid())
			go func() { <-proc.Done(); g.Close() }() //nolint:errcheck // best effort when the process is gone
		}
		if err != nil {
			k.t.Errorf("capping pod %s: %v", pod, err)
		}
	}
	return proc
}
