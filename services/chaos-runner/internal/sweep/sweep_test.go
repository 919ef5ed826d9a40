package sweep

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scale-dev/scale/internal/testenv"
	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
	"github.com/scale-dev/scale/services/chaos-runner/internal/runner"
)

// TestEveryCellIsAValidExperiment: the full matrix's cells pass the checks
// of an experiment file, and no cell appears twice.
func TestEveryCellIsAValidExperiment(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Cells() {
		key := c.Component + " × " + c.Fault
		if seen[key] {
			t.Errorf("%s twice", key)
		}
		seen[key] = true
		if _, err := experiment.Parse(mustYAML(experimentFor(c, Options{Files: 100, APIRate: 10, Seed: 1}))); err != nil {
			t.Errorf("%s: %v", key, err)
		}
	}
}

// TestClassify: a cell's verdict from its measurements.
func TestClassify(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	for _, tc := range []struct {
		name string
		r    Result
		want string
	}{
		{"nothing noticed", Result{Exact: true, Dip: f(0.1), APIErrors: f(0)}, "ok"},
		{"slower", Result{Exact: true, Dip: f(0.6), APIErrors: f(0)}, "degraded"},
		{"some API errors", Result{Exact: true, Dip: f(0), APIErrors: f(0.05)}, "degraded"},
		{"API answers late", Result{Exact: true, Dip: f(0), APIErrors: f(0), APIP99: f(3.5)}, "degraded"},
		{"pipeline stopped", Result{Exact: true, Dip: f(1), APIErrors: f(0)}, "stopped"},
		{"API down", Result{Exact: true, Dip: f(0), APIErrors: f(0.9)}, "stopped"},
		{"API holding every request", Result{Exact: true, Dip: f(0), APIErrors: f(0), APIAnswered: f(0)}, "stopped"},
		{"a file lost", Result{Exact: false, Dip: f(0), APIErrors: f(0)}, "lost"},
		{"fault failed", Result{Exact: true, Error: "no such target"}, "error"},
	} {
		if got := Classify(tc.r, false); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// TestWorkRanOutIsReported: a cell whose work ran out before its fault
// ended says how far into the fault (the samples of a cell that ran out
// 0.5 s into the kill of one worker of two); one whose work outlasted the
// fault says nothing.
func TestWorkRanOutIsReported(t *testing.T) {
	healed := 5.5
	j := &runner.Journal{
		Faults: []runner.FaultRecord{{Injected: 1.5, Healed: &healed}},
		Samples: []runner.Sample{
			{T: 1.50, Finished: 1792, Backlog: 208, Waiting: 144},
			{T: 1.75, Finished: 1952, Backlog: 48, Waiting: 16},
			{T: 2.00, Finished: 1968, Backlog: 32, Waiting: 0},
			{T: 6.75, Finished: 2000},
		},
	}
	c := Cells()[1]
	r := result(c, j, 2000)
	if r.RanOut == nil || *r.RanOut != 0.5 {
		t.Fatalf("ran out %v, want 0.5 s into the fault", r.RanOut)
	}
	m := &Matrix{Cells: []Result{r}}
	if got := m.Summary(); !strings.Contains(got, "the work ran out 0.5s into the fault") {
		t.Errorf("summary does not say the work ran out:\n%s", got)
	}
	if r := result(c, j, 5000); r.RanOut != nil {
		t.Errorf("5,000 files: ran out %v s into the fault, want nothing said", *r.RanOut)
	}
}

// TestSmallSweep runs three cells of the matrix on real processes: the one
// API process killed (the API stops: a single point of failure), one of two
// workers killed (the pipeline carries on) and Postgres restarted (the
// pipeline and the API stop). Every cell accounts for every file.
func TestSmallSweep(t *testing.T) {
	testenv.SharedCorpus(t)
	bins, err := runner.Binaries("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var cells []Cell
	for _, c := range Cells() {
		if c.Fault == "process-kill" && (c.Component == "api" || c.Component == "extract (one of 2)") || c.Fault == "postgres-restart" {
			cells = append(cells, c)
		}
	}
	dir := t.TempDir()
	// Enough files that the work outlasts the baseline and most of the
	// fault: 2,000 ran out 0.3 s into it once the pipeline passed 1,200
	// files/s.
	m, err := Run(context.Background(), cells, Options{Dir: dir, Bins: bins, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Files: 6000, APIRate: 50, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(m.Summary())
	if len(m.Cells) != 3 {
		t.Fatalf("%d cells", len(m.Cells))
	}
	want := map[string]string{"api": "stopped", "extract (one of 2)": "ok", "postgres": "stopped"}
	for _, c := range m.Cells {
		if !c.Exact {
			t.Errorf("%s × %s: accounting %s", c.Component, c.Fault, c.Accounting)
		}
		if c.Verdict != want[c.Component] && !(c.Component == "extract (one of 2)" && c.Verdict == "degraded") {
			t.Errorf("%s × %s: %s, want %s", c.Component, c.Fault, c.Verdict, want[c.Component])
		}
	}
	spofs := strings.Join(m.SPOFs, "\n")
	for _, w := range []string{"api (process-kill): the API stopped", "postgres (postgres-restart)"} {
		if !strings.Contains(spofs, w) {
			t.Errorf("single points of failure %q do not name %q", m.SPOFs, w)
		}
	}
	if strings.Contains(spofs, "extract") {
		t.Errorf("one worker of two named a single point of failure: %q", m.SPOFs)
	}
	_, page, err := m.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	html, _ := os.ReadFile(page)
	if !strings.Contains(string(html), `class="stopped"`) || !strings.Contains(string(html), "Single points of failure") {
		t.Error("the page shows no stopped cell")
	}
	if _, err := os.Stat(filepath.Join(dir, "01-extract-one-of-2-process-kill", "journal.json")); err != nil {
		t.Errorf("a cell's journal is not kept: %v", err)
	}
}
