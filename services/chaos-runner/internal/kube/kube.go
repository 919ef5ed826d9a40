// Package kube is the chaos runner's Kubernetes driver (client-go): it picks
// pods the way Chaos Mesh's modes do, from a seed and without replacement, and
// kills them by deletion with a grace period, by force, or by eviction (which
// respects PodDisruptionBudgets). It attacks only pods that opted in with the
// label scale.dev/chaos-target=true, and never the runner's own pod. With the
// opt-in node role it also cordons and drains nodes.
package kube

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// OptIn is the label a pod must carry, set to "true", to be attacked.
const OptIn = "scale.dev/chaos-target"

// Modes of picking pods.
const (
	One              = "one"                // one pod
	All              = "all"                // every pod
	Fixed            = "fixed"              // value pods (at most all)
	FixedPercent     = "fixed-percent"      // value % of the pods, rounded up, at least 1
	RandomMaxPercent = "random-max-percent" // a random count from 1 to value % (rounded up)
)

// Ways to kill a pod.
const (
	Delete = "delete" // delete with a grace period (the pod's own when none is given)
	Force  = "force"  // delete with grace 0: the object goes at once
	Evict  = "evict"  // the Eviction API: refused while a PodDisruptionBudget allows no disruption
)

// Target selects the pods an attack may hit.
type Target struct {
	Namespace string
	Selector  string // a label selector, ANDed with the opt-in label
	Mode      string
	Value     float64
}

// Driver attacks pods through the Kubernetes API.
type Driver struct {
	Client kubernetes.Interface
	// Self is the runner's own pod (namespace/name), never attacked; empty
	// outside a cluster.
	Self string
}

// Config is the client configuration: the kubeconfig file when given, the
// pod's own service account inside a cluster.
func Config(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		}
		kubeconfig = clientcmd.RecommendedHomeFile
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}

// SelfFromEnv is the runner's own pod from POD_NAMESPACE and POD_NAME (the
// chart sets them from the downward API), or "".
func SelfFromEnv() string {
	ns, name := os.Getenv("POD_NAMESPACE"), os.Getenv("POD_NAME")
	if ns == "" || name == "" {
		return ""
	}
	return ns + "/" + name
}

// Candidates are the target's pods that may be attacked now: opted in,
// running, not being deleted, not the runner itself; sorted by name so that a
// seed always picks the same ones from the same set.
func (d Driver) Candidates(ctx context.Context, t Target) ([]corev1.Pod, error) {
	sel, err := labels.Parse(t.Selector)
	if err != nil {
		return nil, fmt.Errorf("selector %q: %w", t.Selector, err)
	}
	optIn, err := labels.NewRequirement(OptIn, "=", []string{"true"})
	if err != nil {
		return nil, err
	}
	sel = sel.Add(*optIn)
	list, err := d.Client.CoreV1().Pods(t.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String(), FieldSelector: "status.phase=Running"})
	if err != nil {
		return nil, fmt.Errorf("listing pods in %s: %w", t.Namespace, err)
	}
	var pods []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil || p.Namespace+"/"+p.Name == d.Self {
			continue
		}
		pods = append(pods, p)
	}
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods, nil
}

// Count is how many of n pods a mode picks.
func Count(mode string, value float64, n int, r *rand.Rand) (int, error) {
	if n == 0 {
		return 0, nil
	}
	percent := func() int { return max(1, int(math.Ceil(float64(n)*value/100))) }
	switch mode {
	case One, "":
		return 1, nil
	case All:
		return n, nil
	case Fixed:
		if value < 1 {
			return 0, fmt.Errorf("mode fixed needs a value of at least 1 (got %g)", value)
		}
		return min(n, int(value)), nil
	case FixedPercent, RandomMaxPercent:
		if value <= 0 || value > 100 {
			return 0, fmt.Errorf("mode %s needs a value in (0, 100] (got %g)", mode, value)
		}
		if mode == FixedPercent {
			return min(n, percent()), nil
		}
		return 1 + r.IntN(min(n, percent())), nil
	}
	return 0, fmt.Errorf("unknown mode %q (one, all, fixed, fixed-percent, random-max-percent)", mode)
}

