// Package wiring is the one way a Scale service turns its settings into its
// dependencies and lives its life:
//
//  1. The ops endpoint binds first (a taken address stops the service at once)
//     and serves /healthz at once; /readyz says "starting".
//  2. The dependencies the service asked for connect (Postgres with its
//     migrations, NATS with the pipeline streams, object storage), each adding
//     its readiness check. /readyz passes from here on while they answer.
//  3. The service body runs until it returns or the context ends (SIGTERM).
//  4. On SIGTERM /readyz turns to "draining", the body finishes what it has in
//     hand, NATS drains (the last acknowledgements are flushed) and the pool
//     closes, all within Ops.DrainTimeout; the ops endpoint stays up until the
//     end, so the drain can be watched.
package wiring

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/objstore"
	"github.com/scale-dev/scale/internal/ops"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/telemetry"
	"github.com/scale-dev/scale/internal/transport"
	"github.com/scale-dev/scale/pkg/events"
)

// Service names a service and the dependencies it needs; a nil group is not
// connected.
type Service struct {
	Name     string
	Ops      config.Ops
	NATS     *config.NATS     // NATS JetStream, with the pipeline streams provisioned
	Postgres *config.Postgres // the store (migrations applied)
	Reader   *config.Postgres // the read-only view the API uses
	S3       *config.S3       // object storage (S3 or folders)
	// AppAddr, when set, is a second address serving the operations
	// endpoints and the handler the body mounts with Infra.Mount (the API).
	AppAddr string
}

// Infra is what a service body runs on.
type Infra struct {
	NATS     *transport.Conn
	JS       jetstream.JetStream
	Store    *store.Store
	Reader   *store.Reader
	Objects  *objstore.Client
	Registry *prometheus.Registry
	Health   *ops.Health
	Log      *slog.Logger
	app      *ops.Server
}

// Mount serves h on the service's AppAddr (traced with otelhttp when
// tracing is on).
func (in *Infra) Mount(h http.Handler) {
	if telemetry.Enabled() {
		h = otelhttp.NewHandler(h, "http")
	}
	if in.app != nil {
		in.app.Mount(h)
	}
}

// AppAddr is the bound application address ("" without one).
func (in *Infra) AppAddr() string {
	if in.app == nil {
		return ""
	}
	return in.app.Addr()
}

// Run lives the service's life (see the package comment) with body as its
// work, and returns body's error, or the first failure of the lifecycle.
func Run(ctx context.Context, svc Service, log *slog.Logger, body func(ctx context.Context, in *Infra) error) error {
	stopTracing, err := telemetry.Setup(ctx, svc.Name)
	if err != nil {
		return err
	}
	defer func() { // last: the spans of the drain are flushed too
		flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := stopTracing(flushCtx); err != nil {
			log.Warn("flushing traces", "error", err)
		}
	}()
	in := &Infra{Registry: ops.NewRegistry(), Health: ops.NewHealth(), Log: log}
	servers := make([]*ops.Server, 0, 2)
	for _, addr := range []string{svc.Ops.Addr, svc.AppAddr} {
		if addr == "" && len(servers) > 0 {
			continue
		}
		srv, err := ops.Listen(addr, in.Registry, in.Health, log)
		if err != nil {
			return err
		}
		servers = append(servers, srv)
	}
	if svc.AppAddr != "" {
		in.app = servers[1]
	}
	// The servers outlive ctx: they stop only when everything else has. One
	// that stops by itself (its listener failed) stops the service.
	serveCtx, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan error, len(servers))
	serverFailed := make(chan struct{})
	var failOnce sync.Once
	for _, srv := range servers {
		go func() {
			err := srv.Serve(serveCtx)
			if serveCtx.Err() == nil {
				log.Error("endpoint stopped", "addr", srv.Addr(), "error", err)
				failOnce.Do(func() { close(serverFailed) })
			}
			served <- err
		}()
	}
	defer func() {
		stopServing()
		for range servers {
			<-served
		}
	}()

	// Connecting can be cut short by ctx, or by a server that failed.
	openCtx, cancelOpen := context.WithCancel(ctx)
	defer cancelOpen()
	go func() {
		select {
		case <-serverFailed:
			cancelOpen()
		case <-openCtx.Done():
		}
	}()
	closeInfra, err := in.open(openCtx, svc)
	if err != nil {
		return errors.Join(err, closeInfra(context.Background()))
	}
	in.Health.SetPhase(ops.Running)
	log.Info("running", "name", svc.Name)

	bodyCtx, stopBody := context.WithCancel(ctx)
	defer stopBody()
	done := make(chan error, 1)
	go func() { done <- body(bodyCtx, in) }()
	bodyEnded := false
	select {
	case err = <-done: // the body ended by itself (a one-shot ingest, or a failure)
		bodyEnded = true
	case <-serverFailed:
		stopBody()
		err = errors.New("an endpoint stopped; stopping the service")
	case <-ctx.Done():
		log.Info("draining", "bound", svc.Ops.DrainTimeout)
	}
	// From here the service drains: the body finishes its work in hand, then
	// NATS and the pool close, all by one deadline.
	drainBy := time.Now().Add(svc.Ops.DrainTimeout)
	in.Health.SetPhase(ops.Draining)
	if !bodyEnded {
		err = errors.Join(err, waitBody(done, drainBy))
	}
	closeCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), drainBy)
	defer cancel()
	if cerr := closeInfra(closeCtx); cerr != nil {
		err = errors.Join(err, cerr)
	}
	log.Info("stopped", "name", svc.Name, "error", err)
	return err
}

