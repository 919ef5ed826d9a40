// Command ingest lists MIDI files in an S3 bucket or a folder and publishes a
// midi.discovered event for each one that still needs extracting.
package main

import (
	"context"
	"os"

	"github.com/ardanlabs/conf/v3"

	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/wiring"
	"github.com/scale-dev/scale/services/ingest"
)

type settings struct {
	conf.Version
	NATS     config.NATS
	Postgres config.Postgres
	Storage  config.S3
	Ops      config.Ops
	Ingest   ingest.Settings
}

func main() { config.Main("ingest", run) }

func run(ctx context.Context) error {
	cfg := settings{Version: conf.Version{Desc: "Scale ingest: S3 or folder listing → midi.discovered"}}
	if err := config.Parse(&cfg); err != nil {
		return err
	}
	log := cfg.Ops.Logger("ingest")
	config.Log(log, &cfg)
	opts, err := cfg.Ingest.Options(os.Stderr)
	if err != nil {
		return err
	}
	infra, err := wiring.Open(ctx, "ingest", cfg.NATS, cfg.Postgres, cfg.Storage, log)
	if err != nil {
		return err
	}
	defer infra.Close()
	return infra.Run(ctx, cfg.Ops.Addr, func(ctx context.Context) error {
		_, err := ingest.Run(ctx, ingest.Deps{JS: infra.JS, Store: infra.Store, Objects: infra.Objects, Log: log, Metrics: infra.Registry}, opts)
		return err
	})
}
