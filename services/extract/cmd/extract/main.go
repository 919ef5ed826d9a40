// Command extract runs an extract worker against NATS JetStream and Postgres;
// as `extract inspect FILE_OR_FOLDER...` it prints the instrument profile of local
// files as JSON lines; as `extract migrate` it prepares what the services share
// (the schema, the streams, the workers' consumer) and exits: the migration Job
// of a release, run with an owner login.
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

// extractGCPercent is the worker's GOGC unless the environment sets one:
// alternated full-size runs measured it against the default 100 (docs/benchmarks.md).
const extractGCPercent = 200

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
		"Also: extract inspect FILE_OR_FOLDER... prints one JSON line per MIDI file;\n" +
		"extract migrate applies the schema migrations, provisions the streams and the workers' consumer, and exits."}}
	migrate := len(os.Args) > 1 && os.Args[1] == "migrate"
	if migrate {
		os.Args = append(os.Args[:1], os.Args[2:]...) // the flags follow the word
	}
	if err := config.Parse(&cfg); err != nil {
		return err
	}
	log := cfg.Ops.Logger("extract")
	config.Log(log, &cfg)
	config.GCPercent(extractGCPercent)
	if migrate {
		cfg.Postgres.Migrate = true
		svc := wiring.Service{Name: "migrate", Ops: cfg.Ops, NATS: &cfg.NATS, Postgres: &cfg.Postgres}
		return wiring.Run(ctx, svc, log, func(ctx context.Context, in *wiring.Infra) error {
			if err := extract.Prepare(ctx, in.JS, cfg.Extract.Options()); err != nil {
				return err
			}
			log.Info("migrated: schema, streams and the extract consumer are in place")
			return nil
		})
	}
	svc := wiring.Service{Name: "extract", Ops: cfg.Ops, NATS: &cfg.NATS, Postgres: &cfg.Postgres, S3: &cfg.Storage}
	return wiring.Run(ctx, svc, log, func(ctx context.Context, in *wiring.Infra) error {
		return extract.New(extract.Deps{JS: in.JS, Store: in.Store, Objects: in.Objects, Log: log, Metrics: in.Registry},
			cfg.Extract.Options()).Run(ctx)
	})
}
