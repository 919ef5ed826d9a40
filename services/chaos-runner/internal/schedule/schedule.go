// Package schedule runs chaos experiments on cron expressions, as a
// Kubernetes CronJob with concurrencyPolicy: Forbid would: never two at once
// (a run that comes due while another is going is skipped and counted), the
// last few journals and reports of each experiment kept and served over HTTP,
// and Prometheus metrics of runs, verdicts and the last success.
package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"

	"github.com/scale-dev/scale/internal/ops"
	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
	"github.com/scale-dev/scale/services/chaos-runner/internal/runner"
)

// Config is a schedule file.
type Config struct {
	Keep        int     `yaml:"keep"` // runs kept per experiment (default 10)
	Experiments []Entry `yaml:"experiments"`
}

// Entry is one experiment and when it runs.
type Entry struct {
	File string `yaml:"file"` // experiment file, relative to the schedule file
	Cron string `yaml:"cron"` // five fields, or @hourly, @every 30m, ...
}

// LoadConfig reads a schedule file; unknown keys, bad cron expressions and
// experiment files that do not validate are errors.
func LoadConfig(path string) (Config, error) {
	var c Config
	f, err := os.Open(path)
	if err != nil {
		return c, err
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	if c.Keep == 0 {
		c.Keep = 10
	}
	if len(c.Experiments) == 0 {
		return c, fmt.Errorf("%s: no experiments", path)
	}
	var errs []error
	for i, e := range c.Experiments {
		if !filepath.IsAbs(e.File) {
			c.Experiments[i].File = filepath.Join(filepath.Dir(path), e.File)
		}
		if _, err := cron.ParseStandard(e.Cron); err != nil {
			errs = append(errs, fmt.Errorf("%s: experiments[%d].cron %q: %w", path, i, e.Cron, err))
		}
		if _, err := experiment.LoadFile(c.Experiments[i].File); err != nil {
			errs = append(errs, err)
		}
	}
	return c, errors.Join(errs...)
}

// RunFunc runs one experiment with its work folder.
type RunFunc func(ctx context.Context, exp experiment.Experiment, workDir string) *runner.Journal

// Scheduler runs the entries of a Config.
type Scheduler struct {
	cfg Config
	dir string // runs/<experiment>/<run>/ hold the journals and reports kept
	run RunFunc
	log *slog.Logger

	mu      sync.Mutex
	running string // the experiment running now; "" when none

	runs        *prometheus.CounterVec
	skipped     *prometheus.CounterVec
	lastSuccess *prometheus.GaugeVec
	busy        prometheus.Gauge
}

// New returns a scheduler that keeps its runs under dir.
func New(cfg Config, dir string, run RunFunc, reg prometheus.Registerer, log *slog.Logger) *Scheduler {
	return &Scheduler{cfg: cfg, dir: dir, run: run, log: log,
		runs: ops.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scale_chaos_runs_total",
			Help: "Scheduled experiment runs, by experiment and verdict (passed, failed, aborted, error)."}, []string{"experiment", "verdict"})),
		skipped: ops.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scale_chaos_runs_skipped_total",
			Help: "Runs that came due while another experiment was running and were skipped (concurrency forbidden)."}, []string{"experiment"})),
		lastSuccess: ops.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "scale_chaos_last_success_timestamp_seconds",
			Help: "When each experiment last passed (Unix time)."}, []string{"experiment"})),
		busy: ops.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: "scale_chaos_running",
			Help: "1 while a scheduled experiment runs."})),
	}
}

// Run starts the schedule and returns when ctx ends, after the run in
// progress (which ctx's end aborts, healing its faults) has finished.
func (s *Scheduler) Run(ctx context.Context) error {
	c := cron.New()
	for _, e := range s.cfg.Experiments {
		if _, err := c.AddFunc(e.Cron, func() { s.Trigger(ctx, e) }); err != nil {
			return fmt.Errorf("schedule %q for %s: %w", e.Cron, e.File, err)
		}
		s.log.Info("scheduled", "file", e.File, "cron", e.Cron)
	}
	c.Start()
	<-ctx.Done()
	<-c.Stop().Done()
	return nil
}

