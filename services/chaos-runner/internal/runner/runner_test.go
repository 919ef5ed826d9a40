package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
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
	"github.com/scale-dev/scale/services/chaos-runner/internal/local"
)

// bins are the pipeline's binaries, built once for every test.
var bins map[string]string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chaos-bins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	all := map[string]string{"chaos-runner": "./services/chaos-runner"}
	for name, pkg := range PipelineBinaries {
		all[name] = pkg
	}
	if bins, err = launcher.Build("../../../..", dir, all); err != nil {
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

// TestPostgresLatencyBreachIsReported runs experiments/postgres-latency.yaml:
// 200 ms on every answer from Postgres for 6 s. The throughput SLO's breach
// during the fault is detected and reported (exit 1), the throughput during
// is a fraction of the baseline, and still nothing is lost.
func TestPostgresLatencyBreachIsReported(t *testing.T) {
	doc, err := os.ReadFile("../../../../experiments/postgres-latency.yaml")
	if err != nil {
		t.Fatal(err)
	}
	j := runFile(t, doc)
	if j.ExitCode != ExitFailed {
		t.Errorf("exit %d (%s), want 1", j.ExitCode, j.Verdict)
	}
	var baseline, during *SLOResult
	for i, s := range j.SLOs {
		if s.Metric == "throughput" && s.Phase == "baseline" {
			baseline = &j.SLOs[i]
		}
		if s.Metric == "throughput" && s.Phase == "during" {
			during = &j.SLOs[i]
		}
	}
	if baseline == nil || during == nil || baseline.Value == nil || during.Value == nil {
		t.Fatalf("throughput SLO results %+v", j.SLOs)
	}
	if during.Passed || *during.Value > *baseline.Value/2 {
		t.Errorf("throughput during the latency %.0f files/s (passed %v), baseline %.0f: want a reported breach", *during.Value, during.Passed, *baseline.Value)
	}
	reported := false
	for _, r := range j.Reasons {
		reported = reported || strings.Contains(r, "throughput") && strings.Contains(r, "during")
	}
	if !reported {
		t.Errorf("reasons %v do not name the throughput breach", j.Reasons)
	}
	checkExact(t, j)
}

const longFaults = `name: runner-killed
seed: 1
environment: {type: local, extractWorkers: 2}
workload:
  corpus: {synthetic: {files: 3000, seed: 8}}
method:
  - type: process-pause
    target: {component: extract, mode: all}
    at: 1s
    duration: 10m
  - type: network-latency
    target: {component: postgres}
    at: 1s
    duration: 10m
    latency: 500ms
`

// TestRunnerKilledLeavesNothing SIGKILLs the chaos runner while a pause and
// a latency fault are on: checked from outside, every process of its
// environment (Postgres included) is gone within seconds, and the proxy
// that carried the latency no longer listens. Nothing stays paused, slowed
// or running.
func TestRunnerKilledLeavesNothing(t *testing.T) {
	testenv.SharedCorpus(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "experiment.yaml")
	if err := os.WriteFile(file, []byte(longFaults), 0o644); err != nil {
		t.Fatal(err)
	}
	runner, err := launcher.Start(launcher.Spec{
		Name: "chaos-runner", Binary: bins["chaos-runner"], LogPath: filepath.Join(dir, "runner.log"),
		Args: []string{"run", "--dir", filepath.Join(dir, "work"), "--bins", filepath.Dir(bins["extract"]), file},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		runner.Kill()
		if t.Failed() {
			t.Logf("runner log:\n%s", runner.Log())
		}
	})
	testenv.Poll(t, "both faults injected", 3*time.Minute, func() (bool, int) {
		n := strings.Count(runner.Log(), `"msg":"fault injected"`)
		return n == 2, n
	})
	data, err := os.ReadFile(filepath.Join(dir, "work", local.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st local.State
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	if st.Processes["postgres"] == 0 || st.Processes["extract-1"] == 0 || st.Proxies["postgres"] == "" {
		t.Fatalf("environment %+v: want Postgres, the workers and the Postgres proxy", st)
	}
	// A stop takes effect when the process's threads next run: on a busy
	// machine that can take a moment.
	testenv.Poll(t, "the workers to be stopped", 30*time.Second, func() (bool, map[string]string) {
		states := map[string]string{}
		for name, pid := range st.Processes {
			if strings.HasPrefix(name, "extract") {
				states[name] = procState(pid)
			}
		}
		return states["extract-1"] == "T" && states["extract-2"] == "T", states
	})
	runner.Kill()
	testenv.Poll(t, "every process of the environment to be gone", 30*time.Second, func() (bool, map[string]string) {
		alive := map[string]string{}
		for name, pid := range st.Processes {
			if s := procState(pid); s != "" && s != "Z" {
				alive[name] = s
			}
		}
		return len(alive) == 0, alive
	})
	if conn, err := net.DialTimeout("tcp", st.Proxies["postgres"], time.Second); err == nil {
		conn.Close()
		t.Errorf("the Postgres proxy at %s still listens", st.Proxies["postgres"])
	}
}

// procState is a process's state letter from /proc (R, S, T for stopped,
// Z for a zombie), or "" when there is no such process.
func procState(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// pid (comm) state ...: comm may hold spaces, so read after the last ')'.
	rest := string(data[strings.LastIndexByte(string(data), ')')+1:])
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return ""
	}
	return fields[0]
}
