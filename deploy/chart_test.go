// Package deploy_test renders the Scale chart with Helm's own code (as `helm
// template` does) and holds every object to the chart's promises: strict
// decoding into the typed Kubernetes structs, restricted Pod Security, probes,
// requests, immutable selectors, credentials only from Secrets, setting names
// the binaries know, one autoscaler per Deployment.
package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/scale-dev/scale/pkg/events"
)

const chartDir = "helm/scale"

// kubeVersion is the Kubernetes the chart is rendered for (the control-plane
// tests' version; Helm's own default is v1.20).
var kubeVersion = &chartutil.KubeVersion{Version: "v1.37.2", Major: "1", Minor: "37"}

// The API versions of the optional CRDs; a render "with CRDs" has them all.
var crdAPIs = []string{"keda.sh/v1alpha1", "keda.sh/v1alpha1/ScaledObject", "postgresql.cnpg.io/v1",
	"postgresql.cnpg.io/v1/Cluster", "monitoring.coreos.com/v1", "monitoring.coreos.com/v1/PodMonitor"}

// ciValues are the values files CI renders, each with the CRDs its features need.
func ciValues(t *testing.T) []string {
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) < 4 {
		t.Fatalf("ci values files: %v %v", files, err)
	}
	return files
}

func readValues(t *testing.T, file string) map[string]any {
	t.Helper()
	v, err := chartutil.ReadValuesFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// render renders the chart as `helm template` does (hooks and tests included)
// as release prod in namespace scale.
func render(vals map[string]any, apis ...string) ([]object, error) {
	return renderAs("prod", "scale", vals, apis...)
}

func renderAs(release, namespace string, vals map[string]any, apis ...string) ([]object, error) {
	chrt, err := loader.Load(chartDir)
	if err != nil {
		return nil, err
	}
	install := action.NewInstall(&action.Configuration{})
	install.DryRun, install.ClientOnly, install.Replace = true, true, true
	install.ReleaseName, install.Namespace = release, namespace
	install.APIVersions = apis
	install.KubeVersion = kubeVersion
	rel, err := install.Run(chrt, vals)
	if err != nil {
		return nil, err
	}
	var manifests bytes.Buffer
	manifests.WriteString(rel.Manifest)
	for _, h := range rel.Hooks {
		fmt.Fprintf(&manifests, "\n---\n# Source: %s\n%s\n", h.Path, h.Manifest)
	}
	var objs []object
	for _, doc := range releaseutil.SplitManifests(manifests.String()) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			return nil, fmt.Errorf("%w in\n%s", err, doc)
		}
		if head.Kind == "" {
			continue // a document with only comments
		}
		objs = append(objs, object{APIVersion: head.APIVersion, Kind: head.Kind, Name: head.Metadata.Name, doc: []byte(doc)})
	}
	return objs, nil
}

type object struct {
	APIVersion, Kind, Name string
	doc                    []byte
}

func (o object) String() string { return o.Kind + "/" + o.Name }

// typed is the Go type of each built-in kind the chart renders.
var typed = map[string]func() any{
	"apps/v1/Deployment":                              func() any { return &appsv1.Deployment{} },
	"batch/v1/Job":                                    func() any { return &batchv1.Job{} },
	"batch/v1/CronJob":                                func() any { return &batchv1.CronJob{} },
	"v1/Service":                                      func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                               func() any { return &corev1.ServiceAccount{} },
	"v1/ConfigMap":                                    func() any { return &corev1.ConfigMap{} },
	"v1/Pod":                                          func() any { return &corev1.Pod{} },
	"policy/v1/PodDisruptionBudget":                   func() any { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2/HorizontalPodAutoscaler":          func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"rbac.authorization.k8s.io/v1/Role":               func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding":        func() any { return &rbacv1.RoleBinding{} },
	"rbac.authorization.k8s.io/v1/ClusterRole":        func() any { return &rbacv1.ClusterRole{} },
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding": func() any { return &rbacv1.ClusterRoleBinding{} },
	"networking.k8s.io/v1/NetworkPolicy":              func() any { return &networkingv1.NetworkPolicy{} },
}

// decode decodes an object strictly (an unknown or repeated field fails) into
// its typed struct, or a map for a CRD's kind.
func decode(o object) (any, error) {
	newObj, ok := typed[o.APIVersion+"/"+o.Kind]
	if !ok {
		if !slices.Contains(crdAPIs, o.APIVersion+"/"+o.Kind) {
			return nil, fmt.Errorf("%s: a kind the test does not know (%s)", o, o.APIVersion)
		}
		var m map[string]any
		return m, yaml.UnmarshalStrict(o.doc, &m)
	}
	obj := newObj()
	if err := yaml.UnmarshalStrict(o.doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", o, err)
	}
	return obj, nil
}

// TestLintStrict is `helm lint --strict` with each CI values file: a warning fails.
func TestLintStrict(t *testing.T) {
	for _, file := range ciValues(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			linter := lint.AllWithKubeVersion(chartDir, readValues(t, file), "scale", kubeVersion)
			for _, m := range linter.Messages {
				if m.Severity >= support.WarningSev {
					t.Error(m)
				}
			}
		})
	}
}

