// Package runner runs a chaos experiment against the local driver: it starts
// the pipeline, measures a baseline, applies the plan's faults on time,
// heals each, checks the SLOs (with abort conditions evaluated while it
// runs), waits for the workload to finish, and then takes the exact
// accounting and compares the similarity lists with a brute force. Every
// step is published as a chaos.* event and kept in the journal.
package runner

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/otlprecv"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/telemetry"
	"github.com/scale-dev/scale/internal/transport"
	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
	"github.com/scale-dev/scale/services/chaos-runner/internal/kubeenv"
	"github.com/scale-dev/scale/services/chaos-runner/internal/local"
)

// Options are a run's settings.
type Options struct {
	Dir  string            // work folder
	Bins map[string]string // the pipeline's binaries
	Log  *slog.Logger
	// Plan, when set, is run instead of the experiment's own resolution: a
	// replay runs the plan its journal recorded.
	Plan *experiment.Plan
	// ReplayOf names the run a replay repeats.
	ReplayOf string
	// Kubeconfig is the kubeconfig of a kubernetes run (empty: in a pod, its
	// service account; else ~/.kube/config).
	Kubeconfig string
}

// PipelineBinaries are the binaries the local driver runs, by name, with
// their packages in the repository.
var PipelineBinaries = map[string]string{
	"ingest":     "./services/ingest/cmd/ingest",
	"extract":    "./services/extract/cmd/extract",
	"similarity": "./services/similarity/cmd/similarity",
	"api":        "./services/api/cmd/api",
}

// Binaries returns the pipeline's prebuilt binaries from dir, or builds them from the
// repository this command runs in (found by its go.work) into out.
func Binaries(dir, out string) (map[string]string, error) {
	if dir != "" {
		bins := map[string]string{}
		for name := range PipelineBinaries {
			p := filepath.Join(dir, name)
			if _, err := os.Stat(p); err != nil {
				return nil, fmt.Errorf("--bins %s: %w", dir, err)
			}
			bins[name] = p
		}
		return bins, nil
	}
	root, err := launcher.RepoRoot()
	if err != nil {
		return nil, fmt.Errorf("%w: give --bins", err)
	}
	return launcher.Build(root, out, PipelineBinaries)
}

// Environment is where an experiment runs: the local driver's pipeline
// (local.Env), or a release on Kubernetes (kubeenv.Env).
type Environment interface {
	DB() *store.Store            // the ledger the accounting reads
	Stream() jetstream.JetStream // the queues
	Workload() []string          // the workload's files
	APIBase() string             // where API load goes ("" without an API of the run's own)
	APIs() []string              // each API process's address (readiness)
	Dial(ctx context.Context, network, addr string) (net.Conn, error)
	StartIngest() error // the workload begins: steps' times count from its return
	Inject(ctx context.Context, step experiment.Step) (heal func(context.Context) error, targets []string, err error)
	Finished(ctx context.Context) (int, error)
	Spans() []otlprecv.Span // the services' traces (none when not collected)
	Failovers() []string    // the Postgres failovers the driver made
	Stop()
}

// startEnvironment brings up the experiment's environment.
func startEnvironment(ctx context.Context, exp experiment.Experiment, o Options) (Environment, error) {
	if exp.Environment.Type == experiment.Kubernetes {
		return kubeenv.Start(ctx, exp, kubeenv.Options{Kubeconfig: o.Kubeconfig, Log: o.Log})
	}
	env, err := local.Start(ctx, exp, local.Options{Dir: o.Dir, Bins: o.Bins, Log: o.Log})
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return env, nil
}

// sampleEvery is how often the probes run.
const sampleEvery = 250 * time.Millisecond

// Run runs the experiment and returns its journal; the journal's ExitCode
// says how it ended. Cancelling ctx (SIGINT, chaos-runner stop) heals every
// fault at once and ends the run as aborted.
func Run(ctx context.Context, exp experiment.Experiment, o Options) *Journal {
	start := time.Now().UTC()
	plan := exp.Resolve()
	if o.Plan != nil {
		plan = *o.Plan
	}
	j := &Journal{Run: fmt.Sprintf("%s-%s", exp.Name, start.Format("20060102T150405.000")), ReplayOf: o.ReplayOf,
		Experiment: exp, Plan: plan, Started: start}
	r := &run{exp: exp, o: o, j: j}
	ctx, span := telemetry.Tracer().Start(ctx, "experiment "+exp.Name, trace.WithAttributes(
		attribute.String("chaos.run", j.Run), attribute.Int64("chaos.seed", int64(exp.Seed))))
	defer func() {
		j.Ended = time.Now().UTC()
		span.SetAttributes(attribute.String("chaos.verdict", j.Verdict))
		span.End()
	}()
	env, err := startEnvironment(ctx, exp, o)
	if err != nil {
		return r.fail(err)
	}
	defer env.Stop()
	r.env = env
	r.publish(events.Chaos{Kind: events.ChaosStarted, Detail: exp.Description})
	r.publish(events.Chaos{Kind: events.ChaosResolved, Detail: j.Plan.String()})
	if err := r.waitReady(ctx); err != nil {
		return r.fail(err)
	}
	r.execute(ctx)
	return j
}

