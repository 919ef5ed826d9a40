// Command ingest lists MIDI files in an S3 bucket or a folder and publishes a
// midi.discovered event for each one that still needs extracting, then exits.
package main

import (
	"context"
	"os"

	"github.com/ardanlabs/conf/v3"

	"github.com/scale-dev/scale/internal/buildinfo"
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
	cfg := settings{Version: conf.Version{Build: buildinfo.Version(), Desc: "Scale ingest: S3 or folder listing → midi.discovered (progress on stdout), then exit"}}
	if err := config.Parse(&cfg); err != nil {
		return err
	}
	log := cfg.Ops.Logger("ingest")
	config.Log(log, &cfg)
	opts, err := cfg.Ingest.Options(os.Stdout)
	if err != nil {
		return err
	}
	svc := wiring.Service{Name: "ingest", Ops: cfg.Ops, NATS: &cfg.NATS, Postgres: &cfg.Postgres, S3: &cfg.Storage}
	return wiring.Run(ctx, svc, log, func(ctx context.Context, in *wiring.Infra) error {
		_, err := ingest.Run(ctx, ingest.Deps{JS: in.JS, Store: in.Store, Objects: in.Objects, Log: log, Metrics: in.Registry}, opts)
		return err
	})
}
