// Package extract is the extract worker: it fetches batches of midi.discovered
// events from the shared durable consumer, fetches each file, computes its
// instrument profile, and stores the batch's songs and failures in one
// transaction before publishing their events and acknowledging.
//
// Outcomes per message:
//   - parsed: song saved, midi.extracted published, Ack;
//   - the file is bad (corrupt, unsupported, gone, too large): failure saved with
//     its reason, midi.failed published, Term (never redelivered);
//   - anything else (S3, Postgres or NATS away): Nak with backoff, nothing recorded.
package extract

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/semaphore"

	"github.com/scale-dev/scale/internal/gm"
	"github.com/scale-dev/scale/internal/midiparse"
	"github.com/scale-dev/scale/internal/objstore"
	"github.com/scale-dev/scale/internal/ops"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/telemetry"
	"github.com/scale-dev/scale/internal/transport"
	"github.com/scale-dev/scale/pkg/events"
)

// Settings are the extract flags and SCALE_EXTRACT_* variables.
type Settings struct {
	Concurrency int           `conf:"default:4,help:batches handled at once by this process"`
	FetchBatch  int           `conf:"default:32,help:messages per batch: fetched together and stored in one transaction"`
	AckWait     time.Duration `conf:"default:30s,help:how long a crashed worker holds a file before redelivery"`
	Reads       int           `conf:"default:128,help:object reads in flight in this process (they overlap: an object store's latency is paid once per round not once per file)"`
	ReadBuffer  int64         `conf:"default:67108864,help:bytes of files being read or parsed at once in this process (announced sizes): reads wait beyond it"`
	// MaxAckPending is the shared consumer's, so every process must agree on it.
	MaxAckPending int `conf:"default:1024,help:files handed out and not yet acknowledged across all extract processes (the shared consumer's MaxAckPending): at least processes × concurrency × fetch batch, or workers wait for messages while the queue is full"`
}

// Options turns settings into worker options.
func (s Settings) Options() Options {
	return Options(s)
}

// Options size a worker.
type Options struct {
	Concurrency int           // batches handled at once (each a fetch loop)
	FetchBatch  int           // messages fetched, and stored in one transaction, per batch
	AckWait     time.Duration // how long a crashed worker holds a file (default 30 s)
	Reads       int           // object reads in flight in the process (default 128: the default 4 loops × 32)
	ReadBuffer  int64         // bytes being read or parsed at once (default 64 MiB)
	// MaxAckPending bounds the files handed out across all processes (default 1,024).
	MaxAckPending int
}

// Deps are the explicit dependencies.
type Deps struct {
	JS      jetstream.JetStream
	Store   *store.Store
	Objects *objstore.Client
	Log     *slog.Logger
	Metrics prometheus.Registerer
}

// Worker processes midi.discovered events.
type Worker struct {
	d        Deps
	opts     Options
	bytes    *semaphore.Weighted // bytes being read or parsed
	outcomes *prometheus.CounterVec
	duration prometheus.Histogram
	inFlight prometheus.Gauge
}

// withDefaults fills the options left zero.
func (opts Options) withDefaults() Options {
	opts.Concurrency = max(opts.Concurrency, 1)
	opts.FetchBatch = max(opts.FetchBatch, 1)
	if opts.AckWait <= 0 {
		opts.AckWait = 30 * time.Second
	}
	if opts.Reads <= 0 {
		opts.Reads = 128
	}
	if opts.ReadBuffer <= 0 {
		opts.ReadBuffer = 64 << 20
	}
	if opts.MaxAckPending <= 0 {
		opts.MaxAckPending = 1024
	}
	return opts
}

// consumer is the configuration of the consumer every process shares.
func (opts Options) consumer() jetstream.ConsumerConfig {
	return events.ExtractConsumer(opts.AckWait, opts.MaxAckPending)
}

// New returns a worker.
func New(d Deps, opts Options) *Worker {
	opts = opts.withDefaults()
	return &Worker{
		d:     d,
		opts:  opts,
		bytes: semaphore.NewWeighted(opts.ReadBuffer),
		outcomes: ops.Zeroed(ops.Register(d.Metrics, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scale_extract_messages_total", Help: "midi.discovered messages handled, by outcome (song, failed, retry); undecodable ones are scale_consumer_poison_total.",
		}, []string{"outcome"})), "song", "failed", "retry"),
		duration: ops.Register(d.Metrics, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "scale_extract_duration_seconds", Help: "Time to handle one file in its batch: fetch, parse, store, publish, settle.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		})),
		inFlight: ops.Register(d.Metrics, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "scale_extract_in_flight", Help: "Files being handled now.",
		})),
	}
}

