// Command api serves the recommendation API, its OpenAPI document and the web page.
package main

import (
	"context"
	"time"

	"github.com/ardanlabs/conf/v3"
	"golang.org/x/sync/errgroup"

	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/ops"
	"github.com/scale-dev/scale/services/api"
)

type settings struct {
	conf.Version
	Postgres config.Postgres
	Ops      config.Ops
	API      api.Settings
}

func main() { config.Main("api", run) }

func run(ctx context.Context) error {
	cfg := settings{Version: conf.Version{Desc: "Scale API: songs, instruments and similar songs over HTTP, and the web page"}}
	if err := config.Parse(&cfg); err != nil {
		return err
	}
	log := cfg.Ops.Logger("api")
	config.Log(log, &cfg)
	pool, err := api.OpenPool(ctx, cfg.Postgres.URL)
	if err != nil {
		return err
	}
	defer pool.Close()
	waitCtx, cancel := context.WithTimeout(ctx, cfg.Postgres.Wait)
	defer cancel()
	for pool.Ping(waitCtx) != nil && waitCtx.Err() == nil {
		time.Sleep(250 * time.Millisecond)
	}
	reg := ops.NewRegistry()
	a := api.New(pool, log, reg, cfg.API)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Run(gctx) })
	g.Go(func() error {
		return ops.Serve(gctx, cfg.API.Addr, a.Handler(ops.Handler(reg, map[string]ops.Check{"postgres": pool.Ping})), log)
	})
	return g.Wait()
}
