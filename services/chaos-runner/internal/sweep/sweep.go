// Package sweep attacks every component of the pipeline with every fault
// class that applies, one cell at a time, and finds the single points of
// failure: the components whose loss stops the pipeline or the API for as
// long as they are away. No chaos tool does this by itself: each runs the
// experiment somebody thought of.
//
// Each cell is a run of its own (a fresh environment with the same seeded
// workload and API load), so the cells are independent of each other's
// aftermath and each can be replayed from its journal.
package sweep

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
	"github.com/scale-dev/scale/services/chaos-runner/internal/runner"
)

// Cell is one component attacked with one fault class.
type Cell struct {
	Component string                        `json:"component"` // a row of the matrix: extract-one, nats-leader, ...
	Fault     string                        `json:"fault"`     // a column: the fault type
	Method    experiment.Fault              `json:"method"`
	Env       func(*experiment.Environment) `json:"-"` // what the cell needs of the environment (NATS nodes, hosts)
}

// faultAt is when every cell's fault starts, and faultFor how long it lasts.
const (
	faultAt  = experiment.Duration(1500 * time.Millisecond)
	faultFor = experiment.Duration(4 * time.Second)
)

func cell(component, fault string, target experiment.Target, set func(*experiment.Fault)) Cell {
	f := experiment.Fault{Type: fault, Target: target, At: faultAt, Duration: faultFor}
	if set != nil {
		set(&f)
	}
	return Cell{Component: component, Fault: fault, Method: f}
}

func natsCluster(e *experiment.Environment) { e.NATSNodes = 3 }
func onHosts(e *experiment.Environment)     { e.Network = experiment.Hosts }

// Cells is the full matrix: every component with each fault class that
// applies to it.
func Cells() []Cell {
	one := func(c string) experiment.Target { return experiment.Target{Component: c, Mode: "one"} }
	all := func(c string) experiment.Target { return experiment.Target{Component: c, Mode: "all"} }
	latency := func(f *experiment.Fault) { f.Latency = experiment.Duration(100 * time.Millisecond) }
	primary := experiment.Target{Component: "postgres", Mode: experiment.Primary} // the only server, or the primary of two
	cells := []Cell{
		cell("ingest", "process-kill", one("ingest"), nil),
		cell("extract (one of 2)", "process-kill", one("extract"), nil),
		cell("extract (one of 2)", "process-pause", one("extract"), nil),
		cell("extract (one of 2)", "cpu-quota", one("extract"), func(f *experiment.Fault) { f.CPUs = 0.1 }),
		cell("extract (one of 2)", "network-partition", one("extract"), nil),
		cell("extract (all)", "process-kill", all("extract"), nil),
		cell("similarity", "process-kill", one("similarity"), nil),
		cell("similarity", "process-pause", one("similarity"), nil),
		cell("api", "process-kill", one("api"), nil),
		cell("api", "network-partition", one("api"), func(f *experiment.Fault) { f.From = []string{"postgres"} }),
		cell("nats (leader of 3)", "nats-node-kill", experiment.Target{Component: "nats", Mode: experiment.Leader}, nil),
		cell("nats (edges)", "network-latency", all("nats"), latency),
		cell("nats (one edge of 3)", "network-blackhole", one("nats"), nil),
		cell("nats (work queue)", "queue-stepdown", one("nats"), func(f *experiment.Fault) { f.Duration = 0 }),
		cell("postgres", "postgres-restart", primary, nil),
		cell("postgres", "network-latency", primary, latency),
		cell("postgres", "network-reset", primary, nil),
		cell("s3", "s3-down", one("s3"), nil),
		cell("s3", "network-latency", all("s3"), latency), // one gateway, or both
	}
	for i := range cells {
		switch {
		case strings.HasPrefix(cells[i].Component, "nats"):
			cells[i].Env = natsCluster
		case cells[i].Fault == "network-partition":
			cells[i].Env = onHosts
		}
	}
	return cells
}