// Run consumes until ctx ends: Concurrency loops each fetch up to FetchBatch
// messages and handle them as one batch. When ctx ends, no loop fetches again;
// the batches in hand are finished, then Run returns.
func (w *Worker) Run(ctx context.Context) error {
	// opts.Reads goroutines read and parse the files for the worker's life: a
	// goroutine per file started on the smallest stack and grew it (by
	// copying) through the S3 client's deep call chain on every read, 6 % of
	// extract's CPU through versitygw (docs/benchmarks.md).
	reads := make(chan read)
	var readers sync.WaitGroup
	for range w.opts.Reads {
		readers.Go(func() {
			for r := range reads {
				w.read(r)
			}
		})
	}
	err := transport.Consume(ctx, w.d.JS, transport.Consumer{
		Stream: events.StreamDiscovered, Config: w.opts.consumer(),
		Batch: w.opts.FetchBatch, Loops: w.opts.Concurrency, Log: w.d.Log, Metrics: w.d.Metrics,
	}, func(ctx context.Context, batch []transport.Delivery[events.Discovered]) {
		w.handleBatch(ctx, batch, reads)
	})
	close(reads) // Consume has finished every batch it handed out
	readers.Wait()
	w.d.Log.Info("extract worker drained")
	return err
}

// Prepare creates (or updates) the consumer the workers share, so that it
// exists before any worker does: an autoscaler reading its lag finds it (KEDA
// scaled a missing consumer to the maximum) and the workers' first fetch
// finds it configured. `extract migrate` calls it after the migrations.
func Prepare(ctx context.Context, js jetstream.JetStream, opts Options) error {
	if _, err := js.CreateOrUpdateConsumer(ctx, events.StreamDiscovered, opts.withDefaults().consumer()); err != nil {
		return fmt.Errorf("creating the %s consumer: %w", events.ConsumerExtract, err)
	}
	return nil
}

// item is one message of a batch and what became of it.
type item struct {
	transport.Delivery[events.Discovered]
	song      *store.Song
	extracted events.Extracted
	failure   *store.Failure
	failed    events.Failed
	retry     error // transient: Nak
}

// read is one file of a batch handed to a reader.
type read struct {
	it     *item
	weight int64           // its share of the bytes being read or parsed
	done   *sync.WaitGroup // the batch's
}

// read reads and parses one file of a batch, then gives back its bytes.
func (w *Worker) read(r read) {
	defer r.done.Done()
	defer w.bytes.Release(r.weight)
	defer func() {
		if p := recover(); p != nil { // a file that crashes the parser is a bad file, recorded as such
			w.d.Log.Error("panic while reading a file", "source", r.it.Event.Source, "panic", fmt.Sprint(p))
			r.it.fail("", fmt.Sprintf("internal error while parsing: %v", p))
		}
	}()
	w.process(r.it)
}

// handleBatch processes a batch and settles each message (Ack, Term or Nak).
// Songs and failures of the batch are stored in one transaction; their events
// are then published together; only then are the messages acknowledged.
func (w *Worker) handleBatch(ctx context.Context, batch []transport.Delivery[events.Discovered], reads chan<- read) {
	start := time.Now()
	w.inFlight.Add(float64(len(batch)))
	defer w.inFlight.Sub(float64(len(batch)))
	// Every file of the batch is read and parsed at once (bounded by the
	// process's readers and bytes): against an object store that answers in
	// tens of milliseconds the batch pays that latency about once, not once
	// per file.
	items := make([]*item, len(batch))
	var wg sync.WaitGroup
	for i, d := range batch {
		it := &item{Delivery: d}
		items[i] = it
		weight := min(max(d.Event.Size, 1), w.opts.ReadBuffer)
		if err := w.bytes.Acquire(ctx, weight); err != nil {
			it.retry = err
			continue
		}
		wg.Add(1)
		select {
		case reads <- read{it: it, weight: weight, done: &wg}:
		case <-ctx.Done():
			wg.Done()
			w.bytes.Release(weight)
			it.retry = ctx.Err()
		}
	}
	wg.Wait()
	var songs []store.Song
	var failures []store.Failure
	var extracted []events.Extracted
	var failed []events.Failed
	var songTraces, failureTraces, traces []context.Context // each outcome event goes on in its file's trace
	for _, it := range items {
		switch {
		case it.song != nil:
			songs, extracted = append(songs, *it.song), append(extracted, it.extracted)
			songTraces = append(songTraces, it.Ctx)
		case it.failure != nil:
			failures, failed = append(failures, *it.failure), append(failed, it.failed)
			failureTraces = append(failureTraces, it.Ctx)
		}
		traces = append(traces, it.Ctx)
	}
	ctx, span := telemetry.StartBatch(ctx, "extract batch", traces, attribute.Int("scale.songs", len(songs)), attribute.Int("scale.failures", len(failures)))
	err := w.d.Store.SaveOutcomes(ctx, songs, failures)
	if err == nil {
		err = transport.PublishTraced(ctx, w.d.JS, events.SubjectExtracted, extracted, songTraces)
	}
	if err == nil {
		err = transport.PublishTraced(ctx, w.d.JS, events.SubjectFailed, failed, failureTraces)
	}
	telemetry.End(span, err)
	for _, it := range items {
		if err != nil && it.retry == nil {
			it.retry = err // stored or not, a redelivery repeats it idempotently
		}
		switch {
		case it.retry != nil:
			delay := transport.Backoff(it.Attempts)
			w.d.Log.WarnContext(it.Ctx, "transient error; will retry", "source", it.Event.Source, "error", it.retry, "attempt", it.Attempts, "retry_in", delay)
			w.outcomes.WithLabelValues("retry").Inc()
			_ = it.Msg.NakWithDelay(delay)
		case it.failure != nil:
			w.d.Log.InfoContext(it.Ctx, "file failed", "source", it.failure.SourceKey, "reason", it.failure.Reason)
			w.outcomes.WithLabelValues("failed").Inc()
			_ = it.Msg.Term()
		default:
			w.outcomes.WithLabelValues("song").Inc()
			if err := it.Msg.Ack(); err != nil {
				// The outcome is stored; a redelivery repeats it idempotently.
				w.d.Log.Warn("ack failed", "error", err)
			}
		}
		w.duration.Observe(time.Since(start).Seconds())
	}
}