// TestSchemaIsValidJSON: older Helm ignored a schema that was not JSON.
func TestSchemaIsValidJSON(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil || !json.Valid(b) {
		t.Fatalf("values.schema.json is not valid JSON (%v)", err)
	}
}

// TestSchemaRejectsMistakes: a typo or a wrong value fails the render with a
// message naming it, instead of being silently ignored.
func TestSchemaRejectsMistakes(t *testing.T) {
	tests := []struct {
		name   string
		values string
		want   string
	}{
		{"typo in a block", "extract: {autoscalling: {mode: keda}}", "autoscalling"},
		{"typo at the top", "extrct: {replicas: 3}", "extrct"},
		{"typo in a setting", "extract: {settings: {fetchBatchSize: 4}}", "fetchBatchSize"},
		{"unknown autoscaling mode", "extract: {autoscaling: {mode: vpa}}", "mode"},
		{"duration without a unit", "extract: {settings: {ackWait: \"30\"}}", "ackWait"},
		{"credentials in the NATS URL", "externalNats: {url: \"nats://u:p@nats:4222\"}", "url"},
		{"connection settings in extraEnv", "api: {extraEnv: [{name: SCALE_POSTGRES_URL, value: x}]}", "extraEnv"},
		{"zero max replicas", "extract: {autoscaling: {maxReplicas: 0}}", "maxReplicas"},
		{"not an S3 source", "externalS3: {source: /data/midi}", "source"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var vals map[string]any
			if err := yaml.Unmarshal([]byte(tt.values), &vals); err != nil {
				t.Fatal(err)
			}
			_, err := render(vals)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("render = %v, want a schema error naming %q", err, tt.want)
			}
		})
	}
	if _, err := render(nil); err != nil {
		t.Fatalf("the defaults fail: %v", err)
	}
}

// TestRenderedObjects renders each CI values file and checks every object.
func TestRenderedObjects(t *testing.T) {
	known := binaryEnvNames(t)
	for _, file := range ciValues(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			vals := readValues(t, file)
			objs, err := render(vals, crdAPIs...)
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) < 8 {
				t.Fatalf("only %d objects rendered", len(objs))
			}
			for _, o := range objs {
				obj, err := decode(o)
				if err != nil {
					t.Error(err)
					continue
				}
				switch obj := obj.(type) {
				case *appsv1.Deployment:
					checkSelector(t, o, obj.Spec.Selector.MatchLabels, obj.Spec.Template.Labels)
					checkPod(t, o, obj.Spec.Template.Spec, known, true)
				case *batchv1.Job:
					checkPod(t, o, obj.Spec.Template.Spec, known, false)
				case *batchv1.CronJob:
					checkPod(t, o, obj.Spec.JobTemplate.Spec.Template.Spec, known, false)
				case *corev1.Pod:
					checkPod(t, o, obj.Spec, known, false)
				case *policyv1.PodDisruptionBudget:
					checkSelector(t, o, obj.Spec.Selector.MatchLabels, obj.Spec.Selector.MatchLabels)
				case *corev1.ConfigMap:
					if strings.HasSuffix(obj.Name, "-experiments") {
						checkScheduledExperiments(t, obj)
					}
				}
			}
		})
	}
}

// checkScheduledExperiments: each scheduled experiment runs against this
// release (the chart fills in its environment).
func checkScheduledExperiments(t *testing.T, cm *corev1.ConfigMap) {
	t.Helper()
	if len(cm.Data) == 0 {
		t.Errorf("%s holds no experiment", cm.Name)
	}
	for file, doc := range cm.Data {
		var exp struct {
			Environment map[string]string `json:"environment"`
		}
		if err := yaml.Unmarshal([]byte(doc), &exp); err != nil {
			t.Fatalf("%s %s: %v", cm.Name, file, err)
		}
		want := map[string]string{"type": "kubernetes", "namespace": "scale", "release": "prod"}
		if !maps.Equal(exp.Environment, want) {
			t.Errorf("%s %s: environment %v, want %v", cm.Name, file, exp.Environment, want)
		}
	}
}

var selectorKeys = []string{"app.kubernetes.io/component", "app.kubernetes.io/instance", "app.kubernetes.io/name"}

