// Command api serves the recommendation API, its OpenAPI document and the web page.
package main

import (
	"context"

	"github.com/ardanlabs/conf/v3"

	"github.com/scale-dev/scale/internal/buildinfo"
	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/wiring"
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
	cfg := settings{Version: conf.Version{Build: buildinfo.Version(), Desc: "Scale API: songs, instruments and similar songs over HTTP, and the web page.\n" +
		"It reads Postgres as the scale_reader role; /metrics /healthz /readyz are served on both addresses."}}
	if err := config.Parse(&cfg); err != nil {
		return err
	}
	log := cfg.Ops.Logger("api")
	config.Log(log, &cfg)
	svc := wiring.Service{Name: "api", Ops: cfg.Ops, Reader: &cfg.Postgres, AppAddr: cfg.API.Addr}
	return wiring.Run(ctx, svc, log, func(ctx context.Context, in *wiring.Infra) error {
		a := api.New(in.Reader, log, in.Registry, cfg.API)
		in.Mount(a.Handler())
		return a.Run(ctx)
	})
}
