// Command extract runs an extract worker against NATS JetStream and Postgres, or,
// as `extract inspect FILE...`, prints the instrument profile of local files as
// JSON lines.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ardanlabs/conf/v3"

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
	Extract  struct {
		Concurrency int           `conf:"default:4,help:files processed at once by this process"`
		FetchBatch  int           `conf:"default:32,help:messages pulled per request"`
		AckWait     time.Duration `conf:"default:30s,help:how long a crashed worker holds a file before redelivery"`
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "inspect" {
		if len(os.Args) < 3 {
			fmt.Fprintln(os.Stderr, "usage: extract inspect FILE_OR_FOLDER...")
			os.Exit(2)
		}
		if err := extract.Inspect(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "extract inspect:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx); err != nil {
		if errors.Is(err, config.ErrHelp) {
			fmt.Println("\nSubcommand: extract inspect FILE_OR_FOLDER...  prints one JSON line per MIDI file.")
			return
		}
		slog.Error("extract stopped", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	cfg := settings{Version: conf.Version{Desc: "Scale extract worker: midi.discovered → instrument profile → Postgres"}}
	if err := config.Parse(&cfg); err != nil {
		return err
	}
	log := cfg.Ops.Logger("extract")
	config.Log(log, &cfg)
	infra, err := wiring.Open(ctx, "extract", cfg.NATS, cfg.Postgres, cfg.Storage, log)
	if err != nil {
		return err
	}
	defer infra.Close()
	w := extract.New(extract.Deps{JS: infra.JS, Store: infra.Store, Objects: infra.Objects, Log: log, Metrics: infra.Registry},
		extract.Options{Concurrency: cfg.Extract.Concurrency, FetchBatch: cfg.Extract.FetchBatch, AckWait: cfg.Extract.AckWait})
	return infra.Run(ctx, cfg.Ops.Addr, w.Run)
}