// checkSelector: a selector is immutable, so it holds only the labels that
// never change (no version), and the pods carry it.
func checkSelector(t *testing.T, o object, selector, podLabels map[string]string) {
	t.Helper()
	var keys []string
	for k, v := range selector {
		keys = append(keys, k)
		if podLabels[k] != v {
			t.Errorf("%s: pod label %s=%q, selector wants %q", o, k, podLabels[k], v)
		}
	}
	slices.Sort(keys)
	if !slices.Equal(keys, selectorKeys) {
		t.Errorf("%s: selector keys %v, want %v", o, keys, selectorKeys)
	}
}

// checkPod holds a pod to restricted Pod Security, requests, probes that
// never check a dependency for liveness, credentials from Secrets and
// setting names its binary knows.
func checkPod(t *testing.T, o object, pod corev1.PodSpec, known map[string][]string, longRunning bool) {
	t.Helper()
	sc := pod.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod securityContext %+v is not restricted (runAsNonRoot, seccomp RuntimeDefault)", o, sc)
	}
	for _, c := range pod.Containers {
		where := fmt.Sprintf("%s container %s", o, c.Name)
		csc := c.SecurityContext
		if csc == nil || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
			csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem ||
			csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("%s: securityContext %+v is not restricted", where, csc)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
			t.Errorf("%s: no cpu or memory request (a CPU HPA fails without one)", where)
		}
		if c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: no memory limit", where)
		}
		binary, _ := scaleBinary(c.Image)
		if longRunning && binary != "chaos-runner" {
			if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("%s: liveness must be /healthz (never a dependency check)", where)
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("%s: readiness must be /readyz (the dependencies)", where)
			}
		}
		names, ok := known[binary]
		if !ok {
			t.Errorf("%s: image %s is no binary of ours", where, c.Image)
			continue
		}
		for _, e := range c.Env {
			checkEnv(t, where, e, names)
		}
	}
}

// secretOnly are the settings whose values are credentials.
var secretOnly = regexp.MustCompile(`^SCALE_(POSTGRES_URL|STORAGE_ACCESS_KEY|STORAGE_SECRET_KEY)$`)

func checkEnv(t *testing.T, where string, e corev1.EnvVar, names []string) {
	t.Helper()
	if strings.HasPrefix(e.Name, "SCALE_") && !slices.Contains(names, e.Name) {
		t.Errorf("%s: %s is no setting of this binary (its --help lists %v)", where, e.Name, names)
	}
	if secretOnly.MatchString(e.Name) && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
		t.Errorf("%s: %s must come from a Secret", where, e.Name)
	}
	if strings.Contains(e.Value, "@") && strings.Contains(e.Value, "://") {
		t.Errorf("%s: %s=%q holds credentials", where, e.Name, e.Value)
	}
}

// binaryEnvNames reads the SCALE_* names each binary's --help lists.
func binaryEnvNames(t *testing.T) map[string][]string {
	names := map[string][]string{}
	for name, bin := range binaries(t) {
		out, _ := exec.Command(bin, "--help").CombinedOutput() // exits 0 or 2 with the usage
		names[name] = []string{}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) > 0 && strings.HasPrefix(f[0], "SCALE_") {
				names[name] = append(names[name], f[0])
			}
		}
	}
	if len(names["extract"]) < 10 {
		t.Fatalf("extract --help lists only %v", names["extract"])
	}
	return names
}