// Trigger runs an entry now, unless another run is in progress: then it is
// skipped and counted, and Trigger returns false.
func (s *Scheduler) Trigger(ctx context.Context, e Entry) bool {
	exp, err := experiment.LoadFile(e.File) // read again: an edited file takes effect at its next run
	name := strings.TrimSuffix(filepath.Base(e.File), filepath.Ext(e.File))
	if err == nil {
		name = exp.Name
	}
	s.mu.Lock()
	if s.running != "" {
		other := s.running
		s.mu.Unlock()
		s.skipped.WithLabelValues(name).Inc()
		s.log.Warn("run skipped: another experiment is running (concurrency forbidden)", "experiment", name, "running", other)
		return false
	}
	s.running = name
	s.mu.Unlock()
	s.busy.Set(1)
	defer func() {
		s.mu.Lock()
		s.running = ""
		s.mu.Unlock()
		s.busy.Set(0)
	}()
	if err != nil {
		s.runs.WithLabelValues(name, "error").Inc()
		s.log.Error("experiment file", "file", e.File, "error", err)
		return true
	}
	s.log.Info("run starting", "experiment", name)
	work, err := os.MkdirTemp("", "chaos-"+name+"-")
	if err != nil {
		s.runs.WithLabelValues(name, "error").Inc()
		s.log.Error("work folder", "error", err)
		return true
	}
	defer os.RemoveAll(work) // Postgres, NATS stores, corpus: only the journal, report and logs are kept
	j := s.run(ctx, exp, work)
	if err := s.keep(name, j, work); err != nil {
		s.log.Error("keeping the run", "experiment", name, "error", err)
	}
	s.runs.WithLabelValues(name, j.Verdict).Inc()
	if j.ExitCode == runner.ExitPassed {
		s.lastSuccess.WithLabelValues(name).SetToCurrentTime()
	}
	s.log.Info("run ended", "experiment", name, "run", j.Run, "verdict", j.Verdict, "exit", j.ExitCode)
	return true
}

// keep writes a run's journal and report (and moves its logs) to
// runs/<experiment>/<run>/, and removes the oldest runs beyond Keep.
func (s *Scheduler) keep(name string, j *runner.Journal, work string) error {
	expDir := filepath.Join(s.dir, "runs", name)
	dir := filepath.Join(expDir, j.Run)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := j.Write(filepath.Join(dir, "journal.json")); err != nil {
		return err
	}
	if err := j.WriteReport(filepath.Join(dir, "report.html")); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(work, "logs"), filepath.Join(dir, "logs")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	runs, err := os.ReadDir(expDir)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(runs))
	for _, r := range runs {
		names = append(names, r.Name())
	}
	slices.Sort(names) // run names end in their start time
	for len(names) > s.cfg.Keep {
		if err := os.RemoveAll(filepath.Join(expDir, names[0])); err != nil {
			return err
		}
		names = names[1:]
	}
	return nil
}

// Runs lists the kept runs, newest first.
func (s *Scheduler) Runs() ([]events.ChaosRun, error) {
	paths, err := filepath.Glob(filepath.Join(s.dir, "runs", "*", "*", "journal.json"))
	if err != nil {
		return nil, err
	}
	var out []events.ChaosRun
	for _, p := range paths {
		j, err := runner.ReadJournal(p)
		if err != nil {
			continue // a run being written
		}
		out = append(out, events.ChaosRun{Experiment: filepath.Base(filepath.Dir(filepath.Dir(p))), Run: j.Run, Verdict: j.Verdict, Started: j.Started, ExitCode: j.ExitCode})
	}
	slices.SortFunc(out, func(a, b events.ChaosRun) int { return b.Started.Compare(a.Started) })
	return out, nil
}

var index = template.Must(template.New("index").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Scale chaos runs</title>
<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em .8em;text-align:left}.passed{color:#1a7f37}.failed,.error{color:#cf222e}.aborted{color:#9a6700}</style>
</head><body><h1>Scheduled chaos runs</h1>
{{if .Running}}<p>Running now: {{.Running}}</p>{{end}}
<table><tr><th>started</th><th>experiment</th><th>run</th><th>verdict</th><th></th></tr>
{{range .Runs}}<tr><td>{{.Started.Format "2006-01-02 15:04:05"}}</td><td>{{.Experiment}}</td><td>{{.Run}}</td>
<td class="{{.Verdict}}">{{.Verdict}} (exit {{.ExitCode}})</td>
<td><a href="runs/{{.Experiment}}/{{.Run}}/report.html">report</a> · <a href="runs/{{.Experiment}}/{{.Run}}/journal.json">journal</a></td></tr>
{{else}}<tr><td colspan="5">No run yet.</td></tr>{{end}}
</table></body></html>`))

// Handler serves the index of kept runs at / (a page) and /runs.json
// (events.ChaosRuns), and their files under /runs/.
func (s *Scheduler) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /runs/", http.StripPrefix("/runs/", http.FileServer(http.Dir(filepath.Join(s.dir, "runs")))))
	list := func(w http.ResponseWriter) (events.ChaosRuns, bool) {
		runs, err := s.Runs()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return events.ChaosRuns{}, false
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return events.ChaosRuns{Running: s.running, Runs: runs}, true
	}
	mux.HandleFunc("GET /runs.json", func(w http.ResponseWriter, _ *http.Request) {
		if idx, ok := list(w); ok {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(idx) //nolint:errcheck // client gone
		}
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		if idx, ok := list(w); ok {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			if err := index.Execute(w, idx); err != nil {
				s.log.Warn("index page", "error", err)
			}
		}
	})
	return mux
}
