package events

import (
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

// PipelineStreams returns the streams the pipeline services provision.
//
// MIDI_DISCOVERED is a work queue: each discovery is work for exactly one extract
// worker and is deleted once acknowledged. MIDI_OUTCOMES keeps songs and failures
// under limits retention (a week) because several readers follow it (similarity,
// and the chaos runner's accounting) and each needs every event.
func PipelineStreams(o StreamOptions) []jetstream.StreamConfig {
	discovered := o.stream(StreamDiscovered, SubjectDiscovered)
	discovered.Retention = jetstream.WorkQueuePolicy
	outcomes := o.stream(StreamOutcomes, SubjectExtracted, SubjectFailed)
	outcomes.Retention = jetstream.LimitsPolicy
	outcomes.MaxAge = 7 * 24 * time.Hour
	return []jetstream.StreamConfig{discovered, outcomes}
}

// ChaosStream is the stream of the chaos runner's experiment events (a day).
// Only the chaos runner provisions it and publishes on it.
func ChaosStream(o StreamOptions) jetstream.StreamConfig {
	chaos := o.stream(StreamChaos, SubjectChaos)
	chaos.Retention = jetstream.LimitsPolicy
	chaos.MaxAge = 24 * time.Hour
	return chaos
}

func (o StreamOptions) stream(name string, subjects ...string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:       name,
		Subjects:   subjects,
		Storage:    jetstream.FileStorage,
		Replicas:   max(o.Replicas, 1),
		Duplicates: o.DuplicateWindow,
	}
}

// ExtractConsumer is the durable pull consumer every extract process shares.
// ackWait bounds how long a crashed worker holds a file before it is redelivered;
// MaxDeliver is unlimited because transient failures are retried with backoff,
// while bad files are terminated explicitly.
// maxAckPending bounds the files handed out across every process at once.
func ExtractConsumer(ackWait time.Duration, maxAckPending int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerExtract,
		FilterSubject: SubjectDiscovered,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		MaxAckPending: maxAckPending,
	}
}

// ConsumerSimilarity is the similarity service's durable consumer of songs.
const ConsumerSimilarity = "similarity"

// SimilarityConsumer reads every midi.extracted event from the start of the
// outcomes stream; the service applies them a batch at a time, so no more than
// one batch is handed out unacknowledged.
func SimilarityConsumer(batch int, ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerSimilarity,
		FilterSubject: SubjectExtracted,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		MaxAckPending: max(batch, 1),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}