// TestExtractAutoscaling: one autoscaler (or none) per mode, never an HPA and
// a ScaledObject together, no replica count that an upgrade would reset, the
// lag metric on the stream and consumer the workers use, and a MaxAckPending
// that covers every replica's fetches.
func TestExtractAutoscaling(t *testing.T) {
	tests := []struct {
		mode          string
		apis          []string
		wantReplicas  bool
		wantHPA       []autoscalingv2.MetricSourceType
		wantScaled    bool
		maxAckPending string // maxReplicas (or replicas) × concurrency × fetch batch
	}{
		{mode: "none", wantReplicas: true, maxAckPending: "24"},                                       // 2 × 3 × 4
		{mode: "hpa-cpu", wantHPA: []autoscalingv2.MetricSourceType{"Resource"}, maxAckPending: "84"}, // 7 × 3 × 4
		{mode: "hpa-external", wantHPA: []autoscalingv2.MetricSourceType{"External", "Resource"}, maxAckPending: "84"},
		{mode: "keda", apis: crdAPIs, wantScaled: true, maxAckPending: "84"},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			vals := map[string]any{"extract": map[string]any{
				"replicas":    2,
				"settings":    map[string]any{"concurrency": 3, "fetchBatch": 4},
				"autoscaling": map[string]any{"mode": tt.mode, "maxReplicas": 7, "lagThreshold": 60},
			}}
			objs, err := render(vals, tt.apis...)
			if err != nil {
				t.Fatal(err)
			}
			var deploy *appsv1.Deployment
			var hpas []*autoscalingv2.HorizontalPodAutoscaler
			var scaled []map[string]any
			for _, o := range objs {
				obj, err := decode(o)
				if err != nil {
					t.Fatal(err)
				}
				switch obj := obj.(type) {
				case *appsv1.Deployment:
					if obj.Name == "prod-scale-extract" {
						deploy = obj
					}
				case *autoscalingv2.HorizontalPodAutoscaler:
					hpas = append(hpas, obj)
				case map[string]any:
					if o.Kind == "ScaledObject" {
						scaled = append(scaled, obj)
					}
				}
			}
			if deploy == nil {
				t.Fatal("no extract Deployment")
			}
			if (deploy.Spec.Replicas != nil) != tt.wantReplicas {
				t.Errorf("spec.replicas set = %v, want %v", deploy.Spec.Replicas != nil, tt.wantReplicas)
			}
			if got := envValue(deploy.Spec.Template.Spec.Containers[0], "SCALE_EXTRACT_MAX_ACK_PENDING"); got != tt.maxAckPending {
				t.Errorf("SCALE_EXTRACT_MAX_ACK_PENDING = %q, want %s", got, tt.maxAckPending)
			}
			if (len(scaled) == 1) != tt.wantScaled || len(scaled) > 1 {
				t.Errorf("%d ScaledObjects", len(scaled))
			}
			if tt.wantHPA == nil && len(hpas) > 0 || tt.wantHPA != nil && len(hpas) != 1 {
				t.Fatalf("%d HPAs", len(hpas))
			}
			for _, hpa := range hpas {
				checkHPA(t, hpa, deploy, tt.wantHPA)
			}
			for _, so := range scaled {
				checkScaledObject(t, so, deploy)
			}
		})
	}
	if _, err := render(map[string]any{"extract": map[string]any{"autoscaling": map[string]any{"mode": "keda"}}}); err == nil ||
		!strings.Contains(err.Error(), "needs KEDA") {
		t.Errorf("keda without its CRD: %v, want a clear failure", err)
	}
}

func checkHPA(t *testing.T, hpa *autoscalingv2.HorizontalPodAutoscaler, deploy *appsv1.Deployment, want []autoscalingv2.MetricSourceType) {
	t.Helper()
	if hpa.Spec.ScaleTargetRef.Name != deploy.Name || hpa.Spec.ScaleTargetRef.Kind != "Deployment" {
		t.Errorf("HPA targets %+v", hpa.Spec.ScaleTargetRef)
	}
	if *hpa.Spec.MinReplicas != 1 || hpa.Spec.MaxReplicas != 7 {
		t.Errorf("HPA replicas %d-%d, want 1-7", *hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
	}
	var got []autoscalingv2.MetricSourceType
	for _, m := range hpa.Spec.Metrics {
		got = append(got, m.Type)
		if m.Type != autoscalingv2.ExternalMetricSourceType {
			continue
		}
		// The name and selector KEDA publishes for the same trigger.
		if m.External.Metric.Name != "s0-nats-jetstream-"+events.StreamDiscovered ||
			m.External.Metric.Selector.MatchLabels["scaledobject.keda.sh/name"] != deploy.Name {
			t.Errorf("external metric %+v", m.External.Metric)
		}
		if m.External.Target.Type != autoscalingv2.AverageValueMetricType || m.External.Target.AverageValue.Value() != 60 {
			t.Errorf("external target %+v, want an AverageValue of 60 per replica", m.External.Target)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("HPA metrics %v, want %v", got, want)
	}
}

func checkScaledObject(t *testing.T, so map[string]any, deploy *appsv1.Deployment) {
	t.Helper()
	spec := so["spec"].(map[string]any)
	if spec["scaleTargetRef"].(map[string]any)["name"] != deploy.Name {
		t.Errorf("ScaledObject targets %v", spec["scaleTargetRef"])
	}
	triggers := spec["triggers"].([]any)
	lag := triggers[0].(map[string]any)
	meta := lag["metadata"].(map[string]any)
	if lag["type"] != "nats-jetstream" || meta["stream"] != events.StreamDiscovered || meta["consumer"] != events.ConsumerExtract ||
		meta["lagThreshold"] != "60" {
		t.Errorf("lag trigger %v", lag)
	}
	if len(triggers) != 2 || triggers[1].(map[string]any)["type"] != "cpu" {
		t.Errorf("triggers %v, want the lag and a CPU trigger", triggers)
	}
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}
