package local

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
)

// consumers are the pipeline's durable consumers by the component that
// reads them, with their streams.
var consumers = map[string]struct{ stream, name string }{
	"extract":    {events.StreamDiscovered, events.ConsumerExtract},
	"similarity": {events.StreamOutcomes, events.ConsumerSimilarity},
}

// streams are the pipeline's streams by their name in experiment files.
var streams = map[string]string{"discovered": events.StreamDiscovered, "outcomes": events.StreamOutcomes}

// queueFault changes a consumer or a stream through the JetStream API, as an
// operator's edit or a NATS incident would, and returns how to put it back:
//   - queue-redelivery: the consumer's ack wait cut below the time the work
//     takes, so every message is delivered again while it is being handled;
//   - queue-saturation: the consumer's ack-pending limit cut, so the servers
//     hand out at most that many messages at a time;
//   - queue-stepdown: the stream's leader asked to step down (a new election);
//   - queue-reject: the stream stops taking the pipeline's subjects, so every
//     publish to them is refused until it is healed.
func (e *Env) queueFault(ctx context.Context, step experiment.Step) (func(context.Context) error, error) {
	js := e.Conn.JS
	switch step.Type {
	case "queue-redelivery", "queue-saturation":
		c, ok := consumers[step.Targets[0]]
		if !ok {
			return nil, fmt.Errorf("%s reads no consumer", step.Targets[0])
		}
		cons, err := js.Consumer(ctx, c.stream, c.name)
		if err != nil {
			return nil, fmt.Errorf("consumer %s: %w", c.name, err)
		}
		before := cons.CachedInfo()
		orig := before.Config
		changed := orig
		if step.Type == "queue-redelivery" {
			changed.AckWait = step.AckWait.D()
		} else {
			changed.MaxAckPending = step.MaxAckPending
		}
		if _, err := js.UpdateConsumer(ctx, c.stream, changed); err != nil {
			return nil, fmt.Errorf("changing consumer %s: %w", c.name, err)
		}
		return func(ctx context.Context) error {
			info, err := js.UpdateConsumer(ctx, c.stream, orig)
			if err != nil {
				return err
			}
			// What the fault did: each delivery advances the consumer's
			// sequence, a first delivery also the stream's, so the gap between
			// them grows by one with every redelivery.
			after := info.CachedInfo()
			e.opts.Log.Info("consumer restored", "consumer", c.name, "ack_pending", after.NumAckPending,
				"redeliveries", redeliveries(after)-redeliveries(before))
			return nil
		}, nil
	case "queue-stepdown":
		stream := streams[step.Targets[0]]
		resp, err := e.Conn.NC.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil)
		if err != nil {
			return nil, fmt.Errorf("stepping down the leader of %s: %w", stream, err)
		}
		var answer struct {
			Success bool                `json:"success"`
			Error   *jetstream.APIError `json:"error"`
		}
		if err := json.Unmarshal(resp.Data, &answer); err != nil {
			return nil, fmt.Errorf("stepping down the leader of %s: %w", stream, err)
		}
		if !answer.Success {
			return nil, fmt.Errorf("stepping down the leader of %s: %v", stream, answer.Error)
		}
		return func(context.Context) error { return nil }, nil // the cluster elects a new leader by itself
	case "queue-reject":
		stream := streams[step.Targets[0]]
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", stream, err)
		}
		orig := st.CachedInfo().Config
		changed := orig
		changed.Subjects = []string{"chaos-runner.rejecting." + stream} // nothing publishes here
		if _, err := js.UpdateStream(ctx, changed); err != nil {
			return nil, fmt.Errorf("taking %s off its subjects: %w", stream, err)
		}
		return func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := js.UpdateStream(ctx, orig)
			return err
		}, nil
	}
	return nil, fmt.Errorf("not a queue fault: %s", step.Type)
}

// redeliveries is how many deliveries of a consumer were not a message's
// first: on a stream the consumer reads whole from its start.
func redeliveries(info *jetstream.ConsumerInfo) int64 {
	return int64(info.Delivered.Consumer) - int64(info.Delivered.Stream)
}
