package transport

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/scale-dev/scale/internal/ops"
	"github.com/scale-dev/scale/internal/telemetry"
	"github.com/scale-dev/scale/pkg/events"
)

// Delivery is one decoded message of a batch. The handler settles it through
// Msg (Ack, Nak or Term).
type Delivery[E events.Event] struct {
	Msg      jetstream.Msg
	Event    E
	Attempts int // 1 on the first delivery
	// Ctx carries the delivery's span, a child of the trace its message
	// carried: work on this one message (and the events published about it)
	// belongs there. It ends when the handler returns.
	Ctx context.Context
}

// Handler handles a batch of decoded deliveries. Its context is not cancelled
// when the consumer stops: a batch in hand is finished.
type Handler[E events.Event] func(ctx context.Context, batch []Delivery[E])

// BatchFunc handles a fetched batch of raw messages.
type BatchFunc func(ctx context.Context, msgs []jetstream.Msg)

// Middleware wraps the handling of every fetched batch: the one place where
// what every consumer needs (metrics, panic recovery, trace context) goes.
type Middleware func(consumer string, next BatchFunc) BatchFunc

// Consumer describes a durable pull consumer and how to read it.
type Consumer struct {
	Stream     string
	Config     jetstream.ConsumerConfig // Durable names it
	Batch      int                      // messages per fetch (at least 1)
	Loops      int                      // fetch loops sharing the consumer (at least 1)
	Log        *slog.Logger
	Metrics    prometheus.Registerer
	Middleware []Middleware // applied outside the built-in recovery and metrics
}

// fetchWait is how long a pull waits for its batch to fill. A fetch returns
// when the batch is full or this time is up, so when the queue is short a
// message waits at most this long before its smaller batch is handled; when
// it is long, batches fill at once.
const fetchWait = 100 * time.Millisecond

// Retry delays after a failed fetch or consumer lookup: doubling, bounded.
const (
	minRetry = 100 * time.Millisecond
	maxRetry = 5 * time.Second
)

// Consume creates (or updates) the durable consumer and runs c.Loops fetch
// loops over it until ctx ends; each fetched batch is decoded into events of
// type E and handed to h. A message that does not decode is terminated once,
// here, with a log line: nothing can be recorded against a file it cannot
// name. A fetch error (a leadership change, a deleted consumer, NATS away) is
// logged, backed off from, and followed by creating the consumer again; a
// panic in h is logged and its batch's unsettled messages are put back. When
// ctx ends no loop fetches again; batches in hand are finished, then Consume
// returns.
func Consume[E events.Event](ctx context.Context, js jetstream.JetStream, c Consumer, h Handler[E]) error {
	name := c.Config.Durable
	m := newConsumeMetrics(c.Metrics, name)
	handle := m.wrap(name, recovering(name, c.Log, m, decoding(name, c.Log, m, h)))
	for _, mw := range c.Middleware {
		handle = mw(name, handle)
	}
	cons, err := ensureConsumer(ctx, js, c, m)
	if err != nil {
		// ensureConsumer gives up only when ctx ends: a stop before the
		// consumer could be made (NATS away all along) is a clean stop.
		c.Log.Warn("stopped before the consumer could be created", "consumer", name, "error", err)
		return nil
	}
	c.Log.Info("consuming", "stream", c.Stream, "consumer", name, "loops", max(c.Loops, 1), "batch", max(c.Batch, 1))
	var mu sync.Mutex // guards cons when a loop re-creates it
	var wg sync.WaitGroup
	for range max(c.Loops, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fetchLoop(ctx, c, m, handle, func(recreate bool) (jetstream.Consumer, error) {
				mu.Lock()
				defer mu.Unlock()
				if recreate {
					next, err := ensureConsumer(ctx, js, c, m)
					if err != nil {
						return nil, err
					}
					cons = next
				}
				return cons, nil
			})
		}()
	}
	wg.Wait()
	return nil
}

// ensureConsumer creates or updates the durable consumer, retrying with
// backoff until it succeeds or ctx ends.
func ensureConsumer(ctx context.Context, js jetstream.JetStream, c Consumer, m *consumeMetrics) (jetstream.Consumer, error) {
	delay := minRetry
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cons, err := js.CreateOrUpdateConsumer(cctx, c.Stream, c.Config)
		cancel()
		if err == nil {
			return cons, nil
		}
		m.fetchErrors.WithLabelValues(c.Config.Durable).Inc()
		c.Log.Warn("creating consumer; retrying", "consumer", c.Config.Durable, "error", err, "retry_in", delay)
		if !Sleep(ctx, delay) {
			return nil, fmt.Errorf("creating consumer %s: %w", c.Config.Durable, err)
		}
		delay = min(2*delay, maxRetry)
	}
}

// fetchLoop fetches batches until ctx ends. consumer(true) re-creates the
// consumer after a failure.
func fetchLoop(ctx context.Context, c Consumer, m *consumeMetrics, handle BatchFunc, consumer func(recreate bool) (jetstream.Consumer, error)) {
	name := c.Config.Durable
	workCtx := context.WithoutCancel(ctx)
	delay := minRetry
	failed := false
	for ctx.Err() == nil {
		cons, err := consumer(failed)
		if err == nil {
			var batch jetstream.MessageBatch
			if batch, err = cons.Fetch(max(c.Batch, 1), jetstream.FetchMaxWait(fetchWait)); err == nil {
				var msgs []jetstream.Msg
				for msg := range batch.Messages() {
					msgs = append(msgs, msg)
				}
				if len(msgs) > 0 {
					handle(workCtx, msgs)
				}
				err = batch.Error() // after the messages: a fetch can fail part way
			}
		}
		if err == nil {
			failed, delay = false, minRetry
			continue
		}
		failed = true
		m.fetchErrors.WithLabelValues(name).Inc()
		c.Log.Warn("fetching messages; retrying", "consumer", name, "error", err, "retry_in", delay)
		if !Sleep(ctx, delay) {
			return
		}
		delay = min(2*delay, maxRetry)
	}
}

