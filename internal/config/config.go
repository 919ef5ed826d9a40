// Package config holds the configuration groups the services share, parsed from
// flags and SCALE_* environment variables by ardanlabs/conf, with defaults that
// reach services on localhost (the docker-compose layout).
package config

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
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
	URL     string        `conf:"default:postgres://scale@127.0.0.1:5432/scale?sslmode=disable,mask,help:Postgres connection URL"`
	Wait    time.Duration `conf:"default:30s,help:how long to wait for Postgres at start-up"`
	Migrate bool          `conf:"default:true,help:apply the schema migrations at start-up; false waits (up to the wait) for another process to have applied them: 'extract migrate' run with an owner login (the Helm chart's migration Job)"`
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

// defaultOpsAddr is Ops.Addr's default (its tag cannot name a constant; a test
// holds the two equal).
const defaultOpsAddr = "127.0.0.1:9090"

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
//
// `NAME probe [PATH]` instead asks the process's own ops endpoint
// ($SCALE_OPS_ADDR) for PATH (default /readyz) and exits 0 on a 200: the
// health check of a container image that has no shell and no HTTP client
// (docker-compose's healthcheck).
func Main(name string, run func(ctx context.Context) error) {
	if len(os.Args) > 1 && os.Args[1] == "probe" {
		path := "/readyz"
		if len(os.Args) > 2 {
			path = os.Args[2]
		}
		if err := Probe(os.Getenv(Prefix+"_OPS_ADDR"), path, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "%s probe: %v\n", name, err)
			os.Exit(1)
		}
		return
	}
	slog.SetDefault(newLogger(name, slog.LevelInfo)) // until the configured one replaces it
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil && !errors.Is(err, ErrHelp) {
		slog.Error("stopped", "error", err)
		os.Exit(1)
	}
}

// Probe GETs path from the ops endpoint listening on addr (the Ops.Addr
// default when empty; a wildcard host is asked on loopback), copies the answer
// to out and fails unless it is a 200.
func Probe(addr, path string, out io.Writer) error {
	if addr == "" {
		addr = defaultOpsAddr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("ops address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	client := http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + net.JoinHostPort(host, port) + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(out, io.LimitReader(resp.Body, 64<<10)); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	return nil
}

// GCPercent sets the garbage collector's target (what GOGC sets) to percent
// unless GOGC is in the environment, which wins. A process whose heap is small
// and short-lived (the extract worker: a batch's files, parsed and dropped)
// collects about as often as it allocates its live heap's size; a higher
// target trades a few MiB for fewer collections (docs/benchmarks.md).
func GCPercent(percent int) {
	if _, set := os.LookupEnv("GOGC"); set {
		return
	}
	debug.SetGCPercent(percent)
}