// Options are a sweep's settings.
type Options struct {
	Dir     string            // a folder per cell: its journal, report and logs
	Bins    map[string]string // the pipeline's binaries
	Log     *slog.Logger
	Files   int    // synthetic files per cell (default 4,000)
	APIRate int    // API requests per second during each cell (default 100)
	Seed    uint64 // the workload's and every pick's seed
	// HA runs every cell with the remedies for the single points of failure
	// of a plain environment: a synchronous Postgres standby that the runner
	// promotes when the primary is lost, and two API processes and two S3
	// gateways, each pair behind a load balancer.
	HA bool
}

// Result is one cell of the matrix.
type Result struct {
	Cell
	Run       string   `json:"run"`
	Verdict   string   `json:"verdict"` // ok, degraded, stopped, lost, error: see Classify
	Baseline  *float64 `json:"baseline_files_per_s"`
	During    *float64 `json:"during_files_per_s"`
	Dip       *float64 `json:"dip"` // 1 - during/baseline
	APIErrors *float64 `json:"api_error_rate_during"`
	APIP99    *float64 `json:"api_p99_during_s"`
	// APIAnswered is the share of the requests the load sent while the fault
	// lasted that were answered (well or not) before it ended: a request held
	// by a partition is neither an error nor a latency until it is answered.
	APIAnswered *float64 `json:"api_answered_during"`
	Recovery    *float64 `json:"recovery_s"`
	// RanOut is how far into the fault every file had been handed to a
	// worker, when that came before the fault ended: the rate during the
	// fault is measured up to then only, and a short one measures little.
	RanOut     *float64 `json:"work_ran_out_s,omitempty"`
	Accounting string   `json:"accounting"`
	Exact      bool     `json:"exact"`
	Error      string   `json:"error,omitempty"`
	Seconds    float64  `json:"seconds"` // the cell's wall time
}

// Matrix is a whole sweep.
type Matrix struct {
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended"`
	Files   int       `json:"files"`
	APIRate int       `json:"api_rate"`
	Seed    uint64    `json:"seed"`
	HA      bool      `json:"ha"`
	Cells   []Result  `json:"cells"`
	SPOFs   []string  `json:"single_points_of_failure"`
}

// experimentFor is a cell's experiment: the sweep's workload with the
// cell's one fault. Its SLOs only measure (they hold for any value): a
// cell's verdict comes from Classify.
func experimentFor(c Cell, o Options) experiment.Experiment {
	name := strings.NewReplacer(" ", "-", "(", "", ")", "").Replace(strings.ToLower(c.Component + "-" + c.Fault))
	doc := experiment.Experiment{
		Name: name, Seed: o.Seed,
		Environment: experiment.Environment{Type: "local", ExtractWorkers: 2, ExtractConcurrency: 1},
		Workload: experiment.Workload{
			Corpus: experiment.Corpus{Synthetic: &experiment.Synthetic{Files: o.Files, Seed: o.Seed}},
			API:    &experiment.APILoad{Rate: o.APIRate},
		},
		SLOs: []experiment.SLO{
			{Metric: "throughput", Threshold: ">= 0", Phases: []string{"baseline", "during"}},
			{Metric: "api_error_rate", Threshold: "<= 100%", Phases: []string{"during"}},
			{Metric: "api_p99", Threshold: ">= 0", Phases: []string{"during"}},
		},
		Method: []experiment.Fault{c.Method},
	}
	if c.Env != nil {
		c.Env(&doc.Environment)
	}
	if o.HA {
		doc.Environment.PostgresStandby, doc.Environment.APIReplicas, doc.Environment.S3Gateways = true, 2, 2
	}
	return doc
}

