// Command scale runs the pipeline in one process on an embedded default: an
// embedded NATS JetStream server, a local PostgreSQL cluster it starts under the
// data folder (or the database at SCALE_POSTGRES_URL), ingest of the sample
// corpus (or any folder or bucket), extract workers, similarity, and the API
// with its web page. Ctrl-C stops everything
// cleanly. Each service also runs alone as its own binary with the same settings.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/ardanlabs/conf/v3"
	"golang.org/x/sync/errgroup"

	"github.com/scale-dev/scale/internal/buildinfo"
	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/natsembed"
	"github.com/scale-dev/scale/internal/pglocal"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/wiring"
	"github.com/scale-dev/scale/services/api"
	"github.com/scale-dev/scale/services/extract"
	"github.com/scale-dev/scale/services/ingest"
	"github.com/scale-dev/scale/services/similarity"
)

type settings struct {
	conf.Version
	Data string `conf:"default:data,help:folder for the embedded NATS store and the local Postgres cluster"`
	NATS struct {
		Port int `conf:"default:-1,help:client port of the embedded NATS server (-1: any free port)"`
	}
	Postgres struct {
		URL string `conf:"mask,help:use this database instead of starting a local cluster"`
	}
	Storage    config.S3
	Ops        config.Ops
	Ingest     ingest.Settings
	Extract    extract.Settings
	Similarity similarity.Settings
	API        api.Settings
}

func main() { config.Main("scale", run) }

func run(ctx context.Context) error {
	cfg := settings{Version: conf.Version{Build: buildinfo.Version(), Desc: "Scale: the whole pipeline in one process (embedded NATS, local Postgres)"}}
	if err := config.Parse(&cfg); err != nil {
		return err
	}
	log := cfg.Ops.Logger("scale")
	config.Log(log, &cfg)
	return runPipeline(ctx, cfg, log, os.Stdout)
}

// runPipeline starts the embedded parts, then every service over them, and
// returns when ctx ends or a part fails; everything it started is stopped
// when it returns, on every path.
func runPipeline(ctx context.Context, cfg settings, log *slog.Logger, out io.Writer) error {
	ingestOpts, err := cfg.Ingest.Options(out)
	if err != nil {
		return err
	}
	data, err := filepath.Abs(cfg.Data)
	if err != nil {
		return err
	}
	pgURL := cfg.Postgres.URL
	if pgURL == "" {
		fmt.Fprintf(out, "scale: starting local Postgres under %s\n", filepath.Join(data, "postgres"))
		cluster, err := pglocal.Start(ctx, filepath.Join(data, "postgres"), pglocal.Options{Durable: true})
		if err != nil {
			return err
		}
		defer func() {
			if err := cluster.Stop(); err != nil {
				log.Error("stopping Postgres", "error", err)
			}
		}()
		if err := cluster.CreateDatabase(ctx, "scale"); err != nil {
			return err
		}
		pgURL = cluster.URL("scale")
	}

	srv, err := natsembed.Start(natsembed.Options{Port: cfg.NATS.Port, StoreDir: filepath.Join(data, "nats")})
	if err != nil {
		return err
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	fmt.Fprintf(out, "scale: embedded NATS JetStream at %s\n", srv.ClientURL())

	pg := config.Postgres{URL: pgURL, Wait: 30 * time.Second, Migrate: true}
	svc := wiring.Service{
		Name: "scale", Ops: cfg.Ops, AppAddr: cfg.API.Addr, S3: &cfg.Storage, Postgres: &pg, Reader: &pg,
		NATS: &config.NATS{URL: srv.ClientURL(), Replicas: 1, DuplicateWindow: 10 * time.Minute},
	}
	return wiring.Run(ctx, svc, log, func(ctx context.Context, in *wiring.Infra) error {
		fmt.Fprintf(out, "scale: metrics and health at http://%s/metrics /healthz /readyz\n", cfg.Ops.Addr)
		g, gctx := errgroup.WithContext(ctx)
		worker := extract.New(extract.Deps{JS: in.JS, Store: in.Store, Objects: in.Objects, Log: log, Metrics: in.Registry},
			cfg.Extract.Options())
		g.Go(func() error { return worker.Run(gctx) })
		sim := similarity.New(similarity.Deps{JS: in.JS, Store: in.Store, Log: log, Metrics: in.Registry}, cfg.Similarity)
		g.Go(func() error { return sim.Run(gctx) })
		a := api.New(in.Reader, log, in.Registry, cfg.API)
		in.Mount(a.Handler())
		g.Go(func() error { return a.Run(gctx) })
		fmt.Fprintf(out, "scale: web page and API at http://%s/\n", in.AppAddr())
		g.Go(func() error {
			_, err := ingest.Run(gctx, ingest.Deps{JS: in.JS, Store: in.Store, Objects: in.Objects, Log: log, Metrics: in.Registry},
				ingestOpts)
			if err != nil {
				return err
			}
			return reportProgress(gctx, in.Store, in.AppAddr(), out)
		})
		return g.Wait()
	})
}

// reportProgress prints the ledger every second until no file is pending, then
// the final accounting; the pipeline keeps running for files added later.
func reportProgress(ctx context.Context, st *store.Store, apiAddr string, out io.Writer) error {
	start := time.Now()
	for {
		a, err := st.Account(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if a.Pending == 0 {
			fmt.Fprintf(out, "scale: all %d files finished: %d songs, %d failures (balanced: %v). Browse http://%s/ — Ctrl-C to stop.\n",
				a.Discovered, a.Songs, a.Failures, a.Balanced(), apiAddr)
			return nil
		}
		fmt.Fprintf(out, "extract: %d of %d files finished (%d songs, %d failures), %.0f s\n",
			a.Done+a.Failed, a.Discovered, a.Songs, a.Failures, time.Since(start).Seconds())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}
