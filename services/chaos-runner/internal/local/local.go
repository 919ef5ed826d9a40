// Package local is the chaos runner's local driver: it runs the real pipeline
// on this machine (a NATS JetStream cluster, a Postgres cluster, versitygw as
// S3, and ingest, extract, similarity and the API as separate processes,
// optionally each on a host of its own) and attacks it: processes killed,
// paused or added, NATS nodes lost, Postgres crashed, S3 down, the network
// edges to NATS, Postgres and S3 slowed, narrowed, reset or blackholed, hosts
// partitioned, CPU burnt or squeezed.
// Every process it starts dies with the runner (the kernel's parent-death
// signal), so a runner that is itself killed leaves nothing running.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scale-dev/scale/internal/cgroup"
	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/freeport"
	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/natsembed"
	"github.com/scale-dev/scale/internal/objstore"
	"github.com/scale-dev/scale/internal/otlprecv"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/synth"
	"github.com/scale-dev/scale/internal/transport"
	"github.com/scale-dev/scale/internal/versitygw"
	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
	"github.com/scale-dev/scale/services/chaos-runner/internal/netlab"
)

// Options are the driver's settings.
type Options struct {
	Dir  string            // work folder: corpus, Postgres, NATS stores, logs
	Bins map[string]string // the pipeline's binaries by name (ingest, extract, similarity, api)
	Log  *slog.Logger
}

// Env is a running local pipeline.
type Env struct {
	exp     experiment.Experiment
	opts    Options
	pg      *pgServers
	PGURL   string // every Postgres server, direct (not through the edges), the primary's session
	NATS    *natsembed.Cluster
	s3      map[string]*versitygw.Server // the run's own S3 gateways by instance name (s3, or s3-1, s3-2)
	s3lb    *balancer                    // in front of the gateways when there are several
	Conn    *transport.Conn
	Store   *store.Store
	Files   []string    // the workload's source URLs
	APIAddr string      // where the API is served: its one process, or the load balancer in front of several
	Lab     *netlab.Lab // the hosts, with network: hosts; nil on loopback
	env     []string
	envOf   map[string][]string // settings of one instance on top of env
	apis    []string            // each API process's address (behind the balancer when more than one)
	lb      *balancer
	stopPG  context.CancelFunc // ends the Postgres failover manager
	traces  *otlprecv.Receiver // where the services export their spans; nil when the run traces nothing
	spansMu sync.Mutex
	spans   []otlprecv.Span

	edges *edges // the proxies network faults are put on

	mu    sync.Mutex
	procs map[string]*launcher.Process // running processes by instance name
	specs map[string]launcher.Spec
	nth   int // faults injected, for naming them
}