type run struct {
	exp experiment.Experiment
	o   Options
	j   *Journal
	env Environment
	seq int

	mu      sync.Mutex // guards the journal's samples and faults while the run goes on
	t0      time.Time
	load    *apiLoad
	abortCh chan string
}

func (r *run) fail(err error) *Journal {
	r.j.Verdict, r.j.ExitCode, r.j.Error = "error", ExitError, err.Error()
	r.o.Log.Error("the runner failed", "error", err)
	if r.env != nil {
		r.publish(events.Chaos{Kind: events.ChaosEnded, Detail: "error: " + err.Error()})
	}
	return r.j
}

// publish sends a chaos event; a failure to publish is logged, never fatal
// (the journal has the same facts).
func (r *run) publish(ev events.Chaos) {
	r.seq++
	ev.Run, ev.Experiment, ev.Seq, ev.At = r.j.Run, r.exp.Name, r.seq, time.Now().UTC()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := transport.PublishBatch(ctx, r.env.Stream(), ev.Subject(), []events.Chaos{ev}); err != nil {
		r.o.Log.Warn("publishing a chaos event", "kind", ev.Kind, "error", err)
	}
}

// waitReady waits until the workers consume and the API answers.
func (r *run) waitReady(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, 2*time.Minute)
	defer cancel()
	for {
		_, info, err := transport.Settled(ctx, r.env.Stream(), events.StreamDiscovered, events.ConsumerExtract)
		if err == nil && info != nil && apiReady(r.env) {
			return nil
		}
		if !transport.Sleep(ctx, 100*time.Millisecond) {
			if parent.Err() != nil {
				return parent.Err()
			}
			return fmt.Errorf("the pipeline was not ready within 2 minutes (extract consumer %v, API %s): see the logs under %s", info != nil, r.env.APIBase(), r.o.Dir)
		}
	}
}

// execute runs the workload and the method, then judges.
func (r *run) execute(ctx context.Context) {
	r.abortCh = make(chan string, 1)
	runCtx, stopProbes := context.WithCancel(context.WithoutCancel(ctx))
	if err := r.env.StartIngest(); err != nil {
		stopProbes()
		r.fail(err)
		return
	}
	r.t0 = time.Now()
	r.j.WorkloadStarted = r.t0.UTC()
	if api := r.exp.Workload.API; api != nil {
		r.load = startAPILoad(runCtx, r.env, *api, r.exp.Seed)
	}
	var probes sync.WaitGroup
	probes.Add(1)
	go func() {
		defer probes.Done()
		r.sample(runCtx)
	}()

	aborted := r.method(ctx)
	if aborted == "" {
		aborted = r.waitDone(ctx)
	}
	stopProbes()
	probes.Wait()
	// One last sample, so that the end of the work is in the samples even
	// when it came between two ticks.
	final := r.probe(context.WithoutCancel(ctx))
	r.j.Samples = append(r.j.Samples, final)
	if r.load != nil {
		r.load.stop()
	}
	r.judge(ctx, aborted)
}

// method applies the plan's steps on time and heals each after its
// duration. It returns a reason if the run was aborted (every fault is
// healed by then).
func (r *run) method(ctx context.Context) (aborted string) {
	var heals sync.WaitGroup
	healNow := make(chan struct{})
	var healOnce sync.Once
	defer func() {
		if aborted != "" {
			healOnce.Do(func() { close(healNow) })
		}
		heals.Wait()
	}()
	for i, step := range r.j.Plan.Steps {
		select {
		case <-time.After(time.Until(r.t0.Add(step.At.D()))):
		case reason := <-r.abortCh:
			return reason
		case <-ctx.Done():
			return "interrupted: " + context.Cause(ctx).Error()
		}
		injected := r.since() // before the injection: a crash takes effect while pg_ctl waits
		_, faultSpan := telemetry.Tracer().Start(ctx, "fault "+step.Fault, trace.WithAttributes(attribute.String("chaos.fault.type", step.Type)))
		heal, targets, err := r.env.Inject(ctx, step)
		faultSpan.SetAttributes(attribute.StringSlice("chaos.targets", targets))
		step.Targets = targets
		rec := FaultRecord{Step: step, Injected: injected}
		if err != nil {
			rec.Error = err.Error()
			r.o.Log.Error("injecting a fault", "fault", step.Fault, "targets", step.Targets, "error", err)
		}
		r.mu.Lock()
		r.j.Faults = append(r.j.Faults, rec)
		idx := len(r.j.Faults) - 1
		r.mu.Unlock()
		r.o.Log.Info("fault injected", "n", i+1, "of", len(r.j.Plan.Steps), "fault", step.Fault, "type", step.Type, "targets", step.Targets)
		r.publish(events.Chaos{Kind: events.ChaosInjected, Fault: step.Fault, FaultType: step.Type, Targets: step.Targets})
		if heal == nil {
			telemetry.End(faultSpan, err)
			continue
		}
		heals.Add(1)
		go func() {
			defer heals.Done()
			select {
			case <-time.After(step.Duration.D()):
			case <-healNow:
			}
			err := heal(context.WithoutCancel(ctx))
			at := r.since()
			r.mu.Lock()
			r.j.Faults[idx].Healed = &at
			if err != nil {
				r.j.Faults[idx].Error = "healing: " + err.Error()
			}
			r.mu.Unlock()
			telemetry.End(faultSpan, err)
			r.o.Log.Info("fault healed", "fault", step.Fault, "targets", step.Targets, "error", err)
			r.publish(events.Chaos{Kind: events.ChaosHealed, Fault: step.Fault, FaultType: step.Type, Targets: step.Targets})
		}()
	}
	// Every fault healed, unless an abort comes first.
	healed := make(chan struct{})
	go func() { heals.Wait(); close(healed) }()
	select {
	case <-healed:
		return ""
	case reason := <-r.abortCh:
		return reason
	case <-ctx.Done():
		return "interrupted: " + context.Cause(ctx).Error()
	}
}

