// Command chaos-runner runs chaos experiments against the real Scale pipeline
// and answers, with numbers, whether the SLOs held, whether any file was lost
// or counted twice, and how long recovery took.
//
//	chaos-runner validate FILE...      check experiment files (line-numbered errors)
//	chaos-runner run [flags] FILE      run an experiment (--dry-run prints the plan)
//	chaos-runner replay [flags] JOURNAL run a journal's plan again and say where the outcome differs
//	chaos-runner sweep [flags]         every component × every fault class; the single points of failure
//	chaos-runner schedule [flags]      run experiments on cron expressions, serving their reports
//	chaos-runner stop DIR              stop the run working in DIR, healing every fault
//	chaos-runner report JOURNAL [HTML] write a journal's self-contained HTML report
//	chaos-runner schema                print the experiment files' JSON Schema
//	chaos-runner pods kill [flags]     kill pods of a Kubernetes namespace (client-go)
//	chaos-runner nodes drain NODE      cordon a node and evict its pods (also cordon, uncordon)
//
// It is its own module so that client-go's dependency graph (the Kubernetes
// driver) stays out of the pipeline services.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/scale-dev/scale/internal/ops"
	"github.com/scale-dev/scale/internal/telemetry"
	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
	"github.com/scale-dev/scale/services/chaos-runner/internal/kube"
	"github.com/scale-dev/scale/services/chaos-runner/internal/local"
	"github.com/scale-dev/scale/services/chaos-runner/internal/runner"
	"github.com/scale-dev/scale/services/chaos-runner/internal/schedule"
	"github.com/scale-dev/scale/services/chaos-runner/internal/sweep"
)

