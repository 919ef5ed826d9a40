// Package ingest lists MIDI objects in a bucket or folder, records each in
// Postgres and publishes one midi.discovered event per file that still needs
// extracting. Re-running it publishes nothing for files already done.
package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/objstore"
	"github.com/scale-dev/scale/internal/ops"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/telemetry"
	"github.com/scale-dev/scale/internal/transport"
	"github.com/scale-dev/scale/pkg/events"
)

// Settings are the ingest flags and SCALE_INGEST_* variables.
type Settings struct {
	Source    string `conf:"help:s3://bucket/prefix or a folder; empty: the shared sample corpus ($SCALE_SHARED_MIDI or else the first shared/midi beside the working folder or a parent)"`
	NamesJSON string `conf:"help:LMD-style md5_to_paths.json giving song names"`
}

// Options turns settings into run options, defaulting the source to the shared corpus.
func (s Settings) Options(progress io.Writer) (Options, error) {
	if s.Source == "" {
		dir, err := corpus.SharedDir()
		if err != nil {
			return Options{}, err
		}
		s.Source = dir
	}
	return Options{Source: s.Source, NamesJSON: s.NamesJSON, Progress: progress}, nil
}

// Options of one ingest run.
type Options struct {
	Source    string    // s3://bucket/prefix, or a folder
	NamesJSON string    // optional LMD-style md5_to_paths.json
	Progress  io.Writer // progress lines; nil for none
}

// Deps are the explicit dependencies.
type Deps struct {
	JS      jetstream.JetStream
	Store   *store.Store
	Objects *objstore.Client
	Log     *slog.Logger
	Metrics prometheus.Registerer
}

// Result counts one run.
type Result struct {
	Listed    int // MIDI objects found
	Published int // discovered events published (new or still pending files)
	Finished  int // files already done or failed, skipped
}

type metrics struct {
	listed, published, skipped prometheus.Counter
	retries                    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		listed:    ops.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "scale_ingest_listed_total", Help: "MIDI objects listed."})),
		published: ops.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "scale_ingest_published_total", Help: "midi.discovered events published."})),
		skipped:   ops.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "scale_ingest_skipped_total", Help: "Listed files already extracted or failed."})),
		retries: ops.Zeroed(ops.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scale_ingest_retries_total",
			Help: "Listings resumed after an S3 error, and batches recorded or published again after a Postgres or NATS error, by step."}, []string{"step"})), "list", "flush"),
	}
}

// retry waits out a failed attempt (the attempt-th in a row) and reports
// whether to try again: false once ctx has ended.
func retry(ctx context.Context, log *slog.Logger, c prometheus.Counter, attempt int, msg string, err error, args ...any) bool {
	delay := transport.Backoff(attempt)
	c.Inc()
	log.Warn(msg, append(args, "error", err, "attempt", attempt, "retry_in", delay)...)
	return transport.Sleep(ctx, delay)
}

// batchSize is how many listed files are recorded and published together.
const batchSize = 500