// Run runs every cell in turn and returns the matrix; ctx ending stops it
// after the cell in progress (which it aborts, healing its fault).
func Run(ctx context.Context, cells []Cell, o Options) (*Matrix, error) {
	if o.Files == 0 {
		o.Files = 4000
	}
	if o.APIRate == 0 {
		o.APIRate = 100
	}
	m := &Matrix{Started: time.Now().UTC(), Files: o.Files, APIRate: o.APIRate, Seed: o.Seed, HA: o.HA}
	for i, c := range cells {
		if ctx.Err() != nil {
			break
		}
		exp, err := experiment.Parse(mustYAML(experimentFor(c, o)))
		if err != nil {
			return nil, fmt.Errorf("cell %s × %s: %w", c.Component, c.Fault, err)
		}
		dir := filepath.Join(o.Dir, fmt.Sprintf("%02d-%s", i+1, exp.Name))
		o.Log.Info("sweep cell", "n", i+1, "of", len(cells), "component", c.Component, "fault", c.Fault)
		start := time.Now()
		j := runner.Run(ctx, exp, runner.Options{Dir: dir, Bins: o.Bins, Log: o.Log.With("cell", exp.Name)})
		if err := j.Write(filepath.Join(dir, "journal.json")); err != nil {
			return nil, err
		}
		if err := j.WriteReport(filepath.Join(dir, "report.html")); err != nil {
			return nil, err
		}
		keepOnly(dir, "journal.json", "report.html", "logs")
		r := result(c, j, o.Files)
		r.Seconds = time.Since(start).Seconds()
		m.Cells = append(m.Cells, r)
		o.Log.Info("sweep cell done", "component", c.Component, "fault", c.Fault, "verdict", r.Verdict)
	}
	m.Ended = time.Now().UTC()
	m.SPOFs = spofs(m.Cells)
	return m, nil
}

