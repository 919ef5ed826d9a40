package transport

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scale-dev/scale/pkg/events"
)

// PublishBatch publishes events without waiting for each acknowledgement in
// turn, then waits for all of them; it fails if any publication failed. Each
// message carries its event's stable Nats-Msg-Id, so JetStream drops a
// re-publication of the same fact inside the stream's duplicate window.
func PublishBatch[E events.Event](ctx context.Context, js jetstream.JetStream, subject string, evs []E) error {
	acks := make([]jetstream.PubAckFuture, 0, len(evs))
	for _, e := range evs {
		data, err := events.Encode(e)
		if err != nil {
			return fmt.Errorf("encoding %s: %w", subject, err)
		}
		msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
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
