package schedule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/scale-dev/scale/internal/dashboard"
	"github.com/scale-dev/scale/internal/testenv"
	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
	"github.com/scale-dev/scale/services/chaos-runner/internal/runner"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// writeExperiment writes a small experiment file named name into dir.
func writeExperiment(t *testing.T, dir, name string) string {
	t.Helper()
	doc := fmt.Sprintf(`name: %s
seed: 1
environment: {type: local, extractWorkers: 2, extractConcurrency: 1}
workload:
  corpus: {synthetic: {files: 800, seed: 3}}
method:
  - type: process-kill
    target: {component: extract}
    at: 300ms
`, name)
	p := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestForbidConcurrency: a run that comes due while another runs is skipped
// and counted, not queued and not run beside it; once the first has ended the
// next runs. Only Keep runs of an experiment are kept. (The runs here are
// stand-ins that return a journal; TestScheduledRunIsServed runs real ones.)
func TestForbidConcurrency(t *testing.T) {
	dir := t.TempDir()
	a, b := Entry{File: writeExperiment(t, dir, "first"), Cron: "@hourly"}, Entry{File: writeExperiment(t, dir, "second"), Cron: "@hourly"}
	release, started := make(chan struct{}), make(chan string, 10)
	n := 0
	run := func(ctx context.Context, exp experiment.Experiment, _ string) *runner.Journal {
		started <- exp.Name
		if exp.Name == "first" {
			<-release
		}
		n++
		return &runner.Journal{Run: fmt.Sprintf("%s-%03d", exp.Name, n), Experiment: exp, Verdict: "passed", Started: time.Now()}
	}
	reg := prometheus.NewRegistry()
	s := New(Config{Keep: 2, Experiments: []Entry{a, b}}, dir, run, reg, quiet)
	done := make(chan bool)
	go func() { done <- s.Trigger(context.Background(), a) }()
	if got := <-started; got != "first" {
		t.Fatalf("started %s", got)
	}
	if s.Trigger(context.Background(), b) {
		t.Error("a second experiment ran while the first was running")
	}
	if s.Trigger(context.Background(), a) {
		t.Error("the first experiment ran twice at once")
	}
	if got := testutil.ToFloat64(s.skipped.WithLabelValues("second")); got != 1 {
		t.Errorf("skipped runs of second: %v, want 1", got)
	}
	if got := testutil.ToFloat64(s.busy); got != 1 {
		t.Errorf("scale_chaos_running %v during a run", got)
	}
	close(release)
	if !<-done {
		t.Fatal("the first run did not run")
	}
	for range 3 {
		if !s.Trigger(context.Background(), b) {
			t.Fatal("a run was skipped with nothing running")
		}
	}
	if got := testutil.ToFloat64(s.runs.WithLabelValues("second", "passed")); got != 3 {
		t.Errorf("passed runs of second: %v, want 3", got)
	}
	kept, _ := filepath.Glob(filepath.Join(dir, "runs", "second", "*"))
	if len(kept) != 2 || !strings.HasSuffix(kept[1], "second-004") {
		t.Errorf("kept %v, want the last 2 runs of second", kept)
	}
	// The Grafana dashboard's chaos panels and annotations read these.
	want, err := dashboard.Metrics("../../../..")
	if err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range families {
		have[f.GetName()] = true
	}
	checked := 0
	for _, name := range want {
		if strings.HasPrefix(name, "scale_chaos_") {
			checked++
			if !have[name] {
				t.Errorf("the dashboard queries %s, which the schedule does not export", name)
			}
		}
	}
	if checked == 0 {
		t.Error("the dashboard reads no chaos metric")
	}
}

// TestScheduledRunIsServed runs a real experiment every two seconds on the
// scheduler: the first run is kept, listed on the index with its verdict,
// its report and journal are served, and the metrics count it.
func TestScheduledRunIsServed(t *testing.T) {
	testenv.SharedCorpus(t)
	bins, err := runner.Binaries("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	schedFile := filepath.Join(dir, "schedule.yaml")
	writeExperiment(t, dir, "tiny")
	if err := os.WriteFile(schedFile, []byte("keep: 3\nexperiments:\n  - file: tiny.yaml\n    cron: \"@every 2s\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(schedFile)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s := New(cfg, dir, func(ctx context.Context, exp experiment.Experiment, work string) *runner.Journal {
		return runner.Run(ctx, exp, runner.Options{Dir: work, Bins: bins, Log: quiet})
	}, reg, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error)
	go func() { stopped <- s.Run(ctx) }()
	defer func() {
		cancel()
		<-stopped
	}()
	testenv.Poll(t, "a scheduled run to be kept", 3*time.Minute, func() (bool, int) {
		runs, _ := s.Runs()
		return len(runs) > 0, len(runs)
	})
	runs, _ := s.Runs()
	if runs[0].Verdict != "passed" {
		t.Errorf("the run %s: %s (exit %d)", runs[0].Run, runs[0].Verdict, runs[0].ExitCode)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	get := func(path string) string {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		return string(body)
	}
	if index := get("/"); !strings.Contains(index, runs[0].Run) || !strings.Contains(index, "passed") {
		t.Errorf("the index does not list %s as passed", runs[0].Run)
	}
	var idx events.ChaosRuns
	if err := json.Unmarshal([]byte(get("/runs.json")), &idx); err != nil || len(idx.Runs) == 0 || idx.Runs[0] != runs[0] {
		t.Errorf("/runs.json: %+v (%v), want the run %+v first", idx, err, runs[0])
	}
	if report := get(events.ChaosReportPath("tiny", runs[0].Run)); !strings.Contains(report, runs[0].Run) || !strings.Contains(report, "</html>") {
		t.Error("the served report is not the run's")
	}
	if journal := get("/runs/tiny/" + runs[0].Run + "/journal.json"); !strings.Contains(journal, `"verdict": "passed"`) {
		t.Error("the journal does not say passed")
	}
	if got := testutil.ToFloat64(s.runs.WithLabelValues("tiny", "passed")); got < 1 {
		t.Errorf("scale_chaos_runs_total{passed} = %v", got)
	}
	if got := testutil.ToFloat64(s.lastSuccess.WithLabelValues("tiny")); got < float64(time.Now().Add(-5*time.Minute).Unix()) {
		t.Errorf("last success %v", got)
	}
}

// TestBadSchedules: unknown keys, bad cron expressions and bad experiment
// files are refused when the schedule is loaded.
func TestBadSchedules(t *testing.T) {
	dir := t.TempDir()
	writeExperiment(t, dir, "ok")
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown key", "keep: 3\nkept: 4\nexperiments:\n  - {file: ok.yaml, cron: \"@hourly\"}\n", "kept"},
		{"bad cron", "experiments:\n  - {file: ok.yaml, cron: \"every tuesday\"}\n", "cron"},
		{"missing experiment", "experiments:\n  - {file: nope.yaml, cron: \"@hourly\"}\n", "nope.yaml"},
		{"nothing scheduled", "keep: 3\n", "no experiments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "schedule.yaml")
			if err := os.WriteFile(p, []byte(tc.doc), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}

// TestShippedScheduleLoads: the schedule in experiments/schedules loads, with
// every experiment it names.
func TestShippedScheduleLoads(t *testing.T) {
	cfg, err := LoadConfig("../../../../experiments/schedules/nightly.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Experiments) == 0 || cfg.Keep == 0 {
		t.Errorf("schedule %+v", cfg)
	}
}
