// Command ingest lists MIDI files in an S3 bucket or a folder and publishes a
// midi.discovered event for each one that still needs extracting.
package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/ardanlabs/conf/v3"

	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/wiring"
	"github.com/scale-dev/scale/services/ingest"
)

type settings struct {
	conf.Version
	NATS     config.NATS
	Postgres config.Postgres
	Storage  config.S3
	Ops      config.Ops
	Ingest   struct {
		Source    string `conf:"help:s3://bucket/prefix or a folder; empty: the shared sample corpus (../shared/midi)"`
		NamesJSON string `conf:"help:LMD-style md5_to_paths.json giving song names"`
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		if errors.Is(err, config.ErrHelp) {
			return
		}
		slog.Error("ingest stopped", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	cfg := settings{Version: conf.Version{Desc: "Scale ingest: S3 or folder listing → midi.discovered"}}
	if err := config.Parse(&cfg); err != nil {
		return err
	}
	log := cfg.Ops.Logger("ingest")
	config.Log(log, &cfg)
	if cfg.Ingest.Source == "" {
		dir, err := corpus.SharedDir()
		if err != nil {
			return err
		}
		cfg.Ingest.Source = dir
	}
	infra, err := wiring.Open(ctx, "ingest", cfg.NATS, cfg.Postgres, cfg.Storage, log)
	if err != nil {
		return err
	}
	defer infra.Close()
	return infra.Run(ctx, cfg.Ops.Addr, func(ctx context.Context) error {
		_, err := ingest.Run(ctx, ingest.Deps{JS: infra.JS, Store: infra.Store, Objects: infra.Objects, Log: log, Metrics: infra.Registry},
			ingest.Options{Source: cfg.Ingest.Source, NamesJSON: cfg.Ingest.NamesJSON, Progress: os.Stderr})
		return err
	})
}
