// Package transport is how Scale's services use NATS JetStream: connecting
// (and draining on the way out), provisioning the streams, publishing typed
// events and consuming them a batch at a time. Publishing and consuming live
// side by side here so that what travels with a message (the Msg-Id today,
// trace context next) is written and read in one place, and every consumer
// gets the same decoding, poison handling, panic recovery and metrics.
package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Conn is a NATS connection with its JetStream context.
type Conn struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	closed chan struct{}
}

// PublishAckWait bounds the wait for a publication's acknowledgement. Without
// it (nats.go's default) an acknowledgement lost in a stream leader election
// leaves the publisher waiting forever (found by the chaos runner's
// queue-faults run: ingest stalled at 6,500 of 10,000 files); with it the
// publication fails and is made again, which the message id makes safe.
const PublishAckWait = 10 * time.Second

// Connect dials url, retrying while the servers are away (the connection is
// made in the background, so Connect returns at once even when no server
// answers yet) and reconnecting forever once connected. extra options come
// last, so they can change any of these.
func Connect(url, name string, log *slog.Logger, extra ...nats.Option) (*Conn, error) {
	c := &Conn{closed: make(chan struct{})}
	nc, err := nats.Connect(url, append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("NATS reconnected", "url", c.ConnectedUrl()) }),
		nats.ClosedHandler(func(*nats.Conn) { close(c.closed) }),
	}, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", url, err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(PublishAckWait))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("JetStream: %w", err)
	}
	c.NC, c.JS = nc, js
	return c, nil
}

// Ready is a readiness check: the connection is up.
func (c *Conn) Ready(context.Context) error {
	if !c.NC.IsConnected() {
		return fmt.Errorf("NATS %s", c.NC.Status())
	}
	return nil
}

// Close drains the connection (subscriptions stop, acknowledgements and
// publications already sent are flushed) and waits until it is closed, or
// closes it at once when ctx ends first. Returning before the drain finished
// would let the process exit with its last acknowledgements unsent, and their
// messages would be delivered again.
func (c *Conn) Close(ctx context.Context) error {
	if err := c.NC.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		c.NC.Close()
		return fmt.Errorf("draining NATS: %w", err)
	}
	select {
	case <-c.closed:
		return nil
	case <-ctx.Done():
		c.NC.Close()
		return fmt.Errorf("draining NATS: %w", ctx.Err())
	}
}

// Provision creates or updates streams, retrying until it succeeds or ctx
// ends: they may not be creatable the first instant (still connecting, or a
// cluster still electing a leader). It is safe to run concurrently.
func Provision(ctx context.Context, js jetstream.JetStream, log *slog.Logger, streams ...jetstream.StreamConfig) error {
	for {
		err := provisionOnce(ctx, js, streams)
		if err == nil {
			return nil
		}
		log.Warn("provisioning streams; retrying", "error", err)
		if !Sleep(ctx, time.Second) {
			return fmt.Errorf("provisioning streams: %w", err)
		}
	}
}

func provisionOnce(ctx context.Context, js jetstream.JetStream, streams []jetstream.StreamConfig) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, cfg := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("provisioning stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// Sleep waits d, or less when ctx ends first; it reports whether ctx is
// still alive: the wait between retries.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// probeTimeout bounds each JetStream request of a probe (Settled).
const probeTimeout = 5 * time.Second

// Settled reports whether a durable consumer exists and has nothing left to
// deliver and nothing delivered awaiting an acknowledgement: every message
// up to now has been handled by the stage, so whatever the stage publishes
// has been published. info is nil when the consumer does not exist yet.
//
// It is a probe, called in loops: its requests wait at most probeTimeout
// whatever ctx's deadline. JetStream waits for an answer until ctx's
// deadline when it has one, and a request a server drops (one that arrives
// while the cluster is still electing its leaders) is never answered, so a
// caller's deadline of minutes would hold the loop that long.
func Settled(ctx context.Context, js jetstream.JetStream, stream, durable string) (settled bool, info *jetstream.ConsumerInfo, err error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	cons, err := js.Consumer(ctx, stream, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false, nil, nil
	}
	if err != nil {
		return false, nil, err
	}
	if info, err = cons.Info(ctx); err != nil {
		return false, nil, err
	}
	return info.NumPending == 0 && info.NumAckPending == 0, info, nil
}

// ReadStream calls fn with every message a stream holds, oldest first. It
// asks the stream for each message by sequence instead of consuming it, so
// it needs no consumer: the reading of an auditor, which works the same
// while the stream's consumers are being recreated after a node came back.
func ReadStream(ctx context.Context, js jetstream.JetStream, stream string, fn func(*jetstream.RawStreamMsg) error) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("reading %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading %s: %w", stream, err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		msg, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted (a work queue acknowledged it, or a limit removed it)
		}
		if err != nil {
			return fmt.Errorf("reading %s at sequence %d: %w", stream, seq, err)
		}
		if err := fn(msg); err != nil {
			return err
		}
	}
	return nil
}
