// Package extract is the extract worker: it takes midi.discovered events from the
// shared durable consumer, fetches each file, computes its instrument profile,
// and stores the song (or the failure) in one transaction before acknowledging.
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

	"github.com/scale-dev/scale/internal/midiparse"
	"github.com/scale-dev/scale/internal/objstore"
	"github.com/scale-dev/scale/internal/ops"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/pkg/events"
)

// Settings are the extract flags and SCALE_EXTRACT_* variables.
type Settings struct {
	Concurrency int           `conf:"default:4,help:files processed at once by this process"`
	FetchBatch  int           `conf:"default:32,help:messages pulled per request"`
	AckWait     time.Duration `conf:"default:30s,help:how long a crashed worker holds a file before redelivery"`
}

// Options turns settings into worker options.
func (s Settings) Options() Options {
	return Options(s)
}

// Options size a worker.
type Options struct {
	Concurrency int           // files processed at once
	FetchBatch  int           // messages pulled per request
	AckWait     time.Duration // how long a crashed worker holds a file (default 30 s)
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
	outcomes *prometheus.CounterVec
	duration prometheus.Histogram
	inFlight prometheus.Gauge
}

// New returns a worker.
func New(d Deps, opts Options) *Worker {
	opts.Concurrency = max(opts.Concurrency, 1)
	opts.FetchBatch = max(opts.FetchBatch, 1)
	if opts.AckWait <= 0 {
		opts.AckWait = 30 * time.Second
	}
	return &Worker{
		d:    d,
		opts: opts,
		outcomes: ops.Register(d.Metrics, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scale_extract_messages_total", Help: "midi.discovered messages handled, by outcome (song, failed, retry, poison).",
		}, []string{"outcome"})),
		duration: ops.Register(d.Metrics, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "scale_extract_duration_seconds", Help: "Time to handle one file: fetch, parse, store, publish.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		})),
		inFlight: ops.Register(d.Metrics, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "scale_extract_in_flight", Help: "Files being handled now.",
		})),
	}
}

// Run consumes until ctx ends, then stops pulling, finishes the files in hand
// (and those already pulled) and returns.
func (w *Worker) Run(ctx context.Context) error {
	cons, err := w.d.JS.CreateOrUpdateConsumer(ctx, events.StreamDiscovered, events.ExtractConsumer(w.opts.AckWait))
	if err != nil {
		return fmt.Errorf("creating consumer %s: %w", events.ConsumerExtract, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(w.opts.FetchBatch))
	if err != nil {
		return fmt.Errorf("pulling from %s: %w", events.ConsumerExtract, err)
	}
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			it.Drain() // no more pulls; Next returns what is buffered, then ErrMsgIteratorClosed
		case <-stopped:
		}
	}()
	defer close(stopped)
	// In-flight work finishes even after ctx ends: that is the graceful part.
	workCtx := context.WithoutCancel(ctx)
	slots := make(chan struct{}, w.opts.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	w.d.Log.Info("extract worker started", "concurrency", w.opts.Concurrency, "fetch_batch", w.opts.FetchBatch)
	for {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			w.d.Log.Info("extract worker draining")
			return nil
		}
		if err != nil {
			w.d.Log.Warn("pulling messages", "error", err)
			continue
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			w.Handle(workCtx, msg)
		}()
	}
}