// waitDone waits until every file has an outcome and both stages' consumers
// have settled, or the settle time is up (the files left are then reported
// as stuck).
func (r *run) waitDone(ctx context.Context) (aborted string) {
	deadline := time.Now().Add(r.exp.Settle.D())
	for time.Now().Before(deadline) {
		if r.done(ctx) {
			return ""
		}
		select {
		case reason := <-r.abortCh:
			return reason
		case <-ctx.Done():
			return "interrupted: " + context.Cause(ctx).Error()
		case <-time.After(200 * time.Millisecond):
		}
	}
	r.o.Log.Warn("the workload did not finish within the settle time", "settle", r.exp.Settle.D())
	return ""
}

func (r *run) done(ctx context.Context) bool {
	a, err := r.env.DB().Account(ctx)
	if err != nil || a.Discovered < int64(len(r.env.Workload())) || a.Pending > 0 {
		return false
	}
	for _, c := range [][2]string{{events.StreamDiscovered, events.ConsumerExtract}, {events.StreamOutcomes, events.ConsumerSimilarity}} {
		if ok, _, err := transport.Settled(ctx, r.env.Stream(), c[0], c[1]); err != nil || !ok {
			return false
		}
	}
	return true
}

func (r *run) since() float64 { return time.Since(r.t0).Seconds() }

// sample runs the probes every sampleEvery until ctx ends, and fires abort
// conditions.
func (r *run) sample(ctx context.Context) {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := r.probe(ctx)
		r.mu.Lock()
		r.j.Samples = append(r.j.Samples, s)
		samples := r.j.Samples
		r.mu.Unlock()
		if reason := r.checkAbort(samples); reason != "" {
			select {
			case r.abortCh <- reason:
				r.publish(events.Chaos{Kind: events.ChaosBreached, Detail: reason})
			default:
			}
			return
		}
	}
}

// abortWindow is the trailing window abort conditions are evaluated on.
const abortWindow = 2 * time.Second

// checkAbort evaluates the abortOnFail SLOs on the trailing window.
func (r *run) checkAbort(samples []Sample) string {
	now := samples[len(samples)-1].T
	from := now - abortWindow.Seconds()
	for _, s := range r.exp.SLOs {
		if !s.AbortOnFail || now < s.DelayAbortEval.D().Seconds() || now < abortWindow.Seconds() {
			continue
		}
		th, _ := experiment.ParseThreshold(s.Threshold)
		v, ok := r.metric(s.Metric, samples, from, now)
		if ok && !th.Holds(v) {
			return fmt.Sprintf("abort condition %q failed at %.1f s: %s over the last %v", s.Name, now, formatValue(s.Metric, v), abortWindow)
		}
	}
	return ""
}

// probe takes one sample. Only the sampler calls it while the run goes on;
// the final sample is taken after the sampler has stopped.
func (r *run) probe(ctx context.Context) Sample {
	now := time.Now()
	s := Sample{T: now.Sub(r.t0).Seconds()}
	var last Sample
	if n := len(r.j.Samples); n > 0 {
		last = r.j.Samples[n-1] // only this goroutine appends
	}
	// A probe that cannot read (its dependency is the one under attack)
	// keeps the last reading.
	s.Finished, s.Backlog, s.Waiting = last.Finished, last.Backlog, last.Waiting
	// A probe must not hold the sampler up while Postgres is under attack.
	fctx, cancel := context.WithTimeout(ctx, time.Second)
	n, err := r.env.Finished(fctx)
	cancel()
	if err == nil {
		s.Finished = n
	}
	if _, info, err := transport.Settled(ctx, r.env.Stream(), events.StreamDiscovered, events.ConsumerExtract); err == nil && info != nil {
		s.Backlog, s.Waiting = info.NumPending+uint64(info.NumAckPending), info.NumPending
	}
	if r.load != nil {
		w := r.load.window(now)
		s.API = &w
	}
	return s
}