// keepOnly removes everything in dir but the names given: a cell's Postgres
// data, NATS stores and corpus are large and of no use once it has ended.
func keepOnly(dir string, names ...string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !slices.Contains(names, e.Name()) {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// mustYAML writes an experiment as the document experiment.Parse reads
// (JSON is YAML), so that every cell passes the same checks as a file.
func mustYAML(e experiment.Experiment) []byte {
	data, err := json.Marshal(e)
	if err != nil {
		panic(err) // an Experiment always marshals
	}
	return data
}

// result reads a cell's journal (a workload of files files).
func result(c Cell, j *runner.Journal, files int) Result {
	r := Result{Cell: c, Run: j.Run}
	for _, s := range j.SLOs {
		switch {
		case s.Metric == "throughput" && s.Phase == "baseline":
			r.Baseline = s.Value
		case s.Metric == "throughput" && s.Phase == "during":
			r.During = s.Value
		case s.Metric == "api_error_rate" && s.Phase == "during":
			r.APIErrors = s.Value
		case s.Metric == "api_p99" && s.Phase == "during":
			r.APIP99 = s.Value
		}
	}
	if r.Baseline != nil && r.During != nil && *r.Baseline > 0 {
		dip := 1 - *r.During / *r.Baseline
		r.Dip = &dip
	}
	ranOut, didRunOut := runner.WorkRanOut(j.Samples, files)
	for _, f := range j.Faults {
		if f.Error != "" {
			r.Error = f.Error
		}
		r.Recovery = f.Recovery
		if didRunOut && f.Healed != nil && ranOut < *f.Healed {
			into := max(ranOut-f.Injected, 0)
			r.RanOut = &into
		}
		if f.Healed != nil && *f.Healed-f.Injected >= 1 && j.Experiment.Workload.API != nil {
			answered := 0
			for _, s := range j.Samples {
				if s.API != nil && s.T > f.Injected && s.T <= *f.Healed {
					answered += s.API.Requests
				}
			}
			share := float64(answered) / (float64(j.Experiment.Workload.API.Rate) * (*f.Healed - f.Injected))
			r.APIAnswered = &share
		}
	}
	if j.Accounting != nil {
		r.Accounting = j.Accounting.String()
		r.Exact = j.Accounting.OK() && (j.Similar == nil || j.Similar.OK())
	}
	if j.Verdict == "error" && r.Error == "" && len(j.Reasons) > 0 {
		r.Error = strings.Join(j.Reasons, "; ")
	}
	r.Verdict = Classify(r, j.Verdict == "error")
	return r
}

// stoppedDip is the dip past which the pipeline counts as stopped: the
// during window starts with the batches in hand, which finish whatever the
// fault (Postgres restarted: 91 %, S3 down: 90 % in the first sweep).
const stoppedDip = 0.85

// Classify gives a cell its verdict:
//   - error: the run or the fault could not be carried out;
//   - lost: a file was lost, stuck or counted twice, or a similar list is wrong;
//   - stopped: while the fault lasted the pipeline finished little more than
//     the work it had in hand (under 15 % of its baseline rate), or most API
//     requests failed (50 % or more) or went unanswered;
//   - degraded: the pipeline ran at under half its rate, over 1 % of API
//     requests failed, or the API's p99 latency passed a second (a request
//     held by a partition may still succeed, late);
//   - ok: neither.
func Classify(r Result, runError bool) string {
	switch {
	case runError || r.Error != "":
		return "error"
	case !r.Exact:
		return "lost"
	case r.Dip != nil && *r.Dip > stoppedDip, r.APIErrors != nil && *r.APIErrors >= 0.5, r.APIAnswered != nil && *r.APIAnswered < 0.5:
		return "stopped"
	case r.Dip != nil && *r.Dip > 0.5, r.APIErrors != nil && *r.APIErrors > 0.01, r.APIP99 != nil && *r.APIP99 > 1:
		return "degraded"
	}
	return "ok"
}

// spofs names the cells where losing one component stopped the pipeline or
// the API: the single points of failure.
func spofs(cells []Result) []string {
	var out []string
	for _, c := range cells {
		if c.Verdict != "stopped" || c.Fault == "network-latency" || c.Fault == "cpu-quota" || c.Method.Target.Mode == "all" {
			continue // a slowed component is not a lost one, and all the workers are not one component
		}
		what := "the pipeline"
		apiStopped := c.APIErrors != nil && *c.APIErrors >= 0.5 || c.APIAnswered != nil && *c.APIAnswered < 0.5
		if c.Dip == nil || *c.Dip <= stoppedDip {
			what = "the API"
		} else if apiStopped {
			what = "the pipeline and the API"
		}
		out = append(out, fmt.Sprintf("%s (%s): %s stopped while it lasted", c.Component, c.Fault, what))
	}
	return out
}

// Write writes the matrix as JSON and as a self-contained HTML page.
func (m *Matrix) Write(dir string) (jsonPath, htmlPath string, err error) {
	jsonPath, htmlPath = filepath.Join(dir, "sweep.json"), filepath.Join(dir, "sweep.html")
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(jsonPath, data, 0o644); err != nil {
		return "", "", err
	}
	f, err := os.Create(htmlPath)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	return jsonPath, htmlPath, page.Execute(f, m.grid())
}

// grid is the matrix as rows (components) and columns (faults).
type grid struct {
	*Matrix
	Faults []string
	Rows   []row
}

type row struct {
	Component string
	Cells     []*Result // by column; nil where the fault does not apply
}

func (m *Matrix) grid() grid {
	g := grid{Matrix: m}
	byRow := map[string]*row{}
	for i := range m.Cells {
		c := &m.Cells[i]
		if !slices.Contains(g.Faults, c.Fault) {
			g.Faults = append(g.Faults, c.Fault)
		}
		if byRow[c.Component] == nil {
			g.Rows = append(g.Rows, row{Component: c.Component})
			byRow[c.Component] = &g.Rows[len(g.Rows)-1]
		}
	}
	for i := range g.Rows {
		g.Rows[i].Cells = make([]*Result, len(g.Faults))
	}
	for i := range m.Cells {
		c := &m.Cells[i]
		for k := range g.Rows {
			if g.Rows[k].Component == c.Component {
				g.Rows[k].Cells[slices.Index(g.Faults, c.Fault)] = c
			}
		}
	}
	return g
}

var page = template.Must(template.New("sweep").Funcs(template.FuncMap{
	"pct":  pctText,
	"secs": secsText,
	"rate": func(v *float64) string {
		if v == nil {
			return "–"
		}
		return fmt.Sprintf("%.0f/s", *v)
	},
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Scale resilience sweep</title>
<style>
body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.4em;vertical-align:top;font-size:.85em}
td.ok{background:#dafbe1}td.degraded{background:#fff8c5}td.stopped{background:#ffd8b5}td.lost,td.error{background:#ffcecb}td.none{background:#f6f8fa}
td b{display:block;font-size:1.1em}
</style></head><body>
<h1>Resilience sweep</h1>
<p>{{if .HA}}With the remedies: a Postgres standby promoted by the runner, two API processes and two S3 gateways behind load balancers. {{else}}One Postgres server, one API process, one S3 gateway. {{end}}{{.Files}} synthetic files and {{.APIRate}} API requests/s per cell, seed {{.Seed}}; {{len .Cells}} cells from {{.Started.Format "2006-01-02 15:04"}} to {{.Ended.Format "15:04"}} UTC.
Each cell: one fault for 4 s from 1.5 s into the workload. <b>ok</b> · <b>degraded</b>: under half the rate, over 1 % API errors, or an API p99 over 1 s · <b>stopped</b>: under 15 % of the rate, or half the API requests failing or unanswered · <b>lost</b>: a file lost or counted twice.</p>
<h2>Single points of failure</h2>
{{if .SPOFs}}<ul>{{range .SPOFs}}<li>{{.}}</li>{{end}}</ul>{{else}}<p>None found.</p>{{end}}
<h2>Matrix</h2>
<table><tr><th>component</th>{{range .Faults}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr><th>{{.Component}}</th>{{range .Cells}}{{if .}}<td class="{{.Verdict}}"><b>{{.Verdict}}</b>
files {{rate .Baseline}} → {{rate .During}}<br>API answered {{pct .APIAnswered}}, errors {{pct .APIErrors}}, p99 {{secs .APIP99}}<br>recovery {{secs .Recovery}}<br>{{if .RanOut}}the work ran out {{secs .RanOut}} into the fault<br>{{end}}{{if .Exact}}0 lost, 0 duplicated{{else}}{{.Accounting}}{{end}}{{if .Error}}<br>{{.Error}}{{end}}</td>{{else}}<td class="none"></td>{{end}}{{end}}</tr>
{{end}}</table>
</body></html>`))

// Summary is the matrix as text: a line per cell, then the single points of
// failure.
func (m *Matrix) Summary() string {
	var b strings.Builder
	env := "one Postgres server, one API process, one S3 gateway"
	if m.HA {
		env = "a Postgres standby, two API processes, two S3 gateways"
	}
	fmt.Fprintf(&b, "sweep (%s): %d cells in %s\n", env, len(m.Cells), m.Ended.Sub(m.Started).Round(time.Second))
	for _, c := range m.Cells {
		fmt.Fprintf(&b, "  %-9s %-22s %-18s dip %-5s API answered %-5s errors %-5s p99 %-6s recovery %-6s %s\n", c.Verdict, c.Component, c.Fault,
			pctText(c.Dip), pctText(c.APIAnswered), pctText(c.APIErrors), secsText(c.APIP99), secsText(c.Recovery), map[bool]string{true: "exact", false: c.Accounting}[c.Exact])
		if c.RanOut != nil {
			fmt.Fprintf(&b, "            the work ran out %s into the fault: its rate is measured over that only (more files measure more)\n", secsText(c.RanOut))
		}
	}
	if len(m.SPOFs) == 0 {
		b.WriteString("single points of failure: none found\n")
	} else {
		b.WriteString("single points of failure:\n")
		for _, s := range m.SPOFs {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	return b.String()
}

func pctText(v *float64) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", *v*100)
}

func secsText(v *float64) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf("%.1fs", *v)
}
