package events

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream and consumer names.
const (
	StreamDiscovered = "MIDI_DISCOVERED"
	StreamOutcomes   = "MIDI_OUTCOMES"
	StreamChaos      = "CHAOS"
	ConsumerExtract  = "extract"
)

// StreamOptions are the deployment choices for the streams.
type StreamOptions struct {
	Replicas        int           // 1, or 3 on a clustered NATS
	DuplicateWindow time.Duration // how long a Nats-Msg-Id is remembered
}

// Streams returns the stream definitions.
//
// MIDI_DISCOVERED is a work queue: each discovery is work for exactly one extract
// worker and is deleted once acknowledged. MIDI_OUTCOMES keeps songs and failures
// under limits retention (a week) because several readers follow it (similarity,
// and the chaos runner's accounting) and each needs every event. CHAOS is reserved
// for experiment markers.
func Streams(o StreamOptions) []jetstream.StreamConfig {
	base := func(name string, subjects ...string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:       name,
			Subjects:   subjects,
			Storage:    jetstream.FileStorage,
			Replicas:   o.Replicas,
			Duplicates: o.DuplicateWindow,
		}
	}
	discovered := base(StreamDiscovered, SubjectDiscovered)
	discovered.Retention = jetstream.WorkQueuePolicy
	outcomes := base(StreamOutcomes, SubjectExtracted, SubjectFailed)
	outcomes.Retention = jetstream.LimitsPolicy
	outcomes.MaxAge = 7 * 24 * time.Hour
	chaos := base(StreamChaos, SubjectChaos)
	chaos.Retention = jetstream.LimitsPolicy
	chaos.MaxAge = 24 * time.Hour
	return []jetstream.StreamConfig{discovered, outcomes, chaos}
}

// ExtractConsumer is the durable pull consumer every extract process shares.
// ackWait bounds how long a crashed worker holds a file before it is redelivered;
// MaxDeliver is unlimited because transient failures are retried with backoff,
// while bad files are terminated explicitly.
func ExtractConsumer(ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerExtract,
		FilterSubject: SubjectDiscovered,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		MaxAckPending: 1024,
	}
}

// Provision creates or updates every stream; it is safe to run concurrently and
// repeatedly.
func Provision(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	for _, cfg := range Streams(o) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("provisioning stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// ConsumerSimilarity is the similarity service's durable consumer of songs.
const ConsumerSimilarity = "similarity"

// SimilarityConsumer reads every midi.extracted event from the start of the
// outcomes stream; the service applies them a batch at a time, so no more than
// one batch is handed out unacknowledged.
func SimilarityConsumer(batch int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerSimilarity,
		FilterSubject: SubjectExtracted,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       time.Minute,
		MaxDeliver:    -1,
		MaxAckPending: max(batch, 1),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// PublishBatch publishes events without waiting for each acknowledgement in
// turn, then waits for all of them; it fails if any publication failed.
func PublishBatch[E Event](ctx context.Context, js jetstream.JetStream, subject string, evs []E) error {
	acks := make([]jetstream.PubAckFuture, 0, len(evs))
	for _, e := range evs {
		data, err := Encode(e)
		if err != nil {
			return fmt.Errorf("encoding %s: %w", subject, err)
		}
		ack, err := js.PublishAsync(subject, data, jetstream.WithMsgID(e.MsgID()))
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
