package experiment

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const good = `name: extract-kills
seed: 7
environment:
  type: local
  extractWorkers: 4
  natsNodes: 3
workload:
  corpus:
    synthetic: {files: 2000, seed: 1}
slos:
  - metric: throughput
    threshold: ">= 50"
    phases: [baseline, after]
method:
  - type: process-kill
    target: {component: extract, mode: one}
    at: 2s
    repeat: {count: 5, every: 1s}
  - type: nats-node-kill
    target: {component: nats}
    at: 3s
    duration: 2s
allow: [extract, nats]
`

func TestParseGoodFile(t *testing.T) {
	e, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if e.Name != "extract-kills" || e.Environment.ExtractWorkers != 4 || len(e.Method) != 2 || e.Method[0].Target.Mode != "one" {
		t.Errorf("parsed %+v", e)
	}
	if *e.Workload.Corpus.Synthetic.Corrupt != 0.01 || e.RecoveryBand != 0.5 {
		t.Errorf("defaults not filled in: %+v", e)
	}
}

// TestBadFilesGetClearErrors: every bad file is refused with an error that
// names the line and says what is wrong.
func TestBadFilesGetClearErrors(t *testing.T) {
	for _, tc := range []struct {
		name, from, to string
		want           []string // substrings of the error, the line among them
	}{
		{"unknown fault", "type: process-kill", "type: process-explode", []string{"line 15", "/method/0/type"}},
		{"missing target", "    target: {component: extract, mode: one}\n", "", []string{"line 15", "/method/0", "target"}},
		{"negative duration", "duration: 2s", "duration: -2s", []string{"line 22", "/method/1/duration", "does not match pattern"}},
		{"unknown key", "  natsNodes: 3", "  natsNodes: 3\n  colour: red", []string{"line 7", "/environment", "colour"}},
		{"unknown top-level key", "seed: 7", "seed: 7\nsede: 8", []string{"line 3", "sede"}},
		{"target outside the allow list", "allow: [extract, nats]", "allow: [nats]", []string{"line 16", "/method/0/target/component", "allow list"}},
		{"pause without a duration", "type: process-kill", "type: process-pause", []string{"line 15", "/method/0", "needs a duration"}},
		{"fault on the wrong component", "target: {component: nats}", "target: {component: extract}", []string{"/method/1/target/component", "targets nats"}},
		{"bad threshold", `">= 50"`, `"about 50"`, []string{"line 12", "/slos/0/threshold"}},
		{"fixed beyond the instances", "mode: one}", "mode: fixed, value: 9}", []string{"/method/0/target/value", "has 4"}},
		{"api SLO without API load", "metric: throughput", "metric: api_p99", []string{"/slos/0/metric", "needs API load"}},
		{"not YAML", "seed: 7", "seed: [7", []string{"/"}},
		{"partition without hosts", "type: process-kill", "type: network-partition\n    duration: 2s", []string{"/method/0", "environment.network: hosts"}},
		{"queue redelivery without an ack wait", "type: process-kill", "type: queue-redelivery\n    duration: 2s", []string{"/method/0", "needs an ackWait"}},
		{"queue saturation on nats", "type: nats-node-kill", "type: queue-saturation\n    maxAckPending: 1", []string{"/method/1/target/component", "extract or similarity"}},
		{"primary of a non-postgres component", "target: {component: extract, mode: one}", "target: {component: extract, mode: primary}", []string{"/method/0/target/mode", "only a postgres target has a primary"}},
		{"too many API processes", "  natsNodes: 3", "  natsNodes: 3\n  apiReplicas: 9", []string{"line 7", "/environment/apiReplicas"}},
		{"stream on a consumer fault", "type: process-kill", "type: queue-saturation\n    maxAckPending: 1\n    stream: outcomes\n    duration: 1s", []string{"/method/0/stream"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(good, tc.from) {
				t.Fatalf("the base file has no %q", tc.from)
			}
			_, err := Parse([]byte(strings.Replace(good, tc.from, tc.to, 1)))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestFaultsOnSomebodyElsesBucket: with an S3 prefix as the workload, the
// runner cannot take the server down, nor put a fault on an HTTPS edge.
func TestFaultsOnSomebodyElsesBucket(t *testing.T) {
	const doc = `name: theirs
environment: {type: local}
workload:
  corpus: {s3: {url: "s3://music/lakh/", endpoint: "https://s3.example.com"}}
method:
  - type: s3-down
    target: {component: s3}
    at: 1s
    duration: 1s
  - type: network-latency
    target: {component: s3}
    at: 1s
    duration: 1s
    latency: 10ms
`
	_, err := Parse([]byte(doc))
	for _, w := range []string{"line 6: /method/0: s3-down stops the run's own S3 server", "line 10: /method/1: the edge to an HTTPS S3 endpoint"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v does not say %q", err, w)
		}
	}
	if _, err := Parse([]byte(strings.Replace(doc, "https://s3.example.com", "http://127.0.0.1:9000", 1))); err == nil || strings.Contains(err.Error(), "HTTPS") {
		t.Errorf("a plain-HTTP endpoint's edge is proxied: %v", err)
	}
}

// TestPlanIsFixedBySeed: one seed gives one plan; the picks are instances of
// the target, without replacement, and the count follows the mode.
// TestInstances: the names faults target, with a standby and API replicas
// and without.
func TestInstances(t *testing.T) {
	e, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(append(e.Instances("postgres"), e.Instances("api")...), " "); got != "postgres api" {
		t.Errorf("one server, one API: %s", got)
	}
	e.Environment.PostgresStandby, e.Environment.APIReplicas = true, 2
	if got := strings.Join(append(e.Instances("postgres"), e.Instances("api")...), " "); got != "postgres-1 postgres-2 api-1 api-2" {
		t.Errorf("a standby, two APIs: %s", got)
	}
	e.Method[0] = Fault{Type: "postgres-restart", Target: Target{Component: "postgres", Mode: Primary}, At: Duration(time.Second), Duration: Duration(time.Second)}
	if s := e.Resolve().Steps[0]; fmt.Sprint(s.Targets) != "[primary]" {
		t.Errorf("the primary's fault targets %v, want [primary] (resolved when injected)", s.Targets)
	}
}

func TestPlanIsFixedBySeed(t *testing.T) {
	e, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	a, b := e.Resolve(), e.Resolve()
	if a.String() != b.String() {
		t.Errorf("two resolutions of one file differ:\n%s\n%s", a, b)
	}
	if len(a.Steps) != 6 || a.Steps[0].At.D().String() != "2s" || a.Steps[5].At.D().String() != "6s" {
		t.Errorf("plan %s", a)
	}
	picks := map[string]bool{}
	for _, s := range a.Steps {
		if s.Type == "process-kill" {
			picks[s.Targets[0]] = true
		}
	}
	e.Seed = 8
	if c := e.Resolve(); c.String() == a.String() && len(picks) > 1 {
		t.Errorf("seeds 7 and 8 gave the same plan:\n%s", a)
	}
	for _, tc := range []struct {
		mode  string
		value float64
		want  int
	}{{"one", 0, 1}, {"all", 0, 4}, {"fixed", 3, 3}, {"percent", 30, 2}, {"percent", 1, 1}} {
		e.Method[0].Target = Target{Component: "extract", Mode: tc.mode, Value: tc.value}
		s := e.Resolve().Steps[0]
		seen := map[string]bool{}
		for _, x := range s.Targets {
			if seen[x] || !strings.HasPrefix(x, "extract-") {
				t.Errorf("%s %v: targets %v", tc.mode, tc.value, s.Targets)
			}
			seen[x] = true
		}
		if len(s.Targets) != tc.want {
			t.Errorf("%s %v: %d targets, want %d", tc.mode, tc.value, len(s.Targets), tc.want)
		}
	}
}

func TestThresholds(t *testing.T) {
	for _, tc := range []struct {
		text string
		v    float64
		want bool
	}{
		{"< 50ms", 0.049, true}, {"< 50ms", 0.05, false}, {">= 100", 100, true}, {"<= 1%", 0.011, false},
		{"> 2s", 2.5, true}, {"== 0", 0, true},
	} {
		th, err := ParseThreshold(tc.text)
		if err != nil {
			t.Fatal(err)
		}
		if got := th.Holds(tc.v); got != tc.want {
			t.Errorf("%q holds for %v: %v, want %v", tc.text, tc.v, got, tc.want)
		}
	}
}

// TestShippedExperimentsAreValid: every file in experiments/ parses.
func TestShippedExperimentsAreValid(t *testing.T) {
	files, err := filepath.Glob("../../../../experiments/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no shipped experiments (%v)", err)
	}
	for _, f := range files {
		if _, err := LoadFile(f); err != nil {
			t.Error(err)
		}
	}
}

// TestKubernetesExperiments: a run against a release kills its pods, picked
// when injected; anything else is refused by name.
func TestKubernetesExperiments(t *testing.T) {
	const doc = `name: extract-pods
seed: 3
environment: {type: kubernetes, namespace: scale-e2e, release: prod}
workload:
  corpus: {folder: /tmp/corpus}
method:
  - type: pod-kill
    target: {component: extract, mode: percent, value: 50}
    how: force
    at: 2s
`
	e, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	plan := e.Resolve()
	if len(plan.Steps) != 1 {
		t.Fatalf("plan %v", plan)
	}
	s := plan.Steps[0]
	if s.Targets != nil || s.Component != "extract" || s.Mode != "percent" || s.Value != 50 || s.How != "force" {
		t.Errorf("step %+v: the pods are picked when injected", s)
	}
	for _, tc := range []struct{ name, from, to, want string }{
		{"no namespace", "namespace: scale-e2e, ", "", "environment.namespace"},
		{"a local fault", "type: pod-kill", "type: process-kill", "pod-kill faults only"},
		{"not a pod", "component: extract", "component: nats", "not nats"},
		{"a leader", "mode: percent, value: 50", "mode: leader", "one, all, fixed or percent"},
		{"a synthetic corpus", "{folder: /tmp/corpus}", "{synthetic: {files: 10}}", "corpus.s3"},
		{"pod-kill locally", "type: kubernetes, namespace: scale-e2e, release: prod", "type: local", "environment.type: kubernetes"},
		{"an unknown way to kill", "how: force", "how: gently", "/method/0/how"},
		{"outside the allow list", "    at: 2s\n", "    at: 2s\nallow: [api]\n", "allow list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(strings.Replace(doc, tc.from, tc.to, 1)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one that mentions %q", err, tc.want)
			}
		})
	}
}
