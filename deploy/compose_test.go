package deploy_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// loadCompose loads docker-compose.yml as `docker compose` does: the
// compose-spec schema, interpolation with the defaults (no environment), and
// the consistency checks (undefined services, networks, volumes).
func loadCompose(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"../docker-compose.yml"}, cli.WithName("scale"),
		cli.WithWorkingDirectory(".."), cli.WithEnv(nil), cli.WithConsistency(true), cli.WithProfiles(profiles))
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return project
}

// TestComposeFile holds docker-compose.yml (with its observability profile) to
// what its users need: every
// dependency it waits to be healthy has a health check, images are pinned,
// scaled services can scale, Scale's own services run as in the chart (read-only,
// non-root, no capabilities) and check themselves with their binary's probe.
func TestComposeFile(t *testing.T) {
	project := loadCompose(t, "observability")
	for _, want := range []string{"nats", "postgres", "s3", "migrate", "ingest", "extract", "similarity", "api",
		"prometheus", "grafana", "otel-collector"} {
		if _, ok := project.Services[want]; !ok {
			t.Errorf("no %s service", want)
		}
	}
	for name, svc := range project.Services {
		if i := strings.LastIndex(svc.Image, ":"); i < 0 || strings.HasSuffix(svc.Image, ":latest") {
			t.Errorf("%s: image %q is not pinned to a tag", name, svc.Image)
		}
		for dep, cond := range svc.DependsOn {
			target := project.Services[dep]
			if cond.Condition == types.ServiceConditionHealthy && (target.HealthCheck == nil || target.HealthCheck.Disable || len(target.HealthCheck.Test) == 0) {
				t.Errorf("%s waits for %s to be healthy, which has no health check", name, dep)
			}
		}
		if svc.GetScale() > 1 && (svc.ContainerName != "" || slices.ContainsFunc(svc.Ports, func(p types.ServicePortConfig) bool { return p.Published != "" })) {
			t.Errorf("%s runs %d replicas with a container name or a fixed host port", name, svc.GetScale())
		}
		binary, ours := scaleBinary(svc.Image)
		if !ours {
			continue
		}
		if !svc.ReadOnly || svc.User != "65532:65532" || !slices.Equal(svc.CapDrop, []string{"ALL"}) {
			t.Errorf("%s: read_only %v, user %q, cap_drop %v; want the chart's restricted container", name, svc.ReadOnly, svc.User, svc.CapDrop)
		}
		if name == "migrate" || name == "ingest" {
			continue // they run to the end; nothing waits for them to be healthy
		}
		want := []string{"CMD", "/usr/local/bin/" + binary, "probe"}
		if svc.HealthCheck == nil || !slices.Equal(svc.HealthCheck.Test, want) {
			t.Errorf("%s: health check %v, want %v", name, svc.HealthCheck, want)
		}
	}
}

// scaleBinary is the binary of one of Scale's images (REPOSITORY/scale-NAME:TAG,
// as `make images` names them), and whether the image is one of ours.
func scaleBinary(image string) (string, bool) {
	base := image[strings.LastIndex(image, "/")+1:]
	if i := strings.LastIndex(base, ":"); i >= 0 {
		base = base[:i]
	}
	name, ok := strings.CutPrefix(base, "scale-")
	return name, ok
}

// TestComposeAndChartUseTheSameSettings: each of Scale's services in
// docker-compose.yml sets exactly the SCALE_* settings the chart sets for the
// same component (rendered with everything on), and its binary knows them all.
func TestComposeAndChartUseTheSameSettings(t *testing.T) {
	project := loadCompose(t)
	known := binaryEnvNames(t)
	objs, err := render(readValues(t, chartDir+"/ci/full-values.yaml"), crdAPIs...)
	if err != nil {
		t.Fatal(err)
	}
	chart := map[string][]string{} // component -> SCALE_* names
	for _, o := range objs {
		obj, err := decode(o)
		if err != nil {
			t.Fatal(err)
		}
		var pod *corev1.PodTemplateSpec
		switch obj := obj.(type) {
		case *appsv1.Deployment:
			pod = &obj.Spec.Template
		case *batchv1.Job:
			pod = &obj.Spec.Template
		case *batchv1.CronJob:
			pod = &obj.Spec.JobTemplate.Spec.Template
		default:
			continue
		}
		component := pod.Labels["app.kubernetes.io/component"]
		for _, e := range pod.Spec.Containers[0].Env {
			if strings.HasPrefix(e.Name, "SCALE_") {
				chart[component] = append(chart[component], e.Name)
			}
		}
	}
	compared := 0
	for name, svc := range project.Services {
		binary, ours := scaleBinary(svc.Image)
		if !ours {
			continue
		}
		var inCompose []string
		for k := range maps.Keys(svc.Environment) {
			if strings.HasPrefix(k, "SCALE_") {
				inCompose = append(inCompose, k)
				if !slices.Contains(known[binary], k) {
					t.Errorf("compose %s: %s is no setting of %s", name, k, binary)
				}
			}
		}
		slices.Sort(inCompose)
		inChart := slices.Sorted(slices.Values(chart[name]))
		if !slices.Equal(inCompose, inChart) {
			t.Errorf("compose %s sets %v\n  the chart's %s sets %v", name, inCompose, name, inChart)
		}
		compared++
	}
	if compared != 5 {
		t.Errorf("compared %d services, want migrate, ingest, extract, similarity and api", compared)
	}
}
