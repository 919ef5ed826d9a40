// Package kubeenv is the chaos runner's environment for a Scale release
// already running on Kubernetes (environment.type: kubernetes): the runner
// reaches the release's NATS and Postgres with the services' own settings
// (SCALE_NATS_URL, SCALE_POSTGRES_URL, SCALE_NATS_REPLICAS), lists and ingests the workload
// itself, kills the release's pods through the Kubernetes API (the kube
// driver), and accounts for every file exactly as it does locally.
package kubeenv

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"

	"github.com/scale-dev/scale/internal/objstore"
	"github.com/scale-dev/scale/internal/otlprecv"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/transport"
	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
	"github.com/scale-dev/scale/services/chaos-runner/internal/kube"
	"github.com/scale-dev/scale/services/ingest"
)

// Options are the environment's settings.
type Options struct {
	Kubeconfig string // empty: the pod's service account, else ~/.kube/config
	Log        *slog.Logger
}

// Env is a release on a cluster.
type Env struct {
	exp     experiment.Experiment
	log     *slog.Logger
	driver  kube.Driver
	conn    *transport.Conn
	store   *store.Store
	objects *objstore.Client
	source  string
	files   []string
	ingest  sync.WaitGroup
	cancel  context.CancelFunc
}

// Start connects to the cluster, NATS and Postgres and lists the workload.
func Start(ctx context.Context, exp experiment.Experiment, o Options) (_ *Env, err error) {
	e := &Env{exp: exp, log: o.Log}
	defer func() {
		if err != nil {
			e.Stop()
		}
	}()
	cfg, err := kube.Config(o.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("the cluster: %w", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	e.driver = kube.Driver{Client: client, Self: kube.SelfFromEnv()}
	natsURL, pgURL := os.Getenv("SCALE_NATS_URL"), os.Getenv("SCALE_POSTGRES_URL")
	if natsURL == "" || pgURL == "" {
		return nil, errors.New("a kubernetes run reaches the release's NATS and Postgres as the services do: set SCALE_NATS_URL and SCALE_POSTGRES_URL (a writer login)")
	}
	if e.conn, err = transport.Connect(natsURL, "chaos-runner", o.Log); err != nil {
		return nil, err
	}
	// The runner's own stream (its events: chaos.*), sized as the release's.
	replicas, _ := strconv.Atoi(os.Getenv("SCALE_NATS_REPLICAS"))
	if err := transport.Provision(ctx, e.conn.JS, o.Log, events.ChaosStream(events.StreamOptions{Replicas: max(replicas, 1), DuplicateWindow: 10 * time.Minute})); err != nil {
		return nil, err
	}
	if e.store, err = store.Connect(ctx, pgURL, 30*time.Second); err != nil {
		return nil, err
	}
	// The release's migration Job owns the schema: the runner only waits for it.
	if err := e.store.WaitMigrated(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	if err := e.workload(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// workload lists the corpus: an S3 prefix the release's pods read, or a
// folder (when the pods run on this machine, as in the control-plane test).
func (e *Env) workload(ctx context.Context) error {
	cfg := experiment.S3Prefix{}.Config() // a folder: no endpoint
	e.source = e.exp.Workload.Corpus.Folder
	if p := e.exp.Workload.Corpus.S3; p != nil {
		cfg, e.source = p.Config(), p.URL
	}
	var err error
	if e.objects, err = objstore.New(ctx, cfg); err != nil {
		return err
	}
	if e.files, err = experiment.ListWorkload(ctx, e.objects, e.source); err != nil {
		return err
	}
	e.log.Info("workload ready", "source", e.source, "files", len(e.files))
	return nil
}

// DB is the release's Postgres.
func (e *Env) DB() *store.Store { return e.store }

// Stream is the release's JetStream.
func (e *Env) Stream() jetstream.JetStream { return e.conn.JS }

// Workload is the workload's source URLs.
func (e *Env) Workload() []string { return e.files }

// APIBase is "": API load runs locally only.
func (e *Env) APIBase() string { return "" }

// APIs is none: the runner does not wait for the release's API.
func (e *Env) APIs() []string { return nil }

// Dial dials directly.
func (e *Env) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

// StartIngest runs ingest in the runner over the workload: the workload begins.
func (e *Env) StartIngest() error {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.ingest.Add(1)
	go func() {
		defer e.ingest.Done()
		res, err := ingest.Run(ctx, ingest.Deps{JS: e.conn.JS, Store: e.store, Objects: e.objects, Log: e.log, Metrics: prometheus.NewRegistry()},
			ingest.Options{Source: e.source})
		if err != nil && ctx.Err() == nil {
			e.log.Error("ingesting the workload", "error", err)
			return
		}
		e.log.Info("workload ingested", "result", fmt.Sprintf("%+v", res))
	}()
	return nil
}

// Inject kills the release's pods: a pod-kill picks them now, from the
// experiment's seed and the step's time (the pods a cluster runs change).
func (e *Env) Inject(ctx context.Context, step experiment.Step) (func(context.Context) error, []string, error) {
	if step.Type != "pod-kill" {
		return nil, nil, fmt.Errorf("a kubernetes run injects pod-kill faults only, not %s", step.Type)
	}
	mode := map[string]string{"": kube.One, "one": kube.One, "all": kube.All, "fixed": kube.Fixed, "percent": kube.FixedPercent}[step.Mode]
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", step.Fault, step.At)
	target := kube.Target{Namespace: e.exp.Environment.Namespace, Mode: mode, Value: step.Value,
		Selector: fmt.Sprintf("app.kubernetes.io/instance=%s,app.kubernetes.io/component=%s", e.exp.Environment.Release, step.Component)}
	out, err := e.driver.Attack(ctx, target, step.How, -1, e.exp.Seed^h.Sum64())
	var killed []string
	for _, o := range out {
		name := o.Pod[strings.LastIndexByte(o.Pod, '/')+1:]
		if o.Refused != "" {
			name += " (eviction refused)"
		}
		killed = append(killed, name)
	}
	return nil, killed, err
}

// Finished counts the files that are a song or a failure now.
func (e *Env) Finished(ctx context.Context) (int, error) { return e.store.Finished(ctx) }

// Spans is none: a kubernetes run does not collect the services' traces.
func (e *Env) Spans() []otlprecv.Span { return nil }

// Failovers is none: the cluster's Postgres operator fails over, not the runner.
func (e *Env) Failovers() []string { return nil }

// Stop stops ingest and closes the connections; the release runs on.
func (e *Env) Stop() {
	if e.cancel != nil {
		e.cancel()
	}
	e.ingest.Wait()
	if e.conn != nil {
		e.conn.Close(context.Background()) //nolint:errcheck // closing
	}
	if e.store != nil {
		e.store.Close()
	}
}
