// Command similarity keeps every song's top-K similar songs up to date from
// midi.extracted events; `similarity rebuild` recomputes every list from the
// database and exits.
package main

import (
	"context"
	"os"

	"github.com/ardanlabs/conf/v3"

	"github.com/scale-dev/scale/internal/buildinfo"
	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/wiring"
	"github.com/scale-dev/scale/services/similarity"
)

type settings struct {
	conf.Version
	NATS       config.NATS
	Postgres   config.Postgres
	Ops        config.Ops
	Similarity similarity.Settings
}

func main() { config.Main("similarity", run) }

func run(ctx context.Context) error {
	rebuild := len(os.Args) > 1 && os.Args[1] == "rebuild"
	if rebuild {
		os.Args = append(os.Args[:1], os.Args[2:]...)
	}
	cfg := settings{Version: conf.Version{Build: buildinfo.Version(), Desc: "Scale similarity: exact top-K Jaccard lists from midi.extracted.\n" +
		"One instance writes (it holds a Postgres advisory lock); others stand by and take over within seconds.\n" +
		"Also: similarity rebuild recomputes every list from the database, with progress on stdout, and exits."}}
	if err := config.Parse(&cfg); err != nil {
		return err
	}
	log := cfg.Ops.Logger("similarity")
	config.Log(log, &cfg)
	svc := wiring.Service{Name: "similarity", Ops: cfg.Ops, NATS: &cfg.NATS, Postgres: &cfg.Postgres}
	if rebuild {
		svc.NATS, svc.Ops.Addr = nil, "" // a one-shot beside a running service: no port of its own
	}
	return wiring.Run(ctx, svc, log, func(ctx context.Context, in *wiring.Infra) error {
		s := similarity.New(similarity.Deps{JS: in.JS, Store: in.Store, Log: log, Metrics: in.Registry}, cfg.Similarity)
		if rebuild {
			return s.Exclusive(ctx, func(ctx context.Context) error { return s.Rebuild(ctx, os.Stdout) })
		}
		return s.Run(ctx)
	})
}
