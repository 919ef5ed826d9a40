package runner

import (
	"bytes"
	_ "embed" // the report's template
	"fmt"
	"html/template"
	"math"
	"os"
	"strings"
)

//go:embed report.html.tmpl
var reportTemplate string

// WriteReport writes the journal as a self-contained HTML page (no external
// assets: the charts are inline SVG): throughput, backlog, API latency and
// errors over time with the fault windows shaded, the SLO verdicts, every
// fault with its recovery, and the accounting.
func (j *Journal) WriteReport(path string) error {
	t, err := template.New("report").Funcs(template.FuncMap{
		"value": func(r SLOResult) string {
			if r.Value == nil {
				return "—"
			}
			return formatValue(r.Metric, *r.Value)
		},
		"secs": func(p *float64) string {
			if p == nil {
				return "—"
			}
			return fmt.Sprintf("%.2f s", *p)
		},
		"join":       strings.Join,
		"stageNames": func() []string { return stageNames },
		"stageCells": func(w StageWindow) []string {
			cells := make([]string, len(stageNames))
			for i, name := range stageNames {
				cells[i] = "—"
				for _, s := range w.Stages {
					if s.Stage == name {
						cells[i] = fmt.Sprintf("%s (%s), %d", ms(s.Median), ms(s.P90), s.Samples)
					}
				}
			}
			return cells
		},
		"pct": func(p *float64) float64 {
			if p == nil {
				return 0
			}
			return *p * 100
		},
	}).Parse(reportTemplate)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, struct {
		*Journal
		Charts []template.HTML
	}{j, j.charts()}); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// series is one line of a chart.
type series struct {
	name, color string
	points      [][2]float64 // (t, value)
}

// charts draws the run's time series.
func (j *Journal) charts() []template.HTML {
	var windows [][2]float64
	for _, f := range j.Faults {
		end := f.Injected + 0.05
		if f.Healed != nil {
			end = *f.Healed
		}
		windows = append(windows, [2]float64{f.Injected, end})
	}
	var rate, backlog, p50, p99, errRate []([2]float64)
	for i, s := range j.Samples {
		backlog = append(backlog, [2]float64{s.T, float64(s.Backlog)})
		// Files/s over the trailing second.
		k := i
		for k > 0 && s.T-j.Samples[k-1].T <= 1 {
			k--
		}
		if k < i {
			from := j.Samples[k]
			rate = append(rate, [2]float64{s.T, float64(s.Finished-from.Finished) / (s.T - from.T)})
		}
		if s.API != nil && s.API.Requests > 0 {
			p50 = append(p50, [2]float64{s.T, 1000 * s.API.P50})
			p99 = append(p99, [2]float64{s.T, 1000 * s.API.P99})
			errRate = append(errRate, [2]float64{s.T, 100 * float64(s.API.Errors) / float64(s.API.Requests)})
		}
	}
	out := []template.HTML{
		chart("Throughput (files finished per second, trailing 1 s)", "files/s", windows, series{"files/s", "#1f77b4", rate}),
		chart("Backlog (extract consumer: pending + unacknowledged)", "messages", windows, series{"backlog", "#ff7f0e", backlog}),
	}
	if len(p99) > 0 {
		out = append(out,
			chart("API latency (per 250 ms window)", "ms", windows, series{"p50", "#2ca02c", p50}, series{"p99", "#d62728", p99}),
			chart("API errors", "% of requests", windows, series{"errors", "#9467bd", errRate}))
	}
	return out
}

// chart draws an SVG line chart with shaded fault windows.
func chart(title, unit string, windows [][2]float64, lines ...series) template.HTML {
	const w, h, left, right, top, bottom = 860.0, 220.0, 60.0, 20.0, 28.0, 30.0
	tmax, vmax := 1.0, 0.0
	for _, l := range lines {
		for _, p := range l.points {
			tmax, vmax = math.Max(tmax, p[0]), math.Max(vmax, p[1])
		}
	}
	for _, win := range windows {
		tmax = math.Max(tmax, win[1])
	}
	if vmax == 0 {
		vmax = 1
	}
	vmax *= 1.1
	x := func(t float64) float64 { return left + (w-left-right)*t/tmax }
	y := func(v float64) float64 { return h - bottom - (h-top-bottom)*v/vmax }
	var b strings.Builder
	fmt.Fprintf(&b, `<figure><svg class="chart" viewBox="0 0 %.0f %.0f" width="100%%" role="img" aria-label="%s">`, w, h, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<text x="%.0f" y="18" class="title">%s</text>`, left, template.HTMLEscapeString(title))
	for _, win := range windows {
		fmt.Fprintf(&b, `<rect class="fault" x="%.1f" y="%.0f" width="%.1f" height="%.0f"/>`, x(win[0]), top, math.Max(1, x(win[1])-x(win[0])), h-top-bottom)
	}
	for i := 0; i <= 4; i++ {
		v := vmax * float64(i) / 4
		fmt.Fprintf(&b, `<line class="grid" x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f"/><text class="tick" x="%.0f" y="%.1f" text-anchor="end">%s</text>`,
			left, w-right, y(v), y(v), left-6, y(v)+4, tick(v))
		tv := tmax * float64(i) / 4
		fmt.Fprintf(&b, `<text class="tick" x="%.1f" y="%.0f" text-anchor="middle">%s s</text>`, x(tv), h-10, tick(tv))
	}
	fmt.Fprintf(&b, `<text class="tick" x="8" y="%.0f" transform="rotate(-90 8 %.0f)" text-anchor="middle">%s</text>`, h/2, h/2, template.HTMLEscapeString(unit))
	for i, l := range lines {
		var pts []string
		for _, p := range l.points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p[0]), y(p[1])))
		}
		fmt.Fprintf(&b, `<polyline class="line" stroke="%s" points="%s"/>`, l.color, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<text class="legend" x="%.0f" y="18" fill="%s">%s</text>`, w-right-70*float64(len(lines)-i), l.color, template.HTMLEscapeString(l.name))
	}
	b.WriteString(`</svg></figure>`)
	return template.HTML(b.String()) //nolint:gosec // built from numbers and escaped text
}

func tick(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0fk", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.1f", v)
	}
}
