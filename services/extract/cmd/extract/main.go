// Command extract runs an extract worker against NATS JetStream and Postgres, or,
// as `extract inspect FILE_OR_FOLDER...`, prints the instrument profile of local
// files as JSON lines.
package main

import (
	"context"
	"errors"
	"os"

	"github.com/ardanlabs/conf/v3"

	"github.com/scale-dev/scale/internal/buildinfo"
	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/wiring"
	"github.com/scale-dev/scale/services/extract"
)

type settings struct {
	conf.Version
	NATS     config.NATS
	Postgres config.Postgres
	Storage  config.S3
	Ops      config.Ops
	Extract  extract.Settings
}

func main() { config.Main("extract", run) }

func run(ctx context.Context) error {
	if len(os.Args) > 1 && os.Args[1] == "inspect" {
		if len(os.Args) < 3 {
			return errors.New("extract inspect needs at least one file or folder")
		}
		return extract.Inspect(os.Args[2:], os.Stdout)
	}
	cfg := settings{Version: conf.Version{Build: buildinfo.Version(), Desc: "Scale extract worker: midi.discovered → instrument profile → Postgres.\n" +
		"SIGTERM finishes the batches in hand and exits.\n" +
		"Also: extract inspect FILE_OR_FOLDER... prints one JSON line per MIDI file."}}
	if err := config.Parse(&cfg); err != nil {
		return err
	}
	log := cfg.Ops.Logger("extract")
	config.Log(log, &cfg)
	svc := wiring.Service{Name: "extract", Ops: cfg.Ops, NATS: &cfg.NATS, Postgres: &cfg.Postgres, S3: &cfg.Storage}
	return wiring.Run(ctx, svc, log, func(ctx context.Context, in *wiring.Infra) error {
		return extract.New(extract.Deps{JS: in.JS, Store: in.Store, Objects: in.Objects, Log: log, Metrics: in.Registry},
			cfg.Extract.Options()).Run(ctx)
	})
}