// Start brings the environment up: corpus, versitygw, Postgres, NATS, the
// hosts when the experiment asks for them, and every pipeline process but
// ingest (see StartIngest). On error, whatever was started is stopped.
func Start(ctx context.Context, exp experiment.Experiment, o Options) (_ *Env, err error) {
	e := &Env{exp: exp, opts: o, procs: map[string]*launcher.Process{}, specs: map[string]launcher.Spec{}, edges: newEdges(), envOf: map[string][]string{}}
	if n := cgroup.Sweep(); n > 0 {
		o.Log.Info("removed cgroups left by a runner that died", "count", n)
	}
	defer func() {
		if err != nil {
			e.Stop()
		}
	}()
	if err := os.MkdirAll(filepath.Join(o.Dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	s3, source, err := e.workload(ctx)
	if err != nil {
		return nil, err
	}

	if e.pg, err = startPostgres(ctx, o.Dir, exp.Environment.PostgresStandby, o.Log); err != nil {
		return nil, err
	}
	e.PGURL = e.pg.url(e.pg.direct(), "read-write")
	if e.Store, err = store.Open(ctx, e.PGURL, 30*time.Second); err != nil {
		return nil, err // the runner's own probes connect directly: a fault on the edge does not blind them
	}
	n := exp.Environment.NATSNodes
	if e.NATS, err = natsembed.StartCluster(n, func(i int) string { return filepath.Join(o.Dir, fmt.Sprintf("nats-%d", i+1)) }); err != nil {
		return nil, err
	}
	if e.Conn, err = transport.Connect(e.NATS.URL(), "chaos-runner", o.Log); err != nil {
		return nil, err
	}
	streams := events.StreamOptions{Replicas: n, DuplicateWindow: 2 * time.Minute}
	if err := transport.Provision(ctx, e.Conn.JS, o.Log, append(events.PipelineStreams(streams), events.ChaosStream(streams))...); err != nil {
		return nil, err
	}

	if exp.Environment.Network == experiment.Hosts {
		if e.Lab, err = netlab.New(filepath.Join(o.Dir, "netlab")); err != nil {
			return nil, fmt.Errorf("hosts: %w", err)
		}
	}
	// Every service reaches each Postgres server, each NATS node and S3
	// through an edge; so does the failover manager's check of each server.
	var pgEdges, pgChecks []string
	for i, direct := range e.pg.direct() {
		a, err := e.edge(e.pg.names[i], direct)
		if err != nil {
			return nil, err
		}
		pgEdges = append(pgEdges, a)
		pgChecks = append(pgChecks, e.pg.url([]string{e.edges.proxies[e.pg.names[i]].Listen}, ""))
	}
	e.pg.checkURLs = pgChecks
	var watchCtx context.Context
	watchCtx, e.stopPG = context.WithCancel(context.WithoutCancel(ctx))
	go e.pg.watch(watchCtx)
	var natsURLs []string
	for i := range n {
		a, err := e.edge(fmt.Sprintf("nats-%d", i+1), strings.TrimPrefix(e.NATS.ClientURL(i), "nats://"))
		if err != nil {
			return nil, err
		}
		natsURLs = append(natsURLs, "nats://"+a)
	}
	if exp.Workload.Corpus.ProxiedS3() {
		u, err := url.Parse(s3.Endpoint)
		if err != nil {
			return nil, err
		}
		addr := u.Host
		switch {
		case e.s3lb == nil:
			addr, err = e.edge("s3", u.Host)
		case e.Lab != nil: // the gateways' edges are behind the balancer
			addr, err = e.Lab.Forward("s3", u.Host)
		}
		if err != nil {
			return nil, err
		}
		s3.Endpoint = "http://" + addr
	}
	apis := exp.Instances("api")
	for _, name := range apis {
		addr, err := e.apiAddr(name)
		if err != nil {
			return nil, err
		}
		e.apis = append(e.apis, addr)
		// The API reads: from the standby when there is one, so that the
		// primary's loss does not reach it; the writers go to the primary.
		e.envOf[name] = []string{"SCALE_API_ADDR=" + addr, "SCALE_POSTGRES_URL=" + e.pg.url(pgEdges, "prefer-standby")}
	}
	e.APIAddr = e.apis[0]
	if len(apis) > 1 {
		var ln net.Listener
		if e.Lab != nil {
			ln, err = e.Lab.Listen("api-balancer")
		} else {
			ln, err = net.Listen("tcp", "127.0.0.1:0")
		}
		if err != nil {
			return nil, fmt.Errorf("the API's load balancer: %w", err)
		}
		e.lb = startBalancer(ln, e.apis, e.Dial)
		e.APIAddr = ln.Addr().String()
	}
	otelEnv, err := e.tracing()
	if err != nil {
		return nil, err
	}
	e.env = []string{
		"SCALE_NATS_URL=" + strings.Join(natsURLs, ","), "SCALE_NATS_DISCOVER=false",
		"SCALE_NATS_REPLICAS=" + strconv.Itoa(n), "SCALE_NATS_DUPLICATE_WINDOW=2m",
		"SCALE_POSTGRES_URL=" + e.pg.url(pgEdges, "read-write"),
		"SCALE_OPS_ADDR=127.0.0.1:0", "SCALE_OPS_LOG_LEVEL=warn", "SCALE_OPS_DRAIN_TIMEOUT=10s",
		"SCALE_INGEST_SOURCE=" + source, "SCALE_STORAGE_ENDPOINT=" + s3.Endpoint, "SCALE_STORAGE_PATH_STYLE=" + strconv.FormatBool(s3.PathStyle),
		"SCALE_STORAGE_REGION=" + s3.Region, "SCALE_STORAGE_ACCESS_KEY=" + s3.AccessKey, "SCALE_STORAGE_SECRET_KEY=" + s3.SecretKey,
		"SCALE_EXTRACT_CONCURRENCY=" + strconv.Itoa(exp.Environment.ExtractConcurrency),
		"SCALE_EXTRACT_ACK_WAIT=" + exp.Environment.ExtractAckWait.D().String(),
		"SCALE_SIMILARITY_ACK_WAIT=5s",
	}
	e.env = append(e.env, otelEnv...)
	for _, name := range append(append(exp.Instances("extract"), "similarity"), apis...) {
		if err := e.start(name); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// tracing starts the receiver of the services' spans when the experiment
// traces (environment.traceSample) and returns the OTEL_* settings that
// point the services at it: ingest samples that share of the files, the
// others follow its decision.
func (e *Env) tracing() ([]string, error) {
	sample := *e.exp.Environment.TraceSample
	if sample <= 0 {
		return nil, nil
	}
	var err error
	if e.traces, err = otlprecv.Start(func(s otlprecv.Span) {
		e.spansMu.Lock()
		e.spans = append(e.spans, s)
		e.spansMu.Unlock()
	}); err != nil {
		return nil, fmt.Errorf("the trace receiver: %w", err)
	}
	endpoint := e.traces.URL
	if e.Lab != nil {
		addr, err := e.Lab.Forward("otel-collector", strings.TrimPrefix(endpoint, "http://"))
		if err != nil {
			return nil, err
		}
		endpoint = "http://" + addr
	}
	return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + endpoint, "OTEL_TRACES_SAMPLER=parentbased_traceidratio",
		"OTEL_TRACES_SAMPLER_ARG=" + strconv.FormatFloat(sample, 'f', -1, 64), "OTEL_BSP_SCHEDULE_DELAY=500"}, nil
}

// Spans are the spans the services have exported so far.
func (e *Env) Spans() []otlprecv.Span {
	e.spansMu.Lock()
	defer e.spansMu.Unlock()
	return slices.Clone(e.spans)
}

// apiAddr is where an API process listens: port 8080 of its host, or a free
// port on loopback.
func (e *Env) apiAddr(name string) (string, error) {
	if e.Lab != nil {
		h, err := e.Lab.AddHost(name)
		if err != nil {
			return "", err
		}
		return netip.AddrPortFrom(h.Addr, 8080).String(), nil
	}
	port, err := freeport.Get()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", port), nil
}

// APIs are the addresses of the API processes (APIAddr is the balancer's
// when there are several).
func (e *Env) APIs() []string { return e.apis }

// Failovers are the Postgres failovers carried out so far.
func (e *Env) Failovers() []string { return e.pg.Failovers() }

// edge puts a proxy in front of a server (postgres, s3, nats-2) at
// upstream and returns the address the services connect to: the proxy's, or
// with hosts the server's component's address in the lab (one for all NATS
// nodes), forwarded to the proxy.
func (e *Env) edge(server, upstream string) (string, error) {
	proxy, err := e.edges.add(server, upstream)
	if err != nil || e.Lab == nil {
		return proxy, err
	}
	return e.Lab.Forward(binary(server), proxy)
}

// Dial connects to an address of the environment, such as the API's: with
// hosts, from the lab's switch.
func (e *Env) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if e.Lab != nil {
		return e.Lab.DialContext(ctx, network, addr)
	}
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

// workload lists the workload's files into e.Files and returns how the
// services reach them: a bucket or prefix that exists already, or the
// synthetic corpus or folder served as a bucket by a versitygw of the run's
// own (started here).
func (e *Env) workload(ctx context.Context) (objstore.S3Config, string, error) {
	var cfg objstore.S3Config
	source := ""
	if p := e.exp.Workload.Corpus.S3; p != nil {
		cfg, source = p.Config(), p.URL
	} else {
		dir, err := e.corpus(ctx)
		if err != nil {
			return cfg, "", err
		}
		// Gateways over one folder serve the same objects: versitygw's
		// posix backend keeps no state of its own, so several behind a
		// balancer is how it is run without a single point of failure.
		e.s3 = map[string]*versitygw.Server{}
		var addrs []string
		names := e.exp.Instances("s3")
		for _, name := range names {
			log := filepath.Join(e.opts.Dir, "logs", strings.Replace(name, "s3", "versitygw", 1)+".log")
			gw, err := versitygw.Start(filepath.Dir(dir), log, versitygw.Options{DieWithParent: true})
			if err != nil {
				return cfg, "", err
			}
			e.s3[name] = gw
			cfg = gw.Config
			addrs = append(addrs, gw.Addr)
		}
		source = "s3://" + filepath.Base(dir)
		if len(addrs) > 1 {
			// Each gateway has an edge of its own, between the balancer
			// and it, where its network faults go.
			for i, name := range names {
				if addrs[i], err = e.edges.add(name, addrs[i]); err != nil {
					return cfg, "", err
				}
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return cfg, "", fmt.Errorf("the S3 gateways' load balancer: %w", err)
			}
			e.s3lb = startBalancer(ln, addrs, (&net.Dialer{}).DialContext)
			cfg.Endpoint = "http://" + ln.Addr().String()
		}
	}
	client, err := objstore.New(ctx, cfg)
	if err != nil {
		return cfg, "", err
	}
	if e.Files, err = experiment.ListWorkload(ctx, client, source); err != nil {
		return cfg, "", err
	}
	e.opts.Log.Info("workload ready", "source", source, "files", len(e.Files))
	return cfg, source, nil
}

// corpus writes the synthetic corpus (or takes the folder) and returns its
// folder, which versitygw serves as a bucket of the same name.
func (e *Env) corpus(ctx context.Context) (string, error) {
	c := e.exp.Workload.Corpus
	if c.Folder != "" {
		return filepath.Abs(c.Folder)
	}
	shared, err := corpus.SharedDir()
	if err != nil {
		return "", fmt.Errorf("a synthetic corpus follows the shared corpus's statistics: %w", err)
	}
	st, err := synth.Measure(shared)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(e.opts.Dir, "s3", "corpus")
	return dir, synth.WriteCorpus(ctx, st, dir, c.Synthetic.Files, c.Synthetic.Seed, *c.Synthetic.Corrupt, nil)
}

// binary is the binary an instance runs: extract-2 runs extract.
func binary(instance string) string {
	if i := strings.LastIndexByte(instance, '-'); i > 0 {
		if _, err := strconv.Atoi(instance[i+1:]); err == nil {
			return instance[:i]
		}
	}
	return instance
}

// start starts (or starts again) an instance's process; one that is
// running already is left alone (two kills of one instance heal into one
// process, not two).
func (e *Env) start(name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p := e.procs[name]; p != nil {
		select {
		case <-p.Done():
		default:
			return nil
		}
	}
	spec, ok := e.specs[name]
	if !ok {
		bin := e.opts.Bins[binary(name)]
		if bin == "" {
			return fmt.Errorf("no binary for %s", name)
		}
		spec = launcher.Spec{Name: name, Binary: bin, Env: append(slices.Clip(e.env), e.envOf[name]...), DieWithParent: true}
		if e.Lab != nil {
			h := e.Lab.Host(name)
			if h == nil {
				var err error
				if h, err = e.Lab.AddHost(name); err != nil {
					return err
				}
			}
			spec.NetNS = h.NS()
		}
		e.specs[name] = spec
	}
	spec.LogPath = filepath.Join(e.opts.Dir, "logs", fmt.Sprintf("%s.%d.log", name, time.Now().UnixNano()))
	if err := os.MkdirAll(filepath.Dir(spec.LogPath), 0o755); err != nil {
		return err
	}
	p, err := launcher.Start(spec)
	if err != nil {
		return err
	}
	e.procs[name] = p
	return e.writeState()
}

// StateFile names the file in the work folder that lists what the
// environment runs: every process's PID and every proxy's address, so that
// anyone can check from outside that nothing outlives the runner.
const StateFile = "environment.json"

// State is the content of StateFile.
type State struct {
	Runner      int               `json:"runner"`       // the chaos runner's PID
	RunnerStart uint64            `json:"runner_start"` // and its start time (clock ticks since boot), which tells it from a later process given the same PID
	Processes   map[string]int    `json:"processes"`    // instance name (and "postgres", "s3") → PID
	Proxies     map[string]string `json:"proxies"`      // edge (postgres, s3, nats-1, ...) → its proxy's listen address
	Hosts       []int             `json:"hosts"`        // PIDs holding the hosts' network namespaces
}

// writeState writes StateFile; e.mu is held.
func (e *Env) writeState() error {
	st := State{Runner: os.Getpid(), Processes: map[string]int{}, Proxies: map[string]string{}}
	st.RunnerStart, _ = processStart(st.Runner)
	for name, p := range e.procs {
		st.Processes[name] = p.Pid()
	}
	if e.pg != nil {
		maps.Copy(st.Processes, e.pg.pids())
	}
	for name, gw := range e.s3 {
		st.Processes[name] = gw.Pid()
	}
	for name, p := range e.edges.proxies {
		st.Proxies[name] = p.Listen
	}
	if e.Lab != nil {
		st.Hosts = e.Lab.Pids()
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(e.opts.Dir, StateFile), data, 0o644)
}

// DB is the store the runner accounts with.
func (e *Env) DB() *store.Store { return e.Store }

// Stream is the JetStream context the runner reads the queues with.
func (e *Env) Stream() jetstream.JetStream { return e.Conn.JS }

// Workload is the workload's source URLs.
func (e *Env) Workload() []string { return e.Files }

// APIBase is where the API is served (its process or the balancer).
func (e *Env) APIBase() string { return e.APIAddr }

// StartIngest starts ingest: the workload begins.
//
// It returns once ingest's first files are in the work queue, or ingest has
// ended, or after a minute: the timeline that experiments count their "at"
// from begins with the work, not with the start of a process, which takes
// seconds on a loaded machine (a fault meant to meet ingest while it lists
// met nothing on such a machine).
func (e *Env) StartIngest() error {
	if err := e.start("ingest"); err != nil {
		return err
	}
	p := e.Process("ingest")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for !e.queued(ctx) {
		select {
		case <-p.Done():
			return nil
		case <-ctx.Done():
			e.opts.Log.Warn("ingest queued nothing within a minute; the workload's timeline starts now")
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// queued reports whether anything has been published to the work queue.
func (e *Env) queued(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := e.Conn.JS.Stream(ctx, events.StreamDiscovered)
	return err == nil && st.CachedInfo().State.LastSeq > 0
}

// Process is an instance's current process (nil if none).
func (e *Env) Process(name string) *launcher.Process {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.procs[name]
}

// Stop stops everything the environment started: processes (SIGTERM, then
// SIGKILL), NATS, Postgres.
func (e *Env) Stop() {
	e.mu.Lock()
	procs := e.procs
	e.procs = map[string]*launcher.Process{}
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Signal(syscall.SIGCONT) //nolint:errcheck // a paused process must be able to stop
			p.Stop(15 * time.Second)  //nolint:errcheck // stopping regardless
		}()
	}
	wg.Wait()
	if e.Conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		e.Conn.Close(ctx) //nolint:errcheck // teardown
		cancel()
	}
	if e.Store != nil {
		e.Store.Close()
	}
	if e.lb != nil {
		e.lb.close()
	}
	if e.traces != nil {
		e.traces.Close() // after the processes: their last spans are flushed as they stop
	}
	if e.stopPG != nil {
		e.stopPG()
	}
	if e.edges != nil {
		e.edges.close()
	}
	if e.Lab != nil {
		e.Lab.Close()
	}
	if e.s3lb != nil {
		e.s3lb.close()
	}
	for _, gw := range e.s3 {
		gw.Stop()
	}
	if e.NATS != nil {
		e.NATS.Shutdown()
	}
	if e.pg != nil {
		if err := e.pg.stop(); err != nil {
			e.opts.Log.Warn("stopping Postgres", "error", err)
		}
	}
}

// Inject applies one step of the plan and returns how to heal it, and the
// targets it hit (a "leader" target resolved to its node). A kill heals by
// starting the process again; a pause by resuming it; a lost NATS node or
// Postgres by starting it again.
func (e *Env) Inject(ctx context.Context, step experiment.Step) (heal func(context.Context) error, targets []string, err error) {
	if len(step.Targets) == 1 && step.Targets[0] == experiment.Leader {
		leader, err := e.streamLeader(ctx)
		if err != nil {
			return nil, step.Targets, err
		}
		step.Targets = []string{leader}
	}
	if len(step.Targets) == 1 && step.Targets[0] == experiment.Primary {
		step.Targets = []string{e.pg.primaryName()}
	}
	heal, err = e.inject(ctx, step)
	return heal, step.Targets, err
}

// streamLeader names the NATS node leading the work queue's stream.
func (e *Env) streamLeader(ctx context.Context) (string, error) {
	st, err := e.Conn.JS.Stream(ctx, events.StreamDiscovered)
	if err != nil {
		return "", fmt.Errorf("finding the stream leader: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("finding the stream leader: %w", err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "nats-1", nil // one node: it leads
	}
	for i, s := range e.NATS.Servers {
		if s != nil && s.Name() == info.Cluster.Leader {
			return fmt.Sprintf("nats-%d", i+1), nil
		}
	}
	return "", fmt.Errorf("the stream leader %q is none of the nodes", info.Cluster.Leader)
}

func (e *Env) inject(ctx context.Context, step experiment.Step) (heal func(context.Context) error, err error) {
	e.mu.Lock()
	e.nth++
	name := fmt.Sprintf("fault-%d", e.nth)
	e.mu.Unlock()
	switch step.Type {
	case "cpu-hog":
		return e.cpuHog(step)
	case "cpu-quota":
		return e.cpuQuota(step, name)
	case "network-partition":
		return e.partition(step)
	}
	if strings.HasPrefix(step.Type, "queue-") {
		return e.queueFault(ctx, step)
	}
	if strings.HasPrefix(step.Type, "network-") {
		var heals []func(context.Context) error
		for _, t := range step.Targets {
			h, err := e.edges.toxic(t, step, name)
			if err != nil {
				return nil, err
			}
			heals = append(heals, h)
		}
		return healAll(heals), nil
	}
	switch step.Type {
	case "process-kill":
		for _, t := range step.Targets {
			if p := e.Process(t); p != nil {
				p.Kill()
			}
		}
		return func(context.Context) error {
			var errs []error
			for _, t := range step.Targets {
				errs = append(errs, e.start(t))
			}
			return errors.Join(errs...)
		}, nil
	case "process-pause":
		var paused []*launcher.Process
		for _, t := range step.Targets {
			if p := e.Process(t); p != nil {
				if err := p.Signal(syscall.SIGSTOP); err != nil {
					return nil, err
				}
				paused = append(paused, p)
			}
		}
		return func(context.Context) error {
			var errs []error
			for _, p := range paused {
				errs = append(errs, p.Signal(syscall.SIGCONT))
			}
			return errors.Join(errs...)
		}, nil
	case "nats-node-kill":
		var nodes []int
		for _, t := range step.Targets {
			i, err := strconv.Atoi(strings.TrimPrefix(t, "nats-"))
			if err != nil {
				return nil, fmt.Errorf("target %s: %w", t, err)
			}
			e.NATS.Stop(i - 1)
			nodes = append(nodes, i-1)
		}
		return func(context.Context) error {
			var errs []error
			for _, i := range nodes {
				errs = append(errs, e.NATS.Restart(i))
			}
			return errors.Join(errs...)
		}, nil
	case "worker-add":
		for _, t := range step.Targets {
			if err := e.start(t); err != nil {
				return nil, err
			}
		}
		return func(context.Context) error { return nil }, nil // the workers stay
	case "s3-down":
		var heals []func(context.Context) error
		for _, t := range step.Targets {
			gw := e.s3[t]
			if gw == nil {
				return nil, fmt.Errorf("%s is not one of the run's own S3 gateways", t)
			}
			gw.Stop()
			heals = append(heals, func(context.Context) error { return gw.Restart() })
		}
		heals = append(heals, e.stateHeal)
		return healAll(heals), nil
	case "postgres-restart":
		var heals []func(context.Context) error
		for _, t := range step.Targets {
			h, err := e.pg.crash(t)
			if err != nil {
				return nil, err
			}
			heals = append(heals, h)
		}
		heals = append(heals, e.stateHeal)
		return healAll(heals), nil
	}
	return nil, fmt.Errorf("unknown fault type %q", step.Type)
}

// stateHeal writes StateFile again after a heal started processes anew.
func (e *Env) stateHeal(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.writeState()
}

// healAll heals in turn, whatever each heal's error.
func healAll(heals []func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		var errs []error
		for _, h := range heals {
			errs = append(errs, h(ctx))
		}
		return errors.Join(errs...)
	}
}

// Finished counts the files that are a song or a failure row now.
func (e *Env) Finished(ctx context.Context) (int, error) { return e.Store.Finished(ctx) }
