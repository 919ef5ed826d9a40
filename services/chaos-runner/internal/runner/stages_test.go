package runner

import (
	"strings"
	"testing"
	"time"

	"github.com/scale-dev/scale/internal/otlprecv"
	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
)

// fileTrace is the spans of one traced file, its stages starting at
// start: queue wait q, read r, then similarity's queue wait 0.
func fileTrace(id string, start time.Time, q, r time.Duration) []otlprecv.Span {
	discoverEnd := start
	process := start.Add(q)
	return []otlprecv.Span{
		{Name: "discover", SpanID: id + "d", Start: start.Add(-time.Millisecond), End: discoverEnd},
		{Name: "process " + events.SubjectDiscovered, SpanID: id + "p", ParentID: id + "d", Start: process, End: process.Add(r + time.Millisecond)},
		{Name: "read", SpanID: id + "r", ParentID: id + "p", Start: process, End: process.Add(r)},
		{Name: "process " + events.SubjectExtracted, SpanID: id + "s", ParentID: id + "p", Start: process.Add(r), End: process.Add(r + time.Millisecond)},
	}
}

// TestExplainNamesTheStageThatSlowed: files whose reads take 400 ms during
// a fault (5 ms before) are explained by the read stage, not by the queue,
// whose wait did not grow.
func TestExplainNamesTheStageThatSlowed(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	var spans []otlprecv.Span
	for i := range 10 {
		spans = append(spans, fileTrace("b"+string(rune('a'+i)), t0.Add(time.Duration(i)*100*time.Millisecond), 20*time.Millisecond, 5*time.Millisecond)...)
		spans = append(spans, fileTrace("f"+string(rune('a'+i)), t0.Add(2*time.Second+time.Duration(i)*100*time.Millisecond), 20*time.Millisecond, 400*time.Millisecond)...)
	}
	healed := 4.0
	faults := []FaultRecord{{Step: experiment.Step{Fault: "s3-latency-1"}, Injected: 2, Healed: &healed}}
	windows := stageWindows(spans, t0, faults, 2)
	if len(windows) != 2 {
		t.Fatalf("windows %+v", windows)
	}
	got := explain(windows, "s3-latency-1")
	for _, want := range []string{"added time in extract: read 400.0 ms", "10 traced; 5.0 ms before"} {
		if !strings.Contains(got, want) {
			t.Errorf("explanation %q does not say %q", got, want)
		}
	}
	if strings.Contains(got, "parse") || strings.Contains(got, "similarity") {
		t.Errorf("explanation %q names a stage that did not slow", got)
	}
	if got := explain(windows, "no-such-fault"); !strings.Contains(got, "no file traced") {
		t.Errorf("a fault with no window: %q", got)
	}
}
