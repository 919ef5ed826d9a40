package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/scale-dev/scale/internal/config"
)

// TestErrorPathsLeakNoGoroutines: when the one-process run fails, at start
// or while connecting, everything it started is stopped before it returns.
func TestErrorPathsLeakNoGoroutines(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nobody := closed.Addr().String() // a port where no Postgres answers
	closed.Close()

	for _, tc := range []struct {
		name  string
		edit  func(*settings)
		want  string
		limit time.Duration
	}{
		{"api address taken", func(s *settings) { s.API.Addr = taken.Addr().String() }, "listening on", time.Minute},
		{"ops address taken", func(s *settings) { s.Ops.Addr = taken.Addr().String() }, "listening on", time.Minute},
		{"postgres away", func(s *settings) { s.Postgres.URL = "postgres://scale@" + nobody + "/scale?sslmode=disable" }, "Postgres", 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			cfg := settings{Data: t.TempDir()}
			cfg.NATS.Port = -1
			cfg.Postgres.URL = "postgres://scale@" + nobody + "/scale?sslmode=disable"
			cfg.Ops = config.Ops{Addr: "127.0.0.1:0", DrainTimeout: 5 * time.Second, LogLevel: "error"}
			cfg.API.Addr = "127.0.0.1:0"
			cfg.Ingest.Source = t.TempDir()
			tc.edit(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), tc.limit)
			defer cancel()
			err := runPipeline(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("runPipeline: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}
