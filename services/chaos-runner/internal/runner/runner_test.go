package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/scale-dev/scale/internal/browsertest"
	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/synth"
	"github.com/scale-dev/scale/internal/testenv"
	"github.com/scale-dev/scale/internal/transport"
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
	j, _ := runFileIn(t, doc)
	return j
}

// shipped is experiments/NAME.yaml as it ships.
func shipped(t *testing.T, name string) []byte {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("../../../../experiments", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// runFileIn is runFile that also returns the run's work folder, where the
// runner's own log is runner.log.
func runFileIn(t *testing.T, doc []byte) (*Journal, string) {
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
	if err := os.WriteFile(filepath.Join(dir, "runner.log"), []byte(logs.String()), 0o644); err != nil {
		t.Fatal(err)
	}
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
	return j, dir
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
	j := runFile(t, shipped(t, "extract-kills"))
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

// TestShippedPostgresFailover runs experiments/postgres-failover.yaml as
// shipped: the primary crashes under load and stays down past its
// standby's promotion; extraction resumes on the promoted standby before the
// former primary is back (as a standby), the API (two processes reading from
// the standby, behind the balancer) answers every request, a killed API
// process costs no request either, and nothing is lost or duplicated.
func TestShippedPostgresFailover(t *testing.T) {
	j := runFile(t, shipped(t, "postgres-failover"))
	if j.ExitCode != ExitPassed {
		t.Errorf("exit %d (%s), want 0: %v", j.ExitCode, j.Verdict, j.Reasons)
	}
	if len(j.Failovers) != 1 || len(j.Faults) != 2 || fmt.Sprint(j.Faults[0].Step.Targets) != "[postgres-1]" {
		t.Fatalf("failovers %q, faults %+v: want the primary postgres-1 crashed and one failover", j.Failovers, j.Faults)
	}
	crash := j.Faults[0]
	if crash.Healed == nil {
		t.Fatal("the crashed primary was not healed")
	}
	// The promotion comes 1 s after the crash; give the writers 2 s more to
	// find the new primary. Files finishing after that and before the
	// former primary is back were written to the promoted standby.
	if n := finishedBetween(j, crash.Injected+3, *crash.Healed); n == 0 {
		t.Errorf("no file finished between %.1f s and the heal at %.1f s: extraction did not resume on the promoted standby", crash.Injected+3, *crash.Healed)
	}
	checkExact(t, j)
}

// TestShippedS3GatewayDown runs experiments/s3-gateway-down.yaml as
// shipped: one of two S3 gateways killed for 5 s; extraction carries on
// through the other (with one gateway it stops: TestS3Down) and nothing is
// lost.
func TestShippedS3GatewayDown(t *testing.T) {
	j := runFile(t, shipped(t, "s3-gateway-down"))
	f := checkHealed(t, j)
	if tg := fmt.Sprint(f.Step.Targets); tg != "[s3-1]" && tg != "[s3-2]" {
		t.Errorf("targets %s, want one of the two gateways", tg)
	}
	// A second into the fault the balancer has ejected the dead gateway.
	if n := finishedBetween(j, f.Injected+1, *f.Healed); n < 100 {
		t.Errorf("%d files finished while a gateway was down (from 1 s in): extraction did not go on through the other", n)
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
// during the fault is detected, reported (exit 1) and explained from the
// traces, the throughput during is a fraction of the baseline, and still
// nothing is lost.
func TestPostgresLatencyBreachIsReported(t *testing.T) {
	j := runFile(t, shipped(t, "postgres-latency"))
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
	// The breach is explained from the services' traces: the files that
	// crossed the fault spent the added time in the stages that talk to
	// Postgres (every statement waits 200 ms), not reading or parsing.
	if !strings.Contains(during.Explanation, "extract: store and publish") || strings.Contains(during.Explanation, "extract: read") ||
		strings.Contains(during.Explanation, "extract: parse") {
		t.Errorf("the breach is explained as %q; want the store stage named, and not read or parse", during.Explanation)
	}
	if len(j.Stages) != 2 || len(j.Stages[0].Stages) == 0 {
		t.Errorf("stage windows %+v: want the baseline and the fault's", j.Stages)
	}
	checkExact(t, j)
}

const longFaults = `name: runner-killed
seed: 1
environment: {type: local, extractWorkers: 2, network: hosts}
workload:
  corpus: {synthetic: {files: 3000, seed: 8}}
method:
  - type: network-partition
    target: {component: similarity}
    from: [nats]
    at: 1s
    duration: 10m
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

// TestRunnerKilledLeavesNothing SIGKILLs the chaos runner while a partition,
// a pause and a latency fault are on, with the pipeline on hosts: checked
// from outside, every process of its environment (Postgres and S3 included)
// and every holder of a host's namespace is gone within seconds, and the
// proxy that carried the latency no longer listens. Nothing stays paused,
// slowed, cut off or running.
func TestRunnerKilledLeavesNothing(t *testing.T) {
	runner, _, st := startLongFaults(t)
	runner.Kill()
	checkAllGone(t, st)
}

// TestStopHealsEverything: chaos-runner stop DIR, given the work folder of a
// run holding the same three faults, ends it as SIGINT does: every fault
// healed and recorded so in the journal, exit 2, nothing left running.
func TestStopHealsEverything(t *testing.T) {
	runner, dir, st := startLongFaults(t)
	stop, err := launcher.Start(launcher.Spec{Name: "chaos-runner-stop", Binary: bins["chaos-runner"],
		LogPath: filepath.Join(dir, "stop.log"), Args: []string{"stop", filepath.Join(dir, "work")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := stop.Wait(); err != nil {
		t.Fatalf("chaos-runner stop: %v\n%s", err, stop.Log())
	}
	var exit *exec.ExitError
	if err := runner.Wait(); !errors.As(err, &exit) || exit.ExitCode() != ExitAborted {
		t.Errorf("the stopped runner ended with %v, want exit %d", err, ExitAborted)
	}
	j, err := ReadJournal(filepath.Join(dir, "work", "journal.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Faults) != 3 {
		t.Fatalf("journal has %d faults, want 3", len(j.Faults))
	}
	for _, f := range j.Faults {
		if f.Healed == nil || f.Error != "" {
			t.Errorf("fault %s on %v: healed %v, error %q", f.Step.Type, f.Step.Targets, f.Healed, f.Error)
		}
	}
	checkAllGone(t, st)
	if err := local.StopRunner(filepath.Join(dir, "work"), time.Second); err == nil {
		t.Error("stopping a runner that has exited succeeded")
	}
}

// startLongFaults starts the chaos runner on longFaults and returns it once
// all three faults are on, with its test folder and its environment.
func startLongFaults(t *testing.T) (*launcher.Process, string, local.State) {
	t.Helper()
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
	testenv.Poll(t, "all three faults injected", 3*time.Minute, func() (bool, int) {
		n := strings.Count(runner.Log(), `"msg":"fault injected"`)
		return n == 3, n
	})
	data, err := os.ReadFile(filepath.Join(dir, "work", local.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st local.State
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	if st.Processes["postgres"] == 0 || st.Processes["s3"] == 0 || st.Processes["extract-1"] == 0 || st.Proxies["postgres"] == "" || len(st.Hosts) < 5 {
		t.Fatalf("environment %+v: want Postgres, S3, the workers, the Postgres proxy and the hosts", st)
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
	return runner, dir, st
}

// checkAllGone fails the test unless, within 30 s, every process of the
// environment and every host's namespace holder has exited and the Postgres
// proxy no longer listens.
func checkAllGone(t *testing.T, st local.State) {
	t.Helper()
	testenv.Poll(t, "every process of the environment to be gone", 30*time.Second, func() (bool, map[string]string) {
		alive := map[string]string{}
		for name, pid := range st.Processes {
			if s := procState(pid); s != "" && s != "Z" {
				alive[name] = s
			}
		}
		// A host's namespace, with its address and its nftables cut, lives
		// as long as a process in it: its holder, or what runs on it.
		for i, pid := range st.Hosts {
			if s := procState(pid); s != "" && s != "Z" {
				alive[fmt.Sprint("host-", i)] = s
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
	fields, err := local.ProcStat(pid)
	if err != nil {
		return ""
	}
	return fields[0]
}

// finishedBetween is how many files the samples saw finish from t = from to
// t = to (seconds from the workload's start).
func finishedBetween(j *Journal, from, to float64) int {
	at := func(t float64) int {
		n := 0
		for _, s := range j.Samples {
			if s.T <= t {
				n = s.Finished
			}
		}
		return n
	}
	return at(to) - at(from)
}

// checkHealed fails the test unless the run passed with one fault, injected
// and healed, and returns it.
func checkHealed(t *testing.T, j *Journal) FaultRecord {
	t.Helper()
	if j.ExitCode != ExitPassed {
		t.Errorf("exit %d (%s), want 0: %v", j.ExitCode, j.Verdict, j.Reasons)
	}
	if len(j.Faults) != 1 || j.Faults[0].Healed == nil || j.Faults[0].Error != "" {
		t.Fatalf("faults %+v: want one, injected and healed", j.Faults)
	}
	return j.Faults[0]
}

const workersPartitioned = `name: workers-partitioned
seed: 1
environment: {type: local, extractWorkers: 2, extractConcurrency: 1, network: hosts}
workload:
  corpus: {synthetic: {files: 6000, seed: 11}}
method:
  - type: network-partition
    target: {component: extract, mode: all}
    from: [nats, postgres, s3]
    at: 1s
    duration: 6s
`

// TestWorkersPartitioned cuts every extract worker's host off from NATS,
// Postgres and S3 for 6 s, with the pipeline on hosts. The cut is real (not
// one file finishes while it holds, though the workers keep running), the
// kernel ends it, and afterwards every file is accounted for exactly once.
func TestWorkersPartitioned(t *testing.T) {
	j := runFile(t, []byte(workersPartitioned))
	f := checkHealed(t, j)
	if got := strings.Join(f.Step.Targets, ","); got != "extract-1,extract-2" {
		t.Errorf("cut %s, want both workers", got)
	}
	if n := finishedBetween(j, f.Injected+1, *f.Healed-0.5); n != 0 {
		t.Errorf("%d files finished while every worker was cut off", n)
	}
	if f.Recovery == nil {
		t.Error("no recovery after the partition")
	}
	checkExact(t, j)
}

const s3Down = `name: s3-down
seed: 1
environment: {type: local, extractWorkers: 2, extractConcurrency: 1}
workload:
  corpus: {synthetic: {files: 10000, seed: 12, corrupt: 0}}
method:
  - type: s3-down
    target: {component: s3}
    at: 1s
    duration: 4s
`

// TestS3Down kills versitygw for 4 s and starts it again, while ingest is
// still listing the bucket and the workers reading it. The listing resumes
// where it broke off, and with no corrupt file in the corpus a single
// failure row would be a file failed because S3 was away instead of retried.
func TestS3Down(t *testing.T) {
	j, dir := runFileIn(t, []byte(s3Down))
	logs, _ := filepath.Glob(filepath.Join(dir, "logs", "ingest.*.log"))
	resumed := false
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		resumed = resumed || strings.Contains(string(data), "listing failed; resuming")
	}
	if !resumed {
		t.Error("ingest's log shows no listing resumed: S3 went down after the listing, and the test tried nothing")
	}
	f := checkHealed(t, j)
	if f.Recovery == nil {
		t.Error("no recovery after S3 came back")
	}
	checkExact(t, j)
	if j.Accounting != nil && j.Accounting.Failures != 0 {
		t.Errorf("%d failure rows from a corpus with no bad file", j.Accounting.Failures)
	}
}

const natsEdgeLatency = `name: nats-edge-latency
seed: 1
environment: {type: local, extractWorkers: 2, natsNodes: 3}
workload:
  corpus: {synthetic: {files: 6000, seed: 13}}
method:
  - type: network-latency
    target: {component: nats, mode: all}
    at: 2s
    duration: 5s
    latency: 1s
`

// TestNATSEdgeLatency puts 1 s on the services' edges to all three NATS
// nodes: the services reach NATS only through them (they do not reconnect to
// the nodes' own addresses), so throughput falls while it lasts, and
// nothing is lost.
func TestNATSEdgeLatency(t *testing.T) {
	j := runFile(t, []byte(natsEdgeLatency))
	f := checkHealed(t, j)
	if got := strings.Join(f.Step.Targets, ","); got != "nats-1,nats-2,nats-3" {
		t.Errorf("latency on %s, want every node's edge", got)
	}
	before := float64(finishedBetween(j, 0, f.Injected)) / f.Injected
	during := float64(finishedBetween(j, f.Injected+1, *f.Healed)) / (*f.Healed - f.Injected - 1)
	t.Logf("%.0f files/s before, %.0f with 1 s on every NATS edge", before, during)
	if during > before/2 {
		t.Errorf("%.0f files/s with 1 s on every NATS edge, %.0f before: the latency did not reach the services", during, before)
	}
	checkExact(t, j)
}

const workerAdded = `name: worker-added
seed: 1
environment: {type: local, extractWorkers: 1, extractConcurrency: 1}
workload:
  corpus: {synthetic: {files: 6000, seed: 14}}
method:
  - type: worker-add
    target: {component: extract}
    at: 1s
    workers: 2
`

// TestWorkerAdded adds two extract workers under load: they join the
// durable consumer and the run ends with every file counted once.
func TestWorkerAdded(t *testing.T) {
	j := runFile(t, []byte(workerAdded))
	if j.ExitCode != ExitPassed {
		t.Errorf("exit %d (%s), want 0: %v", j.ExitCode, j.Verdict, j.Reasons)
	}
	if len(j.Faults) != 1 || strings.Join(j.Faults[0].Step.Targets, ",") != "extract-2,extract-3" || j.Faults[0].Error != "" {
		t.Fatalf("faults %+v: want extract-2 and extract-3 added", j.Faults)
	}
	checkExact(t, j)
}

// TestShippedQueueFaults runs experiments/queue-faults.yaml: publish
// rejections on both streams, a stream leader step-down, forced redelivery
// (the consumer's ack wait cut below the work's time) and ack-pending
// saturation, one after another, against three NATS nodes. Every fault takes
// effect, and not one file is lost or counted twice.
func TestShippedQueueFaults(t *testing.T) {
	j, dir := runFileIn(t, shipped(t, "queue-faults"))
	if j.ExitCode != ExitPassed {
		t.Errorf("exit %d (%s), want 0: %v", j.ExitCode, j.Verdict, j.Reasons)
	}
	if len(j.Faults) != 5 {
		t.Fatalf("%d faults, want 5", len(j.Faults))
	}
	for _, f := range j.Faults {
		if f.Healed == nil || f.Error != "" {
			t.Errorf("%s on %v: healed %v, error %q", f.Step.Type, f.Step.Targets, f.Healed, f.Error)
		}
	}
	// Ingest met the rejection: a batch of its was refused, or lost its
	// acknowledgement when the stream changed (then it waits up to
	// transport.PublishAckWait), and was published again. A retry after that
	// (the step-down's) does not count.
	reject := j.Faults[0]
	if reject.Healed == nil {
		t.Fatalf("the first fault, %s, was not healed", reject.Step.Type)
	}
	from := j.WorkloadStarted.Add(time.Duration(reject.Injected * float64(time.Second)))
	until := j.WorkloadStarted.Add(time.Duration(*reject.Healed*float64(time.Second)) + transport.PublishAckWait + time.Second)
	logs, _ := filepath.Glob(filepath.Join(dir, "logs", "ingest.*.log"))
	retried := false
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		for line := range strings.Lines(string(data)) {
			var rec struct {
				Time time.Time `json:"time"`
				Msg  string    `json:"msg"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "recording or publishing a batch failed; retrying" {
				retried = retried || (!rec.Time.Before(from) && rec.Time.Before(until))
			}
		}
	}
	if !retried {
		t.Errorf("ingest retried no batch between %s and %s: the rejection of the work queue met no publish of ingest", from.Format(time.TimeOnly), until.Format(time.TimeOnly))
	}
	runnerLog, _ := os.ReadFile(filepath.Join(dir, "runner.log"))
	if !regexp.MustCompile(`msg="consumer restored" consumer=extract ack_pending=\d+ redeliveries=[1-9]`).Match(runnerLog) {
		t.Error("no message was delivered again while the ack wait was cut: the forced redelivery did not take")
	}
	checkExact(t, j)
}

// TestS3PrefixWorkload runs on a bucket prefix that exists already (a
// versitygw the test starts stands for the user's S3), with the credentials
// in the environment as the services take them, and a latency fault on the
// proxied edge to it: every file under the prefix, and none beside it, is
// accounted for.
func TestS3PrefixWorkload(t *testing.T) {
	shared := testenv.SharedCorpus(t)
	srv := testenv.S3(t)
	srv.CreateBucket(t, "music")
	st, err := synth.Measure(shared)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := synth.WriteCorpus(context.Background(), st, dir, 1500, 21, 0.01, nil); err != nil {
		t.Fatal(err)
	}
	rels, err := corpus.Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, rel := range rels {
		data, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		srv.Put(t, "music", "lakh/"+rel, data)
	}
	srv.Put(t, "music", "other/not-in-the-workload.mid", []byte("MThd"))
	t.Setenv("SCALE_STORAGE_ACCESS_KEY", srv.Config.AccessKey)
	t.Setenv("SCALE_STORAGE_SECRET_KEY", srv.Config.SecretKey)
	doc := fmt.Sprintf(`name: s3-prefix
seed: 1
environment: {type: local, extractWorkers: 1}
workload:
  corpus: {s3: {url: "s3://music/lakh/", endpoint: %q, pathStyle: true}}
method:
  - type: network-latency
    target: {component: s3}
    at: 500ms
    duration: 2s
    latency: 20ms
`, srv.Config.Endpoint)
	j := runFile(t, []byte(doc))
	checkHealed(t, j)
	checkExact(t, j)
	if j.Accounting != nil && j.Accounting.Files != len(rels) {
		t.Errorf("the workload had %d files, want the %d under the prefix", j.Accounting.Files, len(rels))
	}
}