// Run lists opts.Source once and returns what it did.
func Run(ctx context.Context, d Deps, opts Options) (Result, error) {
	var res Result
	names, err := loadNames(opts.NamesJSON)
	if err != nil {
		return res, err
	}
	m := newMetrics(d.Metrics)
	start, lastReport := time.Now(), time.Now()
	report := func(final bool) {
		if opts.Progress == nil || (!final && time.Since(lastReport) < time.Second) {
			return
		}
		lastReport = time.Now()
		fmt.Fprintf(opts.Progress, "ingest: %d listed, %d published, %d already finished (%.0f files/s)\n",
			res.Listed, res.Published, res.Finished, float64(res.Listed)/time.Since(start).Seconds())
	}
	// Files are recorded and published a batch at a time: one statement for the
	// batch's rows, and publications that wait for their acknowledgements
	// together (see docs/benchmarks.md for the effect).
	batch := make([]store.DiscoveredFile, 0, batchSize)
	flushOnce := func() (err error) {
		if len(batch) == 0 {
			return nil
		}
		ctx, span := telemetry.Tracer().Start(ctx, "ingest batch", trace.WithAttributes(attribute.Int("scale.files", len(batch))))
		defer func() { telemetry.End(span, err) }()
		statuses, err := d.Store.RecordDiscovered(ctx, batch)
		if err != nil {
			return err
		}
		var pending []events.Discovered
		var traces []context.Context // each new file starts a trace of its own, which extract and similarity continue
		var fileSpans []trace.Span
		for i, f := range batch {
			if statuses[i] == "pending" {
				pending = append(pending, events.Discovered{Source: f.SourceKey, MD5: f.MD5, Size: f.Size, Name: f.Name, At: time.Now().UTC()})
				fctx, fspan := telemetry.Tracer().Start(ctx, "discover", trace.WithNewRoot(), trace.WithLinks(trace.LinkFromContext(ctx)),
					trace.WithAttributes(attribute.String("scale.source", f.SourceKey)))
				traces, fileSpans = append(traces, fctx), append(fileSpans, fspan)
			}
		}
		err = transport.PublishTraced(ctx, d.JS, events.SubjectDiscovered, pending, traces)
		for _, fs := range fileSpans {
			telemetry.End(fs, err)
		}
		if err != nil {
			return err
		}
		res.Published += len(pending)
		m.published.Add(float64(len(pending)))
		res.Finished += len(batch) - len(pending)
		m.skipped.Add(float64(len(batch) - len(pending)))
		batch = batch[:0]
		report(false)
		return nil
	}
	// A batch that cannot be recorded or published (Postgres or NATS away)
	// is tried again until it goes through: recording is an upsert, and a
	// republished event carries the same Nats-Msg-Id, so JetStream drops the
	// copy.
	flush := func() error {
		for attempt := 1; ; attempt++ {
			err := flushOnce()
			if err == nil || !retry(ctx, d.Log, m.retries.WithLabelValues("flush"), attempt, "recording or publishing a batch failed; retrying", err, "files", len(batch)) {
				return err
			}
		}
	}
	// A listing that fails on the way (S3 away or overloaded) resumes after
	// the last key it gave, once the server answers again.
	var after string
	for attempt := 1; ; attempt++ {
		resumedAt := after
		err = d.Objects.List(ctx, opts.Source, after, func(o objstore.Object) error {
			res.Listed++
			m.listed.Inc()
			after = o.Key
			batch = append(batch, store.DiscoveredFile{SourceKey: o.URL, MD5: o.MD5, Size: o.Size, Name: songName(o, names)})
			if len(batch) == batchSize {
				return flush()
			}
			return nil
		})
		if after != resumedAt {
			attempt = 1 // progress since the last failure: back off from the start
		}
		if err == nil || !objstore.Transient(err) || !retry(ctx, d.Log, m.retries.WithLabelValues("list"), attempt, "listing failed; resuming", err, "after", after) {
			break
		}
	}
	if err == nil {
		err = flush()
	}
	report(true)
	if err != nil {
		return res, fmt.Errorf("ingesting %s: %w", opts.Source, err)
	}
	d.Log.Info("ingest finished", "source", opts.Source, "listed", res.Listed, "published", res.Published,
		"already_finished", res.Finished, "seconds", time.Since(start).Seconds())
	return res, nil
}

// loadNames reads an LMD-style md5_to_paths.json: {"<md5>": ["path/Name.mid", ...]}.
func loadNames(file string) (map[string][]string, error) {
	if file == "" {
		return nil, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading song names: %w", err)
	}
	var names map[string][]string
	if err := json.Unmarshal(data, &names); err != nil {
		return nil, fmt.Errorf("decoding song names in %s: %w", file, err)
	}
	return names, nil
}

var md5Name = regexp.MustCompile(`^[0-9a-f]{32}$`)

// songName is names[md5][0] when the names file knows the file (by its content
// MD5, or by its file name, as LMD names files by MD5), else the file's own name;
// either without extension and with _ and - as spaces.
func songName(o objstore.Object, names map[string][]string) string {
	base := path.Base(strings.ReplaceAll(o.Key, "\\", "/"))
	stem := strings.TrimSuffix(base, path.Ext(base))
	for _, id := range []string{o.MD5, strings.ToLower(stem)} {
		if md5Name.MatchString(id) && len(names[id]) > 0 {
			stem = path.Base(names[id][0])
			stem = strings.TrimSuffix(stem, path.Ext(stem))
			break
		}
	}
	name := strings.Join(strings.Fields(strings.NewReplacer("_", " ", "-", " ").Replace(stem)), " ")
	if name == "" {
		return base
	}
	return name
}
