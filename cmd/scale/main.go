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
	"os"
	"path/filepath"
	"time"

	"github.com/ardanlabs/conf/v3"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/natsembed"
	"github.com/scale-dev/scale/internal/ops"
	"github.com/scale-dev/scale/internal/pglocal"
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
	cfg := settings{Version: conf.Version{Desc: "Scale: the whole pipeline in one process (embedded NATS, local Postgres)"}}
	if err := config.Parse(&cfg); err != nil {
		return err
	}
	log := cfg.Ops.Logger("scale")
	config.Log(log, &cfg)
	ingestOpts, err := cfg.Ingest.Options(os.Stderr)
	if err != nil {
		return err
	}
	data, err := filepath.Abs(cfg.Data)
	if err != nil {
		return err
	}

	pgURL := cfg.Postgres.URL
	if pgURL == "" {
		fmt.Fprintf(os.Stderr, "scale: starting local Postgres under %s\n", filepath.Join(data, "postgres"))
		cluster, err := pglocal.Start(ctx, filepath.Join(data, "postgres"), pglocal.Options{Durable: true})
		if err != nil {
			return err
		}
		defer func() {
			if err := cluster.Stop(); err != nil {
				log.Error("stopping Postgres", "error", err)
			}
		}()
		if err := createDatabase(ctx, cluster.URL("postgres"), "scale"); err != nil {
			return err
		}
		pgURL = cluster.URL("scale")
	}

	srv, err := natsembed.Start(natsembed.Options{Port: cfg.NATS.Port, StoreDir: filepath.Join(data, "nats")})
	if err != nil {
		return err
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	fmt.Fprintf(os.Stderr, "scale: embedded NATS JetStream at %s\n", srv.ClientURL())

	infra, err := wiring.Open(ctx, "scale",
		config.NATS{URL: srv.ClientURL(), Replicas: 1, DuplicateWindow: 10 * time.Minute},
		config.Postgres{URL: pgURL, Wait: 30 * time.Second}, cfg.Storage, log)
	if err != nil {
		return err
	}
	defer infra.Close()
	fmt.Fprintf(os.Stderr, "scale: metrics and health at http://%s/metrics /healthz /readyz\n", cfg.Ops.Addr)

	return infra.Run(ctx, cfg.Ops.Addr, func(ctx context.Context) error {
		g, gctx := errgroup.WithContext(ctx)
		worker := extract.New(extract.Deps{JS: infra.JS, Store: infra.Store, Objects: infra.Objects, Log: log, Metrics: infra.Registry},
			cfg.Extract.Options())
		g.Go(func() error { return worker.Run(gctx) })
		sim := similarity.New(similarity.Deps{JS: infra.JS, Store: infra.Store, Log: log, Metrics: infra.Registry}, cfg.Similarity)
		g.Go(func() error { return sim.Run(gctx) })
		pool, err := api.OpenPool(gctx, pgURL)
		if err != nil {
			return err
		}
		defer pool.Close()
		a := api.New(pool, log, infra.Registry, cfg.API)
		g.Go(func() error { return a.Run(gctx) })
		apiHandler := a.Handler(ops.Handler(infra.Registry, map[string]ops.Check{"postgres": pool.Ping}))
		g.Go(func() error { return ops.Serve(gctx, cfg.API.Addr, apiHandler, log) })
		fmt.Fprintf(os.Stderr, "scale: web page and API at http://%s/\n", cfg.API.Addr)
		g.Go(func() error {
			_, err := ingest.Run(gctx, ingest.Deps{JS: infra.JS, Store: infra.Store, Objects: infra.Objects, Log: log, Metrics: infra.Registry},
				ingestOpts)
			if err != nil {
				return err
			}
			return reportProgress(gctx, infra, cfg.API.Addr)
		})
		return g.Wait()
	})
}

// reportProgress prints the ledger every second until no file is pending, then
// the final accounting; the pipeline keeps running for files added later.
func reportProgress(ctx context.Context, infra *wiring.Infra, apiAddr string) error {
	start := time.Now()
	for {
		a, err := infra.Store.Account(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if a.Pending == 0 {
			fmt.Fprintf(os.Stderr, "scale: all %d files finished: %d songs, %d failures (balanced: %v). Browse http://%s/ — Ctrl-C to stop.\n",
				a.Discovered, a.Songs, a.Failures, a.Balanced(), apiAddr)
			return nil
		}
		fmt.Fprintf(os.Stderr, "extract: %d of %d files finished (%d songs, %d failures), %.0f s\n",
			a.Done+a.Failed, a.Discovered, a.Songs, a.Failures, time.Since(start).Seconds())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func createDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connecting to local Postgres: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			return fmt.Errorf("creating database %s: %w", name, err)
		}
	}
	return nil
}