// waitBody waits for the body until the drain deadline.
func waitBody(done <-chan error, by time.Time) error {
	t := time.NewTimer(time.Until(by))
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("the work in hand did not finish within the drain bound; exiting anyway (unacknowledged messages will be delivered again)")
	}
}

// open connects what svc asks for. The returned close function releases
// whatever was opened, even when open fails part way.
func (in *Infra) open(ctx context.Context, svc Service) (func(context.Context) error, error) {
	var closers []func(context.Context) error
	closeAll := func(ctx context.Context) error {
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i](ctx))
		}
		return errors.Join(errs...)
	}
	if svc.NATS != nil {
		var opts []nats.Option
		if !svc.NATS.Discover {
			opts = append(opts, nats.IgnoreDiscoveredServers())
		}
		conn, err := transport.Connect(svc.NATS.URL, svc.Name, in.Log, opts...)
		if err != nil {
			return closeAll, err
		}
		closers = append(closers, conn.Close)
		in.NATS, in.JS = conn, conn.JS
		in.Health.AddCheck("nats", conn.Ready)
		if err := transport.Provision(ctx, conn.JS, in.Log, events.PipelineStreams(svc.NATS.StreamOptions())...); err != nil {
			return closeAll, err
		}
	}
	if svc.Postgres != nil {
		st, err := store.Connect(ctx, svc.Postgres.URL, svc.Postgres.Wait)
		if err != nil {
			return closeAll, err
		}
		closers = append(closers, func(context.Context) error { st.Close(); return nil })
		if svc.Postgres.Migrate {
			err = st.Migrate(ctx)
		} else {
			err = st.WaitMigrated(ctx, svc.Postgres.Wait)
		}
		if err != nil {
			return closeAll, err
		}
		in.Store = st
		in.Health.AddCheck("postgres", st.Pool.Ping)
	}
	if svc.Reader != nil {
		r, err := store.OpenReader(ctx, svc.Reader.URL)
		if err != nil {
			return closeAll, err
		}
		closers = append(closers, func(context.Context) error { r.Close(); return nil })
		in.Reader = r
		in.Health.AddCheck("postgres_reader", r.Ping)
	}
	if svc.S3 != nil {
		objects, err := objstore.New(ctx, svc.S3.ObjStore())
		if err != nil {
			return closeAll, err
		}
		in.Objects = objects
	}
	return closeAll, nil
}
