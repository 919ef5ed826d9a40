package runner

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/scale-dev/scale/internal/otlprecv"
	"github.com/scale-dev/scale/pkg/events"
)

// StageWindow is where the traced files' time went in one window of the
// run: before the first fault, or while one fault lasted.
type StageWindow struct {
	Window string      `json:"window"` // baseline, or the fault's name
	From   float64     `json:"from_s"` // seconds from the workload's start
	To     float64     `json:"to_s"`
	Stages []StageTime `json:"stages"`
}

// StageTime is one stage's times over the traced files (or, for the work
// done once per batch, batches) whose stage began in a window.
type StageTime struct {
	Stage   string  `json:"stage"`
	Samples int     `json:"samples"`
	Median  float64 `json:"median_s"`
	P90     float64 `json:"p90_s"`
}

// stageNames are the stages of a file's trace, in the order it crosses them.
var stageNames = []string{
	"queue: " + events.SubjectDiscovered, "extract: read", "extract: parse", "extract: store and publish",
	"queue: " + events.SubjectExtracted, "similarity: apply",
}

// stageTimes cuts the services' spans into stage times: each sample is a
// stage's start and its duration.
func stageTimes(spans []otlprecv.Span) map[string][]stageSample {
	byID := make(map[string]otlprecv.Span, len(spans))
	for _, s := range spans {
		byID[s.SpanID] = s
	}
	out := map[string][]stageSample{}
	add := func(stage string, from, to time.Time) {
		if !from.IsZero() && !to.IsZero() {
			// A message can be taken before its publisher's span ends (the
			// span ends after the acknowledgement): no wait, then.
			out[stage] = append(out[stage], stageSample{start: from, d: max(0, to.Sub(from).Seconds())})
		}
	}
	for _, s := range spans {
		parent, hasParent := byID[s.ParentID]
		switch s.Name {
		case "process " + events.SubjectDiscovered:
			if hasParent && parent.Name == "discover" { // published at the end of discovery
				add("queue: "+events.SubjectDiscovered, parent.End, s.Start)
			}
		case "read":
			add("extract: read", s.Start, s.End)
		case "parse":
			add("extract: parse", s.Start, s.End)
		case "extract batch":
			add("extract: store and publish", s.Start, s.End)
		case "process " + events.SubjectExtracted:
			if hasParent { // extract published the outcome as its batch ended, within its file's span
				add("queue: "+events.SubjectExtracted, parent.End, s.Start)
			}
		case "similarity apply":
			add("similarity: apply", s.Start, s.End)
		}
	}
	return out
}

type stageSample struct {
	start time.Time
	d     float64
}

// stageWindows summarises the stage times in the baseline and in each
// fault's window.
func stageWindows(spans []otlprecv.Span, t0 time.Time, faults []FaultRecord, baselineEnd float64) []StageWindow {
	if len(spans) == 0 {
		return nil
	}
	samples := stageTimes(spans)
	window := func(name string, from, to float64) StageWindow {
		w := StageWindow{Window: name, From: from, To: to}
		lo, hi := t0.Add(seconds(from)), t0.Add(seconds(to))
		for _, stage := range stageNames {
			var ds []float64
			for _, s := range samples[stage] {
				if !s.start.Before(lo) && s.start.Before(hi) {
					ds = append(ds, s.d)
				}
			}
			if len(ds) == 0 {
				continue
			}
			slices.Sort(ds)
			w.Stages = append(w.Stages, StageTime{Stage: stage, Samples: len(ds), Median: ds[len(ds)/2], P90: ds[min(len(ds)-1, len(ds)*9/10)]})
		}
		return w
	}
	out := []StageWindow{window("baseline", 0, baselineEnd)}
	for _, f := range faults {
		if f.Healed != nil {
			out = append(out, window(f.Step.Fault, f.Injected, *f.Healed))
		}
	}
	return out
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// explain names, for a fault's window, the working stages (reading,
// parsing, storing, applying: not the queues) that took markedly longer per
// file than before the faults (at least twice the median and 10 ms more),
// the one that added the most first: where the files that crossed the fault
// spent the time. The wait in the work queue is given beside them: it grows
// with any slowdown (the backlog), so it says how much, not where.
func explain(windows []StageWindow, fault string) string {
	if len(windows) == 0 {
		return ""
	}
	base := map[string]StageTime{}
	for _, s := range windows[0].Stages {
		base[s.Stage] = s
	}
	for _, w := range windows[1:] {
		if w.Window != fault {
			continue
		}
		var slower []StageTime
		var queue StageTime
		for _, s := range w.Stages {
			b := base[s.Stage].Median
			switch {
			case s.Stage == "queue: "+events.SubjectDiscovered:
				queue = s
			case strings.HasPrefix(s.Stage, "queue: "):
			case s.Median >= 2*b && s.Median-b >= 0.010:
				slower = append(slower, s)
			}
		}
		slices.SortFunc(slower, func(a, b StageTime) int {
			return cmp.Compare(b.Median-base[b.Stage].Median, a.Median-base[a.Stage].Median)
		})
		var parts []string
		for _, s := range slower {
			parts = append(parts, fmt.Sprintf("%s %s (p90 %s, %d traced; %s before)", s.Stage, ms(s.Median), ms(s.P90), s.Samples, ms(base[s.Stage].Median)))
		}
		where := "no traced working stage was markedly slower than before the faults"
		if len(parts) > 0 {
			where = "the files spent the added time in " + strings.Join(parts, ", then ")
		}
		if queue.Samples > 0 {
			where += fmt.Sprintf("; they waited a median %s in the %s queue (%s before)", ms(queue.Median), events.SubjectDiscovered, ms(base[queue.Stage].Median))
		}
		return fmt.Sprintf("during %s (%.1f–%.1f s) %s", fault, w.From, w.To, where)
	}
	return fmt.Sprintf("no file traced during %s", fault)
}

func ms(s float64) string {
	if s < 1 {
		return fmt.Sprintf("%.1f ms", s*1000)
	}
	return fmt.Sprintf("%.2f s", s)
}
