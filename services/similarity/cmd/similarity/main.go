// Command similarity keeps every song's top-K similar songs up to date from
// midi.extracted events; `similarity rebuild` recomputes every list from the
// database and exits.
package main

import (
	"context"
	"os"

	"github.com/ardanlabs/conf/v3"

	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/ops"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/wiring"
	"github.com/scale-dev/scale/services/similarity"
)

type settings struct {
	conf.Version
	NATS       config.NATS
	Postgres   config.Postgres
	Storage    config.S3
	Ops        config.Ops
	Similarity similarity.Settings
}

func main() { config.Main("similarity", run) }

func run(ctx context.Context) error {
	rebuild := len(os.Args) > 1 && os.Args[1] == "rebuild"
	if rebuild {
		os.Args = append(os.Args[:1], os.Args[2:]...)
	}
	cfg := settings{Version: conf.Version{Desc: "Scale similarity: exact top-K Jaccard lists from midi.extracted.\n" +
		"Also: similarity rebuild recomputes every list from the database, with progress, and exits."}}
	if err := config.Parse(&cfg); err != nil {
		return err
	}
	log := cfg.Ops.Logger("similarity")
	config.Log(log, &cfg)
	if rebuild {
		st, err := store.Open(ctx, cfg.Postgres.URL, cfg.Postgres.Wait)
		if err != nil {
			return err
		}
		defer st.Close()
		return similarity.New(similarity.Deps{Store: st, Log: log, Metrics: ops.NewRegistry()}, cfg.Similarity).Rebuild(ctx, os.Stderr)
	}
	infra, err := wiring.Open(ctx, "similarity", cfg.NATS, cfg.Postgres, cfg.Storage, log)
	if err != nil {
		return err
	}
	defer infra.Close()
	svc := similarity.New(similarity.Deps{JS: infra.JS, Store: infra.Store, Log: log, Metrics: infra.Registry}, cfg.Similarity)
	return infra.Run(ctx, cfg.Ops.Addr, svc.Run)
}
