// Package config holds the configuration groups the services share, parsed from
// flags and SCALE_* environment variables by ardanlabs/conf, with defaults that
// reach services on localhost (the docker-compose layout).
package config

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

	"github.com/scale-dev/scale/internal/buildinfo"
	"github.com/scale-dev/scale/internal/objstore"
	"github.com/scale-dev/scale/internal/telemetry"
	"github.com/scale-dev/scale/pkg/events"
)

// Prefix of every environment variable: SCALE_NATS_URL, SCALE_POSTGRES_URL, ...
const Prefix = "SCALE"

// NATS locates the NATS cluster and sizes the streams.
type NATS struct {
	URL             string        `conf:"default:nats://127.0.0.1:4222,help:NATS server URLs (comma-separated)"`
	Replicas        int           `conf:"default:1,help:stream replicas (1 or 3)"`
	DuplicateWindow time.Duration `conf:"default:10m,help:how long JetStream remembers a Nats-Msg-Id"`
	Discover        bool          `conf:"default:true,help:also reconnect to the cluster nodes the servers announce; false keeps the client on the URLs given (a proxy or load balancer in front of NATS)"`
}

// StreamOptions are the stream settings.
func (n NATS) StreamOptions() events.StreamOptions {
	return events.StreamOptions{Replicas: n.Replicas, DuplicateWindow: n.DuplicateWindow}
}

// Postgres locates the database.
type Postgres struct {
	URL  string        `conf:"default:postgres://scale@127.0.0.1:5432/scale?sslmode=disable,mask,help:Postgres connection URL"`
	Wait time.Duration `conf:"default:30s,help:how long to wait for Postgres at start-up"`
}

// S3 locates an S3-compatible service.
type S3 struct {
	Endpoint  string `conf:"help:S3 endpoint URL; empty for AWS S3"`
	Region    string `conf:"default:us-east-1,help:S3 region"`
	PathStyle bool   `conf:"help:path-style addressing (MinIO and most self-hosted servers)"`
	AccessKey string `conf:"mask,help:access key; empty uses the AWS default credential chain"`
	SecretKey string `conf:"mask,help:secret key (with the access key)"`
}

// ObjStore converts to the object store's settings.
func (s S3) ObjStore() objstore.S3Config {
	return objstore.S3Config{Endpoint: s.Endpoint, Region: s.Region, PathStyle: s.PathStyle, AccessKey: s.AccessKey, SecretKey: s.SecretKey}
}

// Ops configures the operations endpoint, the shutdown and the logs.
type Ops struct {
	Addr         string        `conf:"default:127.0.0.1:9090,help:listen address of /metrics /healthz /readyz /debug/pprof (0.0.0.0:9090 in a container)"`
	DrainTimeout time.Duration `conf:"default:20s,help:how long after SIGTERM to finish the work in hand and flush acknowledgements before exiting anyway (keep it below the pod's terminationGracePeriodSeconds: 30 s by default)"`
	LogLevel     string        `conf:"default:info,help:debug|info|warn|error"`
}

// Logger returns a JSON slog logger on stderr at the configured level, and
// makes it the process's default logger, so that every line (the fatal one
// that config.Main writes included) is in one stream and one format.
func (o Ops) Logger(service string) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.LogLevel)); err != nil {
		level = slog.LevelInfo
	}
	log := newLogger(service, level)
	slog.SetDefault(log)
	return log
}

func newLogger(service string, level slog.Level) *slog.Logger {
	return slog.New(telemetry.LogHandler(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))).
		With("service", service, "version", buildinfo.Version())
}

// ErrHelp is returned by Parse when --help was asked for and printed.
var ErrHelp = errors.New("help printed")

// Parse fills cfg from flags and environment; on --help it prints the usage to
// stdout and returns ErrHelp.
func Parse(cfg any) error {
	help, err := conf.ParseWithOptions(Prefix, cfg, conf.WithStrictFlags())
	if errors.Is(err, conf.ErrHelpWanted) || errors.Is(err, conf.ErrVersionWanted) {
		fmt.Println(help)
		return ErrHelp
	}
	return err
}

// Log writes the resolved configuration, secrets masked, as one log line.
func Log(log *slog.Logger, cfg any) {
	s, err := conf.String(cfg)
	if err != nil {
		log.Warn("cannot print configuration", "error", err)
		return
	}
	log.Info("configuration", "config", s)
}

// Main is the whole of a binary's main: it runs run with a context that ends on
// SIGINT or SIGTERM, and on error logs it once and exits 1.
func Main(name string, run func(ctx context.Context) error) {
	slog.SetDefault(newLogger(name, slog.LevelInfo)) // until the configured one replaces it
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil && !errors.Is(err, ErrHelp) {
		slog.Error("stopped", "error", err)
		os.Exit(1)
	}
}