// readBuffers recycles the buffers files are read into: nothing of a file's
// bytes outlives process (its profile and id are copies), and a fresh buffer
// per file cost 4–22 % of extract's CPU at full size (docs/benchmarks.md).
var readBuffers = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledRead bounds the buffers kept: an outsized file's is dropped.
const maxPooledRead = 1 << 20

// process fetches and parses one file and fills in its outcome: a song, a
// failure (the file is bad), or a transient error.
func (w *Worker) process(it *item) {
	ctx, ev := it.Ctx, it.Event
	rctx, read := telemetry.Tracer().Start(ctx, "read", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attribute.String("scale.source", ev.Source)))
	buf := readBuffers.Get().(*[]byte)
	data, err := w.d.Objects.Get(rctx, ev.Source, midiparse.MaxFileSize, *buf)
	telemetry.End(read, err)
	if err == nil && cap(data) <= maxPooledRead {
		defer func() {
			*buf = data[:0]
			readBuffers.Put(buf)
		}()
	}
	if errors.Is(err, objstore.ErrNotFound) || errors.Is(err, objstore.ErrTooLarge) {
		it.fail("", err.Error())
		return
	}
	if err != nil {
		it.retry = err
		return
	}
	sum := md5.Sum(data)
	id := hex.EncodeToString(sum[:])
	_, parse := telemetry.Tracer().Start(ctx, "parse")
	profile, perr := midiparse.Parse(data)
	telemetry.End(parse, perr)
	if perr != nil {
		it.fail(id, perr.Error())
		return
	}
	song := &store.Song{
		ID: id, Name: ev.Name, SourceKey: ev.Source, DiscoveredSize: int64(len(data)),
		Format: profile.Format, Tracks: profile.Tracks, TicksPerQuarter: profile.TicksPerQuarter,
		DurationSeconds: profile.DurationSeconds, InitialBPM: profile.InitialBPM,
		InstrumentNotes: make(map[int]int, len(profile.Instruments)),
	}
	for _, in := range profile.Instruments {
		song.InstrumentNotes[gm.ID(int(in.Program), in.Drums)] = in.Notes
	}
	out := events.Extracted{Source: ev.Source, SongID: id, Name: ev.Name, At: time.Now().UTC(), Instruments: eventInstruments(profile)}
	it.song, it.extracted = song, out
}

// eventInstruments lists a profile's instruments as events carry them: a
// program for each melodic instrument, none for the drums.
func eventInstruments(p midiparse.Profile) []events.Instrument {
	out := make([]events.Instrument, 0, len(p.Instruments))
	for _, in := range p.Instruments {
		ei := events.Instrument{Drums: in.Drums, Notes: in.Notes}
		if !in.Drums {
			program := int(in.Program)
			ei.Program = &program
		}
		out = append(out, ei)
	}
	return out
}

// fail records the item's file as bad; md5 is its content's when it was read.
func (it *item) fail(md5, reason string) {
	ev := it.Event
	it.failure = &store.Failure{SourceKey: ev.Source, MD5: md5, Size: ev.Size, Name: ev.Name, Reason: reason, Attempts: it.Attempts}
	it.failed = events.Failed{Source: ev.Source, MD5: md5, Reason: reason, Attempts: it.Attempts, At: time.Now().UTC()}
}
