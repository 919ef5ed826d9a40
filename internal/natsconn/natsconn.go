// Package natsconn connects a service to NATS JetStream, provisions the
// streams, and consumes them a batch at a time.
package natsconn

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scale-dev/scale/pkg/events"
)

// Connect dials url (reconnecting forever once connected), provisions the streams
// and returns the connection and its JetStream context.
func Connect(ctx context.Context, url, name string, streams events.StreamOptions, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("NATS reconnected", "url", c.ConnectedUrl()) }),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to NATS at %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("JetStream: %w", err)
	}
	// Streams may not be creatable the first instant (reconnecting, or a cluster
	// still electing a leader): retry until ctx gives up.
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = events.Provision(pctx, js, streams)
		cancel()
		if err == nil {
			return nc, js, nil
		}
		log.Warn("provisioning streams; retrying", "error", err)
		select {
		case <-ctx.Done():
			nc.Close()
			return nil, nil, fmt.Errorf("provisioning streams: %w", err)
		case <-time.After(time.Second):
		}
	}
}

// Ready is a readiness check: the connection is up.
func Ready(nc *nats.Conn) func(context.Context) error {
	return func(context.Context) error {
		if !nc.IsConnected() {
			return fmt.Errorf("NATS %s", nc.Status())
		}
		return nil
	}
}

// fetchWait is how long a pull waits for its batch to fill. A fetch returns
// when the batch is full or this time is up, so when the queue is short a
// message waits at most this long before its smaller batch is handled; when
// it is long, batches fill at once.
const fetchWait = 100 * time.Millisecond

// ConsumeBatches fetches up to n messages at a time from cons and hands every
// non-empty batch to handle, until ctx ends. handle gets a context that ctx's
// end does not cancel: a batch in hand is finished (the graceful part of a
// shutdown), and no batch is fetched after ctx ends.
func ConsumeBatches(ctx context.Context, cons jetstream.Consumer, n int, log *slog.Logger, handle func(context.Context, []jetstream.Msg)) {
	workCtx := context.WithoutCancel(ctx)
	for ctx.Err() == nil {
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(fetchWait))
		if err != nil {
			log.Warn("fetching messages", "error", err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		var msgs []jetstream.Msg
		for msg := range batch.Messages() {
			msgs = append(msgs, msg)
		}
		if len(msgs) > 0 {
			handle(workCtx, msgs)
		}
	}
}
