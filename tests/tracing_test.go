package tests

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/objstore"
	"github.com/scale-dev/scale/internal/otlprecv"
	"github.com/scale-dev/scale/internal/telemetry"
	"github.com/scale-dev/scale/internal/testenv"
	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/extract"
)

// tracedCorpus copies n files of the shared corpus into a folder.
func tracedCorpus(t *testing.T, n int) string {
	root := testenv.SharedCorpus(t)
	rels, err := corpus.Files(root)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	copyFiles(t, root, rels[:n], func(_ int, rel string) string { return filepath.Join(dir, filepath.Base(rel)) })
	return dir
}

// TestOneTracePerFile sends files through the pipeline (in this process)
// with an in-memory span exporter: each file is one trace, from ingest's
// discovery through extract's read and parse to similarity, and the batch
// work (the Postgres transaction, the publication) is linked from it.
func TestOneTracePerFile(t *testing.T) {
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	restore := telemetry.Use(tp)
	t.Cleanup(restore)

	dir := tracedCorpus(t, 30)
	p := newPipeline(t, testenv.NATS(t).ClientURL())
	w := extract.New(extract.Deps{JS: p.js, Store: p.store, Objects: p.objects, Log: p.log, Metrics: prometheus.NewRegistry()},
		extract.Options{Concurrency: 2, FetchBatch: 8})
	p.background("extract", w.Run)
	p.runSimilarity(similaritySettings, prometheus.NewRegistry())
	res := p.ingest(dir)
	p.waitSimilarity()
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}

	spans := exporter.GetSpans()
	byTrace := map[string][]tracetest.SpanStub{}
	discovered := map[string]string{} // source → trace id
	for _, s := range spans {
		id := s.SpanContext.TraceID().String()
		byTrace[id] = append(byTrace[id], s)
		if s.Name == "discover" {
			for _, a := range s.Attributes {
				if a.Key == "scale.source" {
					discovered[a.Value.AsString()] = id
				}
			}
		}
	}
	if len(discovered) != res.Published {
		t.Fatalf("%d files discovered with a trace, %d published", len(discovered), res.Published)
	}
	a := p.account()
	songs := 0
	for source, id := range discovered {
		names := map[string]int{}
		for _, s := range byTrace[id] {
			names[s.Name]++
		}
		for _, want := range []string{"discover", "process " + events.SubjectDiscovered, "read", "parse"} {
			if names[want] < 1 {
				t.Errorf("%s: trace %s has no %q span: %v", source, id, want, names)
			}
		}
		if names["process "+events.SubjectExtracted] == 1 {
			songs++
			checkParents(t, source, byTrace[id])
		}
	}
	if int64(songs) != a.Songs {
		t.Errorf("%d traces reach similarity, %d files became songs", songs, a.Songs)
	}
	// The batch spans link to the files' spans, and hold the Postgres work.
	linked := map[string]bool{}
	var batchSpans []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == "extract batch" {
			batchSpans = append(batchSpans, s)
			for _, l := range s.Links {
				linked[l.SpanContext.TraceID().String()] = true
			}
		}
	}
	for source, id := range discovered {
		if !linked[id] {
			t.Errorf("%s: no extract batch links to its trace", source)
		}
	}
	pgSpans := 0
	for _, s := range spans {
		for _, b := range batchSpans {
			if s.Parent.SpanID() == b.SpanContext.SpanID() && s.Name != "publish "+events.SubjectExtracted && s.Name != "publish "+events.SubjectFailed {
				pgSpans++
			}
		}
	}
	if pgSpans == 0 {
		t.Error("no Postgres span inside an extract batch (otelpgx)")
	}
}

// checkParents: in one file's trace, extract's span is a child of ingest's
// discovery, read and parse of extract's, and similarity's of extract's.
func checkParents(t *testing.T, source string, trace []tracetest.SpanStub) {
	t.Helper()
	byName := map[string]tracetest.SpanStub{}
	for _, s := range trace {
		byName[s.Name] = s
	}
	for child, parent := range map[string]string{
		"process " + events.SubjectDiscovered: "discover",
		"read":                                "process " + events.SubjectDiscovered,
		"parse":                               "process " + events.SubjectDiscovered,
		"process " + events.SubjectExtracted:  "process " + events.SubjectDiscovered,
	} {
		if byName[child].Parent.SpanID() != byName[parent].SpanContext.SpanID() {
			t.Errorf("%s: %q is not a child of %q", source, child, parent)
		}
	}
}

// spansByFile collects received spans, and finds the services in a file's
// trace.
type spansByFile struct {
	mu    sync.Mutex
	spans []otlprecv.Span
}

func (c *spansByFile) add(s otlprecv.Span) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.spans = append(c.spans, s)
}

// services lists, for the trace of the file at source, the services that
// exported spans into it.
func (c *spansByFile) services(source string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	traceID := ""
	for _, s := range c.spans {
		if s.Name == "discover" && s.Attrs["scale.source"] == source {
			traceID = s.TraceID
		}
	}
	var out []string
	for _, s := range c.spans {
		if traceID != "" && s.TraceID == traceID && !slices.Contains(out, s.Service) {
			out = append(out, s.Service)
		}
	}
	slices.Sort(out)
	return out
}

// TestTracesOverOTLP runs ingest, extract and similarity as the binaries
// they ship as, configured only by the standard OTEL_* variables to export
// to an OTLP/HTTP endpoint: a file's trace arrives joined across the three
// processes, its context carried in the NATS message headers.
func TestTracesOverOTLP(t *testing.T) {
	got := &spansByFile{}
	recv, err := otlprecv.Start(got.add)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(recv.Close)

	dir := tracedCorpus(t, 10)
	files, err := corpus.Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	p := newPipeline(t, testenv.NATS(t).ClientURL())
	otel := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.URL, "OTEL_BSP_SCHEDULE_DELAY=100"}
	p.start("similarity", "similarity", otel...)
	p.start("extract", "extract", otel...)
	ingest := p.start("ingest", "ingest", append(otel, "SCALE_INGEST_SOURCE="+dir)...)
	if err := ingest.Wait(); err != nil {
		t.Fatalf("ingest: %v\n%s", err, ingest.Log())
	}
	p.waitSimilarity()
	var source string // a file that became a song: its trace reaches similarity
	for _, f := range files {
		u, err := objstore.FileURL(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if tag, err := p.store.Pool.Exec(context.Background(), "SELECT 1 FROM songs WHERE source_key = $1", u); err == nil && tag.RowsAffected() == 1 {
			source = u
			break
		}
	}
	if source == "" {
		t.Fatal("no file became a song")
	}
	testenv.Poll(t, "one trace across ingest, extract and similarity", 30*time.Second, func() (bool, []string) {
		services := got.services(source)
		return slices.Equal(services, []string{"extract", "ingest", "similarity"}), services
	})
}
