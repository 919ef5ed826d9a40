package runner

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/scale-dev/scale/internal/browsertest"
	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/testenv"
	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
)

// bins are the pipeline's binaries, built once for every test.
var bins map[string]string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chaos-bins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if bins, err = launcher.Build("../../../..", dir, PipelineBinaries); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runFile runs an experiment document on real processes and returns its
// journal; the run's logs are shown if the test fails.
func runFile(t *testing.T, doc []byte) *Journal {
	t.Helper()
	testenv.SharedCorpus(t) // the synthetic corpus follows its statistics
	exp, err := experiment.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(io.MultiWriter(&logs), nil))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	j := Run(ctx, exp, Options{Dir: dir, Bins: bins, Log: log})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("runner log:\n%s\nsummary:\n%s", logs.String(), j.Summary())
			files, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
			for _, f := range files {
				data, _ := os.ReadFile(f)
				if len(data) > 3000 {
					data = data[len(data)-3000:]
				}
				t.Logf("%s:\n%s", filepath.Base(f), data)
			}
		}
	})
	t.Log(j.Summary())
	return j
}

// checkExact fails the test unless every file was accounted for exactly once
// and the similarity lists equal the brute force.
func checkExact(t *testing.T, j *Journal) {
	t.Helper()
	if j.Accounting == nil || !j.Accounting.OK() || j.Accounting.Files == 0 {
		t.Errorf("accounting not exact: %+v", j.Accounting)
	}
	if j.Similar == nil || !j.Similar.OK() || j.Similar.Lists == 0 {
		t.Errorf("similarity lists: %+v", j.Similar)
	}
}

// TestShippedExtractKills runs experiments/extract-kills.yaml as shipped: 20
// random SIGKILLs of extract workers during a 20,000-file run. Not one file
// may be lost or counted twice.
func TestShippedExtractKills(t *testing.T) {
	doc, err := os.ReadFile("../../../../experiments/extract-kills.yaml")
	if err != nil {
		t.Fatal(err)
	}
	j := runFile(t, doc)
	if j.ExitCode != ExitPassed {
		t.Errorf("exit %d (%s), want 0: %v", j.ExitCode, j.Verdict, j.Reasons)
	}
	killed := 0
	for _, f := range j.Faults {
		if f.Error == "" && f.Healed != nil {
			killed++
		}
	}
	if killed != 20 || j.Accounting == nil || j.Accounting.Files != 20000 {
		t.Errorf("%d kills injected and healed over %+v, want 20 over 20,000 files", killed, j.Accounting)
	}
	checkExact(t, j)
	// The events on the CHAOS stream tell the same story as the journal.
	kinds := map[string]int{}
	for _, ev := range j.Events {
		kinds[ev.Kind]++
	}
	want := map[string]int{events.ChaosStarted: 1, events.ChaosResolved: 1, events.ChaosInjected: 20, events.ChaosHealed: 20, events.ChaosEnded: 1}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Errorf("chaos events read back: %v, want %v", kinds, want)
	}
	checkReport(t, j, "passed")
}