const usage = `chaos-runner: chaos experiments against the real Scale pipeline

  chaos-runner validate FILE...   check experiment files; errors name the line
  chaos-runner run [flags] FILE   run an experiment: on this machine (environment: local) or against a release on
                                  Kubernetes (environment: kubernetes)
  chaos-runner replay [flags] JOURNAL  run a journal's plan again (same seed, targets, times) and say where the
                                  outcome differs; takes the run flags
  chaos-runner sweep [--dir DIR] [--bins DIR] [--files N] [--api-rate N] [--seed N] [--only TEXT] [--ha]
                                  attack every component with every fault class that applies, one cell at a
                                  time (cells whose component or fault contains TEXT with --only); writes
                                  sweep.json and sweep.html (a colored matrix) and names the single points of
                                  failure; exit 1 if any cell lost or duplicated a file or could not run.
                                  --ha: every cell with the remedies (a Postgres standby the runner promotes
                                  when the primary is lost; two API processes and two S3 gateways, each pair
                                  behind a load balancer)
  chaos-runner schedule --config FILE [--dir DIR] [--listen ADDR] [--bins DIR]
                                  run experiments on cron expressions, one at a time (a run due while another
                                  runs is skipped), keeping the last runs' journals and reports in DIR
                                  (default chaos-runs) and serving them (an index at / and /runs.json),
                                  with /metrics, on ADDR (default 127.0.0.1:9095)
  chaos-runner stop DIR           stop the run whose --dir is DIR, as SIGINT does: every fault healed, exit 2
  chaos-runner report JOURNAL [HTML]  write the HTML report of a journal (default: beside it, report.html)
  chaos-runner schema             print the JSON Schema of experiment files
  chaos-runner pods kill --namespace NS --selector LABELS [--mode M] [--value V] [--how H] [--grace S]
                    [--seed N] [--kubeconfig FILE]
                                  kill pods on Kubernetes: only pods labelled scale.dev/chaos-target=true, never
                                  the runner's own (POD_NAMESPACE/POD_NAME); --mode one (default), all, fixed,
                                  fixed-percent (rounded up, at least 1) or random-max-percent with --value,
                                  drawn from --seed without replacement; --how delete (with --grace seconds,
                                  default the pod's own), force (grace 0) or evict (refused while a
                                  PodDisruptionBudget allows no disruption). Prints one JSON line per pod.
                                  In a pod it uses its service account; else --kubeconfig or ~/.kube/config.
  chaos-runner nodes cordon|uncordon|drain NODE [--kubeconfig FILE]
                                  a node made unschedulable (or schedulable again), or drained: cordoned and its
                                  pods evicted as kubectl drain does (an eviction a PodDisruptionBudget refuses is
                                  tried again for up to --timeout, default 2m). Needs the chart's opt-in node role
                                  (chaosRunner.nodeAttacks).

run flags:
  --dry-run        print the resolved plan (every target, every fault time) and touch nothing
  --journal PATH   where to write the JSON journal (default: <dir>/journal.json); the HTML report goes beside it
  --dir DIR        work folder: corpus, Postgres, NATS stores, process logs (default: a new temporary folder)
  --bins DIR       prebuilt ingest, extract, similarity and api binaries (default: built from this repository)
  --kubeconfig F   environment kubernetes: the cluster (default $KUBECONFIG; in a pod its service account; else
                   ~/.kube/config). The runner reaches the release's NATS and Postgres with SCALE_NATS_URL and
                   SCALE_POSTGRES_URL (a writer login), ingests the workload itself (corpus.s3, or corpus.folder when
                   the pods run on this machine) and kills the release's pods (pod-kill faults)

environment of a kubernetes run (the release's own settings, with the runner's logins):
  SCALE_NATS_URL             the release's NATS
  SCALE_NATS_REPLICAS        replicas of the runner's event stream (default 1)
  SCALE_POSTGRES_URL         the release's Postgres (a writer login: the runner records the workload it ingests)
  SCALE_STORAGE_ACCESS_KEY   the workload bucket's access key (empty: the AWS default credential chain)
  SCALE_STORAGE_SECRET_KEY   its secret key
  POD_NAMESPACE, POD_NAME    the runner's own pod, never attacked (the chart sets them)

Exit codes: 0 passed, 1 an SLO or the accounting failed, 2 aborted (an abort condition fired, or SIGINT;
every fault healed), 3 the runner itself failed (or a bad file or flag).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The runner's own spans (an experiment, each fault) go where the
	// standard OTEL_* variables say, if anywhere.
	stopTracing, err := telemetry.Setup(ctx, "chaos-runner")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos-runner:", err)
		os.Exit(runner.ExitError)
	}
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := stopTracing(flushCtx); err != nil {
		fmt.Fprintln(os.Stderr, "chaos-runner: flushing traces:", err)
	}
	cancel()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	switch args[0] {
	case "schema":
		stdout.Write(experiment.Schema()) //nolint:errcheck // stdout
		return 0
	case "validate":
		if len(args) < 2 {
			fmt.Fprint(stderr, usage)
			return runner.ExitError
		}
		code := 0
		for _, f := range args[1:] {
			if _, err := experiment.LoadFile(f); err != nil {
				fmt.Fprintln(stderr, err)
				code = 1
				continue
			}
			fmt.Fprintf(stdout, "%s: ok\n", f)
		}
		return code
	case "run", "replay":
		return runExperiment(ctx, args[0] == "replay", args[1:], stdout, stderr)
	case "sweep":
		return runSweep(ctx, args[1:], stdout, stderr)
	case "schedule":
		return runSchedule(ctx, args[1:], stderr)
	case "stop":
		if len(args) != 2 {
			fmt.Fprint(stderr, usage)
			return runner.ExitError
		}
		if err := local.StopRunner(args[1], 2*time.Minute); err != nil {
			fmt.Fprintln(stderr, "chaos-runner:", err)
			return runner.ExitError
		}
		fmt.Fprintln(stdout, "stopped; every fault healed")
		return 0
	case "pods":
		if len(args) < 2 || args[1] != "kill" {
			fmt.Fprint(stderr, usage)
			return runner.ExitError
		}
		return killPods(ctx, args[2:], stdout, stderr)
	case "nodes":
		return nodeAttack(ctx, args[1:], stdout, stderr)
	case "report":
		if len(args) < 2 || len(args) > 3 {
			fmt.Fprint(stderr, usage)
			return runner.ExitError
		}
		j, err := runner.ReadJournal(args[1])
		if err != nil {
			fmt.Fprintln(stderr, "chaos-runner:", err)
			return runner.ExitError
		}
		out := filepath.Join(filepath.Dir(args[1]), "report.html")
		if len(args) == 3 {
			out = args[2]
		}
		if err := j.WriteReport(out); err != nil {
			fmt.Fprintln(stderr, "chaos-runner:", err)
			return runner.ExitError
		}
		fmt.Fprintln(stdout, out)
		return 0
	}
	fmt.Fprintf(stderr, "chaos-runner: unknown command %q\n\n%s", args[0], usage)
	return runner.ExitError
}

// runExperiment runs an experiment file, or with replay the plan of a
// journal again, comparing the outcomes.
func runExperiment(ctx context.Context, replay bool, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dryRun := fs.Bool("dry-run", false, "")
	journalPath := fs.String("journal", "", "")
	dir := fs.String("dir", "", "")
	binDir := fs.String("bins", "", "")
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "")
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		if err == nil {
			fmt.Fprint(stderr, usage)
		}
		return runner.ExitError
	}
	var (
		exp  experiment.Experiment
		prev *runner.Journal
		err  error
	)
	if replay {
		if prev, err = runner.ReadJournal(fs.Arg(0)); err != nil {
			fmt.Fprintln(stderr, "chaos-runner:", err)
			return runner.ExitError
		}
		exp = prev.Experiment
		if own := exp.Resolve(); own.String() != prev.Plan.String() {
			fmt.Fprintf(stdout, "note: this chaos-runner resolves %s to a different plan than the journal's; replaying the journal's\n", exp.Name)
		}
	} else if exp, err = experiment.LoadFile(fs.Arg(0)); err != nil {
		fmt.Fprintln(stderr, err)
		return runner.ExitError
	}
	if *dryRun {
		fmt.Fprintf(stdout, "experiment %s: environment %s, %d extract workers, %d NATS node(s), network %s\n", exp.Name, exp.Environment.Type,
			exp.Environment.ExtractWorkers, exp.Environment.NATSNodes, exp.Environment.Network)
		if prev != nil {
			fmt.Fprint(stdout, prev.Plan)
		} else {
			fmt.Fprint(stdout, exp.Resolve())
		}
		return 0
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("service", "chaos-runner", "experiment", exp.Name)
	if *dir == "" {
		if *dir, err = os.MkdirTemp("", "chaos-"+exp.Name+"-"); err != nil {
			fmt.Fprintln(stderr, err)
			return runner.ExitError
		}
	}
	if *journalPath == "" {
		*journalPath = filepath.Join(*dir, "journal.json")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintln(stderr, "chaos-runner:", err)
		return runner.ExitError
	}
	log.Info("work folder (chaos-runner stop DIR ends the run)", "dir", *dir)
	opts := runner.Options{Dir: *dir, Log: log, Kubeconfig: *kubeconfig}
	if exp.Environment.Type != experiment.Kubernetes { // a release on a cluster runs its own binaries
		if opts.Bins, err = runner.Binaries(*binDir, filepath.Join(*dir, "bin")); err != nil {
			fmt.Fprintln(stderr, "chaos-runner:", err)
			return runner.ExitError
		}
	}
	var j *runner.Journal
	if prev != nil {
		j = runner.Replay(ctx, prev, opts)
	} else {
		j = runner.Run(ctx, exp, opts)
	}
	if err := j.Write(*journalPath); err != nil {
		fmt.Fprintln(stderr, "chaos-runner: writing the journal:", err)
		return runner.ExitError
	}
	report := filepath.Join(filepath.Dir(*journalPath), "report.html")
	if err := j.WriteReport(report); err != nil {
		fmt.Fprintln(stderr, "chaos-runner: writing the report:", err)
		return runner.ExitError
	}
	fmt.Fprint(stdout, j.Summary())
	fmt.Fprintf(stdout, "  journal: %s\n  report: %s\n", *journalPath, report)
	if prev != nil {
		fmt.Fprint(stdout, runner.DifferencesText(prev, j))
	}
	return j.ExitCode
}

// runSchedule runs a schedule file until ctx ends.
func runSchedule(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("schedule", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "")
	dir := fs.String("dir", "chaos-runs", "")
	listen := fs.String("listen", "127.0.0.1:9095", "")
	binDir := fs.String("bins", "", "")
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	if err := fs.Parse(args); err != nil || *file == "" || fs.NArg() != 0 {
		if err == nil {
			fmt.Fprint(stderr, usage)
		}
		return runner.ExitError
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("service", "chaos-runner")
	fail := func(err error) int {
		log.Error("schedule stopped", "error", err)
		return runner.ExitError
	}
	cfg, err := schedule.LoadConfig(*file)
	if err != nil {
		return fail(err)
	}
	bins, err := runner.Binaries(*binDir, filepath.Join(*dir, "bin"))
	if err != nil {
		return fail(err)
	}
	reg, health := ops.NewRegistry(), ops.NewHealth()
	health.SetPhase(ops.Running)
	srv, err := ops.Listen(*listen, reg, health, log)
	if err != nil {
		return fail(err)
	}
	s := schedule.New(cfg, *dir, func(ctx context.Context, exp experiment.Experiment, work string) *runner.Journal {
		return runner.Run(ctx, exp, runner.Options{Dir: work, Bins: bins, Log: log.With("experiment", exp.Name)})
	}, reg, log)
	srv.Mount(s.Handler())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	if err := s.Run(ctx); err != nil {
		return fail(err)
	}
	if err := <-served; err != nil {
		return fail(err)
	}
	return 0
}

// killPods is `chaos-runner pods kill`.
func killPods(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pods kill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	var t kube.Target
	fs.StringVar(&t.Namespace, "namespace", "", "")
	fs.StringVar(&t.Selector, "selector", "", "")
	fs.StringVar(&t.Mode, "mode", kube.One, "")
	fs.Float64Var(&t.Value, "value", 0, "")
	how := fs.String("how", kube.Delete, "")
	grace := fs.Int64("grace", -1, "")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "")
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "")
	if err := fs.Parse(args); err != nil || t.Namespace == "" || fs.NArg() != 0 {
		if err == nil {
			fmt.Fprint(stderr, usage)
		}
		return runner.ExitError
	}
	driver, err := kubeDriver(*kubeconfig)
	if err != nil {
		fmt.Fprintln(stderr, "chaos-runner:", err)
		return runner.ExitError
	}
	out, err := driver.Attack(ctx, t, *how, *grace, *seed)
	return printOutcomes(out, err, stdout, stderr)
}

// nodeAttack is `chaos-runner nodes cordon|uncordon|drain NODE`.
func nodeAttack(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nodes", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "")
	timeout := fs.Duration("timeout", 2*time.Minute, "")
	if len(args) < 2 || (args[0] != "cordon" && args[0] != "uncordon" && args[0] != "drain") {
		fmt.Fprint(stderr, usage)
		return runner.ExitError
	}
	verb, node := args[0], args[1]
	if err := fs.Parse(args[2:]); err != nil || fs.NArg() != 0 {
		return runner.ExitError
	}
	driver, err := kubeDriver(*kubeconfig)
	if err != nil {
		fmt.Fprintln(stderr, "chaos-runner:", err)
		return runner.ExitError
	}
	if verb != "drain" {
		return printOutcomes(nil, driver.Cordon(ctx, node, verb == "cordon"), stdout, stderr)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	out, err := driver.Drain(ctx, node)
	return printOutcomes(out, err, stdout, stderr)
}

// kubeDriver is the Kubernetes driver for a kubeconfig (or the pod's service account).
func kubeDriver(kubeconfig string) (kube.Driver, error) {
	cfg, err := kube.Config(kubeconfig)
	if err != nil {
		return kube.Driver{}, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return kube.Driver{}, err
	}
	return kube.Driver{Client: client, Self: kube.SelfFromEnv()}, nil
}

// printOutcomes prints one JSON line per pod, and the error.
func printOutcomes(out []kube.Outcome, err error, stdout, stderr io.Writer) int {
	enc := json.NewEncoder(stdout)
	for _, o := range out {
		enc.Encode(o) //nolint:errcheck // stdout
	}
	if err != nil {
		fmt.Fprintln(stderr, "chaos-runner:", err)
		return runner.ExitError
	}
	return 0
}

// runSweep runs the resilience sweep.
func runSweep(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sweep", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "")
	binDir := fs.String("bins", "", "")
	files := fs.Int("files", 4000, "")
	apiRate := fs.Int("api-rate", 100, "")
	seed := fs.Uint64("seed", 1, "")
	only := fs.String("only", "", "")
	ha := fs.Bool("ha", false, "")
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		if err == nil {
			fmt.Fprint(stderr, usage)
		}
		return runner.ExitError
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("service", "chaos-runner")
	var err error
	if *dir == "" {
		if *dir, err = os.MkdirTemp("", "chaos-sweep-"); err != nil {
			fmt.Fprintln(stderr, err)
			return runner.ExitError
		}
	}
	bins, err := runner.Binaries(*binDir, filepath.Join(*dir, "bin"))
	if err != nil {
		fmt.Fprintln(stderr, "chaos-runner:", err)
		return runner.ExitError
	}
	var cells []sweep.Cell
	for _, c := range sweep.Cells() {
		if strings.Contains(c.Component, *only) || strings.Contains(c.Fault, *only) {
			cells = append(cells, c)
		}
	}
	if len(cells) == 0 {
		fmt.Fprintf(stderr, "chaos-runner: no cell matches %q\n", *only)
		return runner.ExitError
	}
	m, err := sweep.Run(ctx, cells, sweep.Options{Dir: *dir, Bins: bins, Log: log, Files: *files, APIRate: *apiRate, Seed: *seed, HA: *ha})
	if err != nil {
		fmt.Fprintln(stderr, "chaos-runner:", err)
		return runner.ExitError
	}
	jsonPath, htmlPath, err := m.Write(*dir)
	if err != nil {
		fmt.Fprintln(stderr, "chaos-runner:", err)
		return runner.ExitError
	}
	fmt.Fprint(stdout, m.Summary())
	fmt.Fprintf(stdout, "  matrix: %s\n  page: %s\n", jsonPath, htmlPath)
	for _, c := range m.Cells {
		if c.Verdict == "lost" || c.Verdict == "error" {
			return runner.ExitFailed
		}
	}
	return 0
}