// decoding turns raw messages into deliveries, terminating those that do not
// decode.
func decoding[E events.Event](name string, log *slog.Logger, m *consumeMetrics, h Handler[E]) BatchFunc {
	pending := m.pending.WithLabelValues(name)
	return func(ctx context.Context, msgs []jetstream.Msg) {
		batch := make([]Delivery[E], 0, len(msgs))
		var spans []trace.Span
		defer func() {
			for _, s := range spans {
				s.End()
			}
		}()
		for _, msg := range msgs {
			ev, err := events.Decode[E](msg.Data())
			if err != nil {
				log.Error("terminating an undecodable message", "consumer", name, "subject", msg.Subject(), "error", err)
				m.poison.WithLabelValues(name).Inc()
				_ = msg.TermWithReason("undecodable event")
				continue
			}
			d := Delivery[E]{Msg: msg, Event: ev, Attempts: 1}
			if meta, err := msg.Metadata(); err == nil {
				d.Attempts = int(meta.NumDelivered)
				pending.Set(float64(meta.NumPending))
			}
			var span trace.Span
			d.Ctx, span = telemetry.Tracer().Start(telemetry.Extract(ctx, msg.Headers()), "process "+msg.Subject(),
				trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
					attribute.String("messaging.system", "nats"), attribute.String("messaging.consumer.group.name", name),
					attribute.String("messaging.message.id", ev.MsgID()), attribute.Int("messaging.delivery.attempts", d.Attempts)))
			spans = append(spans, span)
			batch = append(batch, d)
		}
		if len(batch) > 0 {
			h(ctx, batch)
		}
	}
}

// recovering turns a panic while handling a batch into a log line and a Nak
// of every message not settled yet, instead of a dead process: the messages
// come back after a delay that grows with their delivery count.
func recovering(name string, log *slog.Logger, m *consumeMetrics, next BatchFunc) BatchFunc {
	return func(ctx context.Context, msgs []jetstream.Msg) {
		defer func() {
			r := recover()
			if r == nil {
				return
			}
			m.panics.WithLabelValues(name).Inc()
			log.Error("panic while handling a batch; its messages are put back", "consumer", name,
				"panic", fmt.Sprint(r), "messages", len(msgs), "stack", string(debug.Stack()))
			for _, msg := range msgs {
				attempts := 1
				if meta, err := msg.Metadata(); err == nil {
					attempts = int(meta.NumDelivered)
				}
				_ = msg.NakWithDelay(Backoff(attempts)) // settled ones answer ErrMsgAlreadyAckd
			}
		}()
		next(ctx, msgs)
	}
}

// Backoff is the redelivery delay after a message's attempts-th delivery
// failed: 0.5 s, 1 s, 2 s, ... up to 30 s.
func Backoff(attempts int) time.Duration {
	d := 500 * time.Millisecond << min(max(attempts-1, 0), 6)
	return min(d, 30*time.Second)
}

type consumeMetrics struct {
	batches, messages, poison, panics, fetchErrors *prometheus.CounterVec
	duration                                       *prometheus.HistogramVec
	pending                                        *prometheus.GaugeVec
}

// newConsumeMetrics registers the consumers' metrics (once per registry)
// and creates consumer's series.
func newConsumeMetrics(reg prometheus.Registerer, consumer string) *consumeMetrics {
	counter := func(name, help string) *prometheus.CounterVec {
		return ops.Zeroed(ops.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"consumer"})), consumer)
	}
	m := &consumeMetrics{
		batches:     counter("scale_consumer_batches_total", "Fetched batches handled, by durable consumer."),
		messages:    counter("scale_consumer_messages_total", "Messages fetched, by durable consumer."),
		poison:      counter("scale_consumer_poison_total", "Undecodable messages terminated, by durable consumer."),
		panics:      counter("scale_consumer_panics_total", "Batches whose handler panicked (their messages were put back), by durable consumer."),
		fetchErrors: counter("scale_consumer_fetch_errors_total", "Failed fetches or consumer look-ups (each followed by a backoff), by durable consumer."),
		duration: ops.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "scale_consumer_batch_duration_seconds", Help: "Time to handle a fetched batch, by durable consumer.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}, []string{"consumer"})),
		// The backlog as the consumer itself last saw it (each delivery says
		// how many messages wait behind it): the queue lag an autoscaler or
		// a dashboard reads without asking NATS.
		pending: ops.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "scale_consumer_pending_messages", Help: "Messages waiting for the durable consumer after the last one it was delivered, by consumer.",
		}, []string{"consumer"})),
	}
	m.pending.WithLabelValues(consumer)
	return m
}

func (m *consumeMetrics) wrap(name string, next BatchFunc) BatchFunc {
	batches, messages, duration := m.batches.WithLabelValues(name), m.messages.WithLabelValues(name), m.duration.WithLabelValues(name)
	return func(ctx context.Context, msgs []jetstream.Msg) {
		start := time.Now()
		next(ctx, msgs)
		batches.Inc()
		messages.Add(float64(len(msgs)))
		duration.Observe(time.Since(start).Seconds())
	}
}