// checkReport writes the run's HTML report and opens it in headless
// Chromium: the verdict shows, and the charts are drawn with data.
func checkReport(t *testing.T, j *Journal, verdict string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "report.html")
	if err := j.WriteReport(path); err != nil {
		t.Fatal(err)
	}
	ctx := browsertest.Context(t, time.Minute)
	var shown string
	var charts, drawn, faultRows int
	err := chromedp.Run(ctx,
		chromedp.Navigate("file://"+path),
		chromedp.Text("#verdict", &shown, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelectorAll('svg.chart').length`, &charts),
		chromedp.Evaluate(`[...document.querySelectorAll('svg.chart polyline')].filter(p => p.points.numberOfItems > 10).length`, &drawn),
		chromedp.Evaluate(`document.querySelectorAll('#faults tr').length - 1`, &faultRows),
	)
	if err != nil {
		t.Fatal(err)
	}
	if shown != verdict || charts < 2 || drawn < 2 || faultRows != len(j.Faults) {
		t.Errorf("report: verdict %q, %d charts, %d lines with data, %d fault rows (want %q, ≥ 2, ≥ 2, %d)", shown, charts, drawn, faultRows, verdict, len(j.Faults))
	}
}

const natsLeader = `name: nats-leader-lost
seed: 5
environment: {type: local, extractWorkers: 1, extractConcurrency: 1, natsNodes: 3}
workload:
  corpus: {synthetic: {files: 6000, seed: 3}}
slos:
  - metric: recovery_time
    threshold: "< 60s"
method:
  - type: nats-node-kill
    target: {component: nats, mode: leader}
    at: 1s
    duration: 3s
`

// TestNATSStreamLeaderLost kills the NATS node leading the work queue (of
// three, R3 streams) and starts it again: nothing is lost, and the recovery
// time is reported.
func TestNATSStreamLeaderLost(t *testing.T) {
	j := runFile(t, []byte(natsLeader))
	if j.ExitCode != ExitPassed {
		t.Errorf("exit %d (%s), want 0: %v", j.ExitCode, j.Verdict, j.Reasons)
	}
	if len(j.Faults) != 1 || !strings.HasPrefix(j.Faults[0].Step.Targets[0], "nats-") || j.Faults[0].Recovery == nil {
		t.Errorf("faults %+v: want the leader's node killed, healed and recovered from", j.Faults)
	}
	checkExact(t, j)
}

const postgresRestart = `name: postgres-restart
seed: 2
environment: {type: local, extractWorkers: 1, extractConcurrency: 1}
workload:
  corpus: {synthetic: {files: 5000, seed: 4}}
method:
  - type: postgres-restart
    target: {component: postgres}
    at: 1s
    duration: 2s
`

// TestPostgresCrashed crashes Postgres mid-run and starts it again: the
// pipeline pauses and loses nothing.
func TestPostgresCrashed(t *testing.T) {
	j := runFile(t, []byte(postgresRestart))
	if j.ExitCode != ExitPassed {
		t.Errorf("exit %d (%s), want 0: %v", j.ExitCode, j.Verdict, j.Reasons)
	}
	checkExact(t, j)
}

const abortOnPause = `name: abort-on-pause
seed: 1
environment: {type: local, extractWorkers: 2}
workload:
  corpus: {synthetic: {files: 6000, seed: 5}}
slos:
  - metric: throughput
    threshold: ">= 100"
    abortOnFail: true
    delayAbortEval: 1s
method:
  - type: process-pause
    target: {component: extract, mode: all}
    at: 1s
    duration: 5m
`

// TestAbortHealsAndExits2: every worker is paused for five minutes; the
// throughput abort condition fires, the pause is healed at once, and the
// run ends as aborted (exit 2) long before the five minutes.
func TestAbortHealsAndExits2(t *testing.T) {
	start := time.Now()
	j := runFile(t, []byte(abortOnPause))
	if j.ExitCode != ExitAborted || j.Abort == nil || !strings.Contains(j.Abort.Reason, "throughput") {
		t.Fatalf("exit %d (%s), abort %+v: want exit 2 by the throughput condition", j.ExitCode, j.Verdict, j.Abort)
	}
	if len(j.Faults) != 1 || j.Faults[0].Healed == nil || *j.Faults[0].Healed > 60 {
		t.Errorf("faults %+v: want the pause healed at the abort", j.Faults)
	}
	if d := time.Since(start); d > 4*time.Minute {
		t.Errorf("the aborted run took %v", d)
	}
	healed := false
	for _, ev := range j.Events {
		healed = healed || ev.Kind == events.ChaosHealed
	}
	if !healed {
		t.Errorf("no fault.healed event among %d", len(j.Events))
	}
}