// Pick draws count pods without replacement.
func Pick(pods []corev1.Pod, count int, r *rand.Rand) []corev1.Pod {
	picked := slices.Clone(pods)
	r.Shuffle(len(picked), func(i, j int) { picked[i], picked[j] = picked[j], picked[i] })
	return picked[:min(count, len(picked))]
}

// Outcome is what became of one pod.
type Outcome struct {
	Pod     string `json:"pod"`
	Killed  bool   `json:"killed"`
	Refused string `json:"refused,omitempty"` // an eviction a PodDisruptionBudget refused
}

// Kill kills pods in one of the ways; grace (seconds, negative: the pod's own)
// applies to Delete.
func (d Driver) Kill(ctx context.Context, pods []corev1.Pod, how string, grace int64) ([]Outcome, error) {
	var out []Outcome
	var errs []error
	for _, p := range pods {
		o := Outcome{Pod: p.Namespace + "/" + p.Name}
		var err error
		switch how {
		case Delete, "":
			opts := metav1.DeleteOptions{}
			if grace >= 0 {
				opts.GracePeriodSeconds = &grace
			}
			err = d.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, opts)
		case Force:
			zero := int64(0)
			err = d.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		case Evict:
			err = d.evict(ctx, p)
			if apierrors.IsTooManyRequests(err) {
				o.Refused, err = err.Error(), nil
			}
		default:
			return nil, fmt.Errorf("unknown way to kill %q (delete, force, evict)", how)
		}
		switch {
		case apierrors.IsNotFound(err):
			// gone already: nothing to kill
		case err != nil:
			errs = append(errs, fmt.Errorf("killing %s: %w", o.Pod, err))
		default:
			o.Killed = o.Refused == ""
		}
		out = append(out, o)
	}
	return out, errors.Join(errs...)
}

// Attack picks the target's pods with the seed and kills them.
func (d Driver) Attack(ctx context.Context, t Target, how string, grace int64, seed uint64) ([]Outcome, error) {
	pods, err := d.Candidates(ctx, t)
	if err != nil {
		return nil, err
	}
	r := rand.New(rand.NewPCG(seed, seed^0x5CA1E))
	n, err := Count(t.Mode, t.Value, len(pods), r)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("no running pod in %s matches %q with %s=true", t.Namespace, t.Selector, OptIn)
	}
	return d.Kill(ctx, Pick(pods, n, r), how, grace)
}

// Cordon marks a node unschedulable (on) or schedulable again (off).
func (d Driver) Cordon(ctx context.Context, node string, on bool) error {
	patch := fmt.Appendf(nil, `{"spec":{"unschedulable":%t}}`, on)
	if _, err := d.Client.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("cordoning %s: %w", node, err)
	}
	return nil
}

// Drain cordons a node and evicts the pods a drain moves (not mirror pods,
// not DaemonSet pods, not pods already going), as `kubectl drain` does: an
// eviction a PodDisruptionBudget refuses is tried again every second until
// ctx ends, and is then reported as refused.
func (d Driver) Drain(ctx context.Context, node string) ([]Outcome, error) {
	if err := d.Cordon(ctx, node, true); err != nil {
		return nil, err
	}
	list, err := d.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, fmt.Errorf("listing the pods on %s: %w", node, err)
	}
	var out []Outcome
	var errs []error
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil || p.Annotations[corev1.MirrorPodAnnotationKey] != "" || ownedByDaemonSet(p) ||
			p.Namespace+"/"+p.Name == d.Self {
			continue
		}
		o := Outcome{Pod: p.Namespace + "/" + p.Name}
		for {
			err := d.evict(ctx, p)
			if apierrors.IsTooManyRequests(err) {
				select {
				case <-ctx.Done():
					o.Refused = err.Error()
				case <-time.After(time.Second):
					continue
				}
			} else if err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("evicting %s: %w", o.Pod, err))
			} else {
				o.Killed = err == nil
			}
			break
		}
		out = append(out, o)
	}
	return out, errors.Join(errs...)
}

// evict asks the Eviction API to remove a pod: 429 while a
// PodDisruptionBudget allows no disruption.
func (d Driver) evict(ctx context.Context, p corev1.Pod) error {
	return d.Client.PolicyV1().Evictions(p.Namespace).Evict(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace}})
}

func ownedByDaemonSet(p corev1.Pod) bool {
	for _, ref := range p.OwnerReferences {
		if ref.Kind == "DaemonSet" {
			return true
		}
	}
	return false
}
