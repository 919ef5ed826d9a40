package transport

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/scale-dev/scale/internal/telemetry"
	"github.com/scale-dev/scale/pkg/events"
)

// PublishBatch publishes events without waiting for each acknowledgement in
// turn, then waits for all of them; it fails if any publication failed. Each
// message carries its event's stable Nats-Msg-Id, so JetStream drops a
// re-publication of the same fact inside the stream's duplicate window, and
// the W3C trace context of ctx.
func PublishBatch[E events.Event](ctx context.Context, js jetstream.JetStream, subject string, evs []E) error {
	return PublishTraced(ctx, js, subject, evs, nil)
}

// PublishTraced is PublishBatch where event i carries the trace context of
// traces[i] (the trace of the file it is about) instead of ctx's.
func PublishTraced[E events.Event](ctx context.Context, js jetstream.JetStream, subject string, evs []E, traces []context.Context) (err error) {
	ctx, span := telemetry.Tracer().Start(ctx, "publish "+subject, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", subject),
			attribute.Int("messaging.batch.message_count", len(evs))))
	defer func() { telemetry.End(span, err) }()
	acks := make([]jetstream.PubAckFuture, 0, len(evs))
	for i, e := range evs {
		data, err := events.Encode(e)
		if err != nil {
			return fmt.Errorf("encoding %s: %w", subject, err)
		}
		msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
		if traces != nil {
			telemetry.Inject(traces[i], msg.Header)
		} else {
			telemetry.Inject(ctx, msg.Header)
		}
		ack, err := js.PublishMsgAsync(msg, jetstream.WithMsgID(e.MsgID()))
		if err != nil {
			return fmt.Errorf("publishing %s: %w", subject, err)
		}
		acks = append(acks, ack)
	}
	for _, ack := range acks {
		select {
		case <-ack.Ok():
		case err := <-ack.Err():
			return fmt.Errorf("publishing %s: %w", subject, err)
		case <-ctx.Done():
			return fmt.Errorf("publishing %s: %w", subject, ctx.Err())
		}
	}
	return nil
}
