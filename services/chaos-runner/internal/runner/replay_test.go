package runner

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/scale-dev/scale/internal/accounting"
	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
)

// TestDifferences: a replay's outcome is compared on what must be the same
// (plan, targets, verdicts, accounting), not on measured values.
func TestDifferences(t *testing.T) {
	base := func() *Journal {
		v := 512.0
		return &Journal{
			Run: "x", Verdict: "passed",
			Plan:       experiment.Plan{Seed: 1, Steps: []experiment.Step{{Fault: "k", Type: "process-kill", Targets: []string{"extract-2"}}}},
			Faults:     []FaultRecord{{Step: experiment.Step{Fault: "k", Targets: []string{"extract-2"}}, Recovery: new(float64)}},
			SLOs:       []SLOResult{{Name: "throughput >= 100", Phase: "after", Value: &v, Passed: true}},
			Accounting: &accounting.Report{Files: 10, Discovered: 10, Songs: 9, Failures: 1, Done: 9, Failed: 1},
		}
	}
	for _, tc := range []struct {
		name   string
		change func(j *Journal)
		want   []string
	}{
		{"a measured value", func(j *Journal) { v := 300.0; j.SLOs[0].Value = &v }, nil},
		{"a target", func(j *Journal) { j.Faults[0].Step.Targets = []string{"extract-1"} }, []string{`fault 1 (k) targets: ["extract-2"], now ["extract-1"]`}},
		{"an SLO verdict", func(j *Journal) { j.SLOs[0].Passed = false; j.Verdict = "failed"; j.ExitCode = 1 },
			[]string{`verdict: "passed", now "failed"`, "exit code: 0, now 1", `SLO throughput >= 100 / after: "passed", now "failed"`}},
		{"the plan", func(j *Journal) { j.Plan.Steps[0].At = experiment.Duration(time.Second) }, []string{"plan: "}},
		{"the accounting", func(j *Journal) { j.Accounting.Lost = []string{"s3://c/a.mid"} }, []string{"accounting exact: true, now false", `lost: null, now ["s3://c/a.mid"]`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, replay := base(), base()
			tc.change(replay)
			got := Differences(old, replay)
			if len(got) != len(tc.want) {
				t.Fatalf("differences %q, want %q", got, tc.want)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(got[i], w) {
					t.Errorf("difference %q, want %q", got[i], w)
				}
			}
		})
	}
}

const replayed = `name: replayed
seed: 42
environment: {type: local, extractWorkers: 3, extractConcurrency: 1}
workload:
  corpus: {synthetic: {files: 3000, seed: 19}}
method:
  - type: process-kill
    target: {component: extract}
    at: 500ms
    repeat: {count: 3, every: 300ms}
`

// TestReplayGetsTheSamePlan runs an experiment whose seed picks its kill
// targets, then replays its journal on real processes: the replay runs the
// same plan, injects into the same targets, and accounts for the same files
// the same way.
func TestReplayGetsTheSamePlan(t *testing.T) {
	first := runFile(t, []byte(replayed))
	checkExact(t, first)
	data, err := json.Marshal(first)
	if err != nil {
		t.Fatal(err)
	}
	var old Journal // as replay reads it: from its JSON
	if err := json.Unmarshal(data, &old); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	again := Replay(ctx, &old, Options{Dir: t.TempDir(), Bins: bins, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Log(again.Summary())
	if again.ReplayOf != first.Run {
		t.Errorf("replay_of %q, want %q", again.ReplayOf, first.Run)
	}
	if d := Differences(&old, again); len(d) != 0 {
		t.Errorf("the replay differs: %q", d)
	}
	checkExact(t, again)
}