// Handle processes one message and settles it (Ack, Term or Nak).
func (w *Worker) Handle(ctx context.Context, msg jetstream.Msg) {
	w.inFlight.Inc()
	defer w.inFlight.Dec()
	start := time.Now()
	defer func() { w.duration.Observe(time.Since(start).Seconds()) }()

	attempts := 1
	if meta, err := msg.Metadata(); err == nil {
		attempts = int(meta.NumDelivered)
	}
	ev, err := events.Decode[events.Discovered](msg.Data())
	if err != nil {
		// Not a file we can name: nothing to record against, so drop it loudly.
		w.d.Log.Error("dropping undecodable midi.discovered message", "error", err)
		w.outcomes.WithLabelValues("poison").Inc()
		_ = msg.TermWithReason("undecodable event")
		return
	}
	log := w.d.Log.With("source", ev.Source, "attempt", attempts)
	outcome, err := w.process(ctx, ev, attempts)
	if err != nil {
		delay := backoff(attempts)
		log.Warn("transient error; will retry", "error", err, "retry_in", delay)
		w.outcomes.WithLabelValues("retry").Inc()
		_ = msg.NakWithDelay(delay)
		return
	}
	w.outcomes.WithLabelValues(outcome).Inc()
	if outcome == "failed" {
		_ = msg.Term()
		return
	}
	if err := msg.Ack(); err != nil {
		// The outcome is stored; a redelivery repeats it idempotently.
		log.Warn("ack failed", "error", err)
	}
}

// process fetches, parses and records one file; an error means "retry later".
func (w *Worker) process(ctx context.Context, ev events.Discovered, attempts int) (outcome string, err error) {
	data, err := w.d.Objects.Get(ctx, ev.Source, midiparse.MaxFileSize)
	if errors.Is(err, objstore.ErrNotFound) || errors.Is(err, objstore.ErrTooLarge) {
		return "failed", w.fail(ctx, ev, "", err.Error(), attempts)
	}
	if err != nil {
		return "", err
	}
	sum := md5.Sum(data)
	id := hex.EncodeToString(sum[:])
	profile, perr := midiparse.Parse(data)
	if perr != nil {
		return "failed", w.fail(ctx, ev, id, perr.Error(), attempts)
	}
	song := store.Song{
		ID: id, Name: ev.Name, SourceKey: ev.Source, DiscoveredSize: int64(len(data)),
		Format: profile.Format, Tracks: profile.Tracks, TicksPerQuarter: profile.TicksPerQuarter,
		DurationSeconds: profile.DurationSeconds, InitialBPM: profile.InitialBPM,
		InstrumentNotes: make(map[int]int, len(profile.Instruments)),
	}
	out := events.Extracted{Source: ev.Source, SongID: id, Name: ev.Name, At: time.Now().UTC(), Instruments: []events.Instrument{}}
	for _, in := range profile.Instruments {
		if in.Drums {
			song.InstrumentNotes[store.DrumsInstrument] = in.Notes
			out.Instruments = append(out.Instruments, events.Instrument{Drums: true, Notes: in.Notes})
			continue
		}
		program := int(in.Program)
		song.InstrumentNotes[program] = in.Notes
		out.Instruments = append(out.Instruments, events.Instrument{Program: &program, Notes: in.Notes})
	}
	if err := w.d.Store.SaveSong(ctx, song); err != nil {
		return "", err
	}
	if err := events.Publish(ctx, w.d.JS, events.SubjectExtracted, out); err != nil {
		return "", err
	}
	return "song", nil
}

func (w *Worker) fail(ctx context.Context, ev events.Discovered, md5, reason string, attempts int) error {
	if err := w.d.Store.SaveFailure(ctx, store.Failure{SourceKey: ev.Source, MD5: md5, Size: ev.Size, Name: ev.Name, Reason: reason, Attempts: attempts}); err != nil {
		return err
	}
	w.d.Log.Info("file failed", "source", ev.Source, "reason", reason)
	return events.Publish(ctx, w.d.JS, events.SubjectFailed,
		events.Failed{Source: ev.Source, MD5: md5, Reason: reason, Attempts: attempts, At: time.Now().UTC()})
}

// backoff grows with the delivery count: 0.5 s, 1 s, 2 s, ... up to 30 s.
func backoff(attempts int) time.Duration {
	d := 500 * time.Millisecond << min(max(attempts-1, 0), 6)
	return min(d, 30*time.Second)
}
