// Package wiring connects a service binary to its infrastructure (NATS
// JetStream, Postgres, object storage), serves its operations endpoints while it
// runs, and tears everything down after.
package wiring

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/natsconn"
	"github.com/scale-dev/scale/internal/objstore"
	"github.com/scale-dev/scale/internal/ops"
	"github.com/scale-dev/scale/internal/store"
)

// Infra is what a pipeline service runs on.
type Infra struct {
	NC       *nats.Conn
	JS       jetstream.JetStream
	Store    *store.Store
	Objects  *objstore.Client
	Registry *prometheus.Registry
	Log      *slog.Logger
}

// Open connects everything; Close releases it.
func Open(ctx context.Context, name string, n config.NATS, pg config.Postgres, s3 config.S3, log *slog.Logger) (*Infra, error) {
	st, err := store.Open(ctx, pg.URL, pg.Wait)
	if err != nil {
		return nil, err
	}
	nc, js, err := natsconn.Connect(ctx, n.URL, name, n.StreamOptions(), log)
	if err != nil {
		st.Close()
		return nil, err
	}
	objects, err := objstore.New(ctx, s3.ObjStore())
	if err != nil {
		nc.Close()
		st.Close()
		return nil, err
	}
	return &Infra{NC: nc, JS: js, Store: st, Objects: objects, Registry: ops.NewRegistry(), Log: log}, nil
}

// Close drains NATS and closes the pool.
func (i *Infra) Close() {
	_ = i.NC.Drain()
	i.Store.Close()
}

// Run serves the operations endpoints on addr while fn runs, and returns fn's
// error once both have stopped.
func (i *Infra) Run(ctx context.Context, addr string, fn func(ctx context.Context) error) error {
	opsCtx, stopOps := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(opsCtx)
	handler := ops.Handler(i.Registry, map[string]ops.Check{
		"postgres": i.Store.Pool.Ping,
		"nats":     natsconn.Ready(i.NC),
	})
	g.Go(func() error { return ops.Serve(gctx, addr, handler, i.Log) })
	g.Go(func() error {
		defer stopOps()
		return fn(ctx)
	})
	return g.Wait()
}
