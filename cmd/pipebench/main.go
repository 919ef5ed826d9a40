// Command pipebench runs the real pipeline over a corpus folder, read as a folder
// or through the versitygw S3 gateway, and measures it: ingest, N extract
// processes and similarity run as separate processes against an embedded NATS
// JetStream server and a throwaway Postgres cluster. For each N it prints
// files/s end to end (every file a song or failure row, then every song applied
// by similarity), p50/p99 time from discovery to the file's final row, CPU
// seconds and peak memory per process (Postgres, the gateway and this process,
// which embeds NATS, included), and the exact accounting; it also prints the
// in-process parse rate of the same files as the ceiling.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/scale-dev/scale/internal/cgroup"
	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/freeport"
	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/midiparse"
	"github.com/scale-dev/scale/internal/natsembed"
	"github.com/scale-dev/scale/internal/otlprecv"
	"github.com/scale-dev/scale/internal/pglocal"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/transport"
	"github.com/scale-dev/scale/internal/versitygw"
	"github.com/scale-dev/scale/pkg/events"
)

func main() { config.Main("pipebench", run) }

type proc struct {
	*launcher.Process
	peakKiB int // VmHWM, sampled while the process runs
}

// samplePeak reads the process's peak resident set from /proc while it runs.
// (Rusage's maxrss of a child counts the parent's memory shared at fork.)
func (p *proc) samplePeak() {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			if kib, err := strconv.Atoi(f[1]); err == nil && kib > p.peakKiB {
				p.peakKiB = kib
			}
		}
	}
}

func run(ctx context.Context) error {
	dir := flag.String("dir", "corpus", "corpus folder (make corpus writes one)")
	workerList := flag.String("workers", "1,2,4", "extract process counts to run, comma-separated")
	concurrency := flag.Int("concurrency", 2, "batches in flight per extract process")
	source := flag.String("source", "folder", "how extract reads the corpus: folder, or s3 (versitygw over the corpus's parent folder; the corpus folder is the bucket)")
	s3Latency := flag.Duration("s3-latency", 0, "with -source s3: latency added to every answer of the S3 server (a Toxiproxy in this process), as a real object store has")
	s3Jitter := flag.Duration("s3-jitter", 0, "with -s3-latency: ± this much")
	s3Proxy := flag.Bool("s3-proxy", false, "with -source s3: read through the proxy even with no latency (the baseline of a latency series: the proxy costs CPU on this machine)")
	reads := flag.Int("reads", 0, "extract's object reads in flight per process (SCALE_EXTRACT_READS; 0: its default)")
	cpuQuota := flag.Float64("cpu-quota", 0, "cap each extract process at this many CPUs with a cgroup (0.2: a fifth of a core), to show scale-out on a small machine")
	traces := flag.String("traces", "off", "tracing in every service: off, or the share of files traced (0.01, 1), exported over OTLP/HTTP to a sink in this process")
	pgSettings := flag.String("postgres-settings", "", "comma-separated Postgres settings for the benchmark's server, such as shared_buffers=1GB,max_wal_size=8GB,checkpoint_timeout=30min (empty: Postgres's defaults)")
	statements := flag.Int("statements", 0, "print the Postgres statements that took longest, this many (pg_stat_statements, loaded for the run)")
	ceiling := flag.Bool("parse-ceiling", true, "first parse every file in memory, no pipeline (at Lakh size this reads 6 GB into memory and takes a minute or two)")
	flag.Parse()
	if *source != "folder" && *source != "s3" {
		return fmt.Errorf("-source must be folder or s3, not %q", *source)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	files, err := corpus.Files(abs)
	if err != nil {
		return err
	}
	fmt.Printf("pipebench: %d files under %s, %d CPUs, %s\n", len(files), abs, runtime.NumCPU(), time.Now().UTC().Format(time.RFC3339))
	if *ceiling {
		if err := parseCeiling(abs, files); err != nil {
			return err
		}
	}

	tmp, err := os.MkdirTemp("", "pipebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	root, err := launcher.RepoRoot()
	if err != nil {
		return err
	}
	bins, err := launcher.Build(root, tmp, map[string]string{
		"ingest": "./services/ingest/cmd/ingest", "extract": "./services/extract/cmd/extract", "similarity": "./services/similarity/cmd/similarity",
	})
	if err != nil {
		return err
	}
	pgOptions := settingsList(*pgSettings)
	if *statements > 0 {
		pgOptions = append(pgOptions, "shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=all")
	}
	cluster, err := pglocal.Start(ctx, filepath.Join(tmp, "pg"), pglocal.Options{Durable: true, Settings: pgOptions})
	if err != nil {
		return err
	}
	defer cluster.Stop() //nolint:errcheck // teardown
	env := []string{"SCALE_INGEST_SOURCE=" + abs}
	var gw *versitygw.Server
	if *source == "s3" {
		if gw, err = versitygw.Start(filepath.Dir(abs), filepath.Join(tmp, "versitygw.log"), versitygw.Options{}); err != nil {
			return err
		}
		defer gw.Stop()
		c := gw.Config
		endpoint := c.Endpoint
		if *s3Latency > 0 || *s3Proxy {
			if endpoint, err = slowProxy(strings.TrimPrefix(c.Endpoint, "http://"), *s3Latency, *s3Jitter); err != nil {
				return err
			}
			fmt.Printf("pipebench: S3 answers delayed %v ± %v\n", *s3Latency, *s3Jitter)
		}
		env = []string{"SCALE_INGEST_SOURCE=s3://" + filepath.Base(abs), "SCALE_STORAGE_ENDPOINT=" + endpoint,
			"SCALE_STORAGE_PATH_STYLE=true", "SCALE_STORAGE_REGION=" + c.Region,
			"SCALE_STORAGE_ACCESS_KEY=" + c.AccessKey, "SCALE_STORAGE_SECRET_KEY=" + c.SecretKey}
	}
	fmt.Printf("pipebench: source %s\n", strings.TrimPrefix(env[0], "SCALE_INGEST_SOURCE="))
	if *reads > 0 {
		env = append(env, "SCALE_EXTRACT_READS="+strconv.Itoa(*reads))
	}
	if *traces != "off" {
		ratio, err := strconv.ParseFloat(*traces, 64)
		if err != nil || ratio <= 0 || ratio > 1 {
			return fmt.Errorf("-traces must be off or a share in (0, 1], not %q", *traces)
		}
		// The receiver counts the exports without decoding them: the
		// services pay the whole cost of tracing, pipebench nothing worth
		// measuring.
		sink, err := otlprecv.Start(nil)
		if err != nil {
			return err
		}
		defer func() {
			n, bytes := sink.Exports()
			fmt.Printf("RESULT traces exported: %d requests, %.1f MB\n", n, float64(bytes)/1e6)
			sink.Close()
		}()
		// Ingest starts each file's trace and decides whether it is
		// sampled; extract and similarity follow its decision.
		env = append(env, "OTEL_EXPORTER_OTLP_ENDPOINT="+sink.URL, "OTEL_TRACES_SAMPLER=parentbased_traceidratio",
			"OTEL_TRACES_SAMPLER_ARG="+*traces)
		fmt.Printf("pipebench: tracing %s of the files, exported over OTLP/HTTP\n", *traces)
	}
	b := bench{tmp: tmp, cluster: cluster, gw: gw, bins: bins, env: env, files: len(files), concurrency: *concurrency, cpuQuota: *cpuQuota, statements: *statements}
	if *cpuQuota > 0 {
		fmt.Printf("pipebench: each extract process capped at %.2f CPU\n", *cpuQuota)
	}

	for _, w := range strings.Split(*workerList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 1 {
			return fmt.Errorf("bad -workers entry %q", w)
		}
		if err := b.run(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// settingsList splits a comma-separated list, dropping empty entries.
func settingsList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseCeiling parses every file in memory, on one core and on all cores.
func parseCeiling(dir string, files []string) error {
	var blobs [][]byte
	for _, rel := range files {
		b, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			return err
		}
		blobs = append(blobs, b)
	}
	// An untimed pass over a share of the files first: the first pass over a
	// heap this size otherwise pays for faulting fresh memory in.
	for _, b := range blobs[:len(blobs)/10] {
		midiparse.Parse(b) //nolint:errcheck // warm-up
	}
	for _, workers := range []int{1, runtime.NumCPU()} {
		runtime.GC()
		start := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < len(blobs); i += workers {
					midiparse.Parse(blobs[i]) //nolint:errcheck // rate only
				}
			}()
		}
		wg.Wait()
		fmt.Printf("RESULT parse ceiling, %d goroutine(s): %.0f files/s\n", workers, float64(len(blobs))/time.Since(start).Seconds())
	}
	return nil
}

// bench is what every run shares.
type bench struct {
	tmp         string
	cluster     *pglocal.Cluster
	gw          *versitygw.Server // nil when extract reads the folder
	bins        map[string]string
	env         []string // source settings
	files       int
	concurrency int
	cpuQuota    float64 // per extract process; 0: none
	statements  int     // how many of Postgres's costliest statements to print
}

// run measures one pipeline with the given number of extract processes, on a
// new database and a new NATS server.
func (b bench) run(ctx context.Context, workers int) error {
	tmp, cluster, bins, files, concurrency := b.tmp, b.cluster, b.bins, b.files, b.concurrency
	db := fmt.Sprintf("bench_%d_%d", workers, time.Now().UnixNano())
	if err := cluster.CreateDatabase(ctx, db); err != nil {
		return err
	}
	pgURL := cluster.URL(db)
	st, err := store.Open(ctx, pgURL, 30*time.Second)
	if err != nil {
		return err
	}
	defer st.Close()
	srv, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: filepath.Join(tmp, db+"-nats")})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	env := append([]string{"SCALE_NATS_URL=" + srv.ClientURL(), "SCALE_POSTGRES_URL=" + pgURL,
		"SCALE_OPS_ADDR=127.0.0.1:0", "SCALE_OPS_LOG_LEVEL=warn", "SCALE_EXTRACT_CONCURRENCY=" + strconv.Itoa(concurrency)}, b.env...)
	start := func(name, bin string) (*proc, error) {
		p, err := launcher.Start(launcher.Spec{Name: name, Binary: bin, Env: env, LogPath: filepath.Join(tmp, db+"-"+name+".log")})
		if err != nil {
			return nil, err
		}
		return &proc{Process: p}, nil
	}
	var procs []*proc
	for i := 0; i < workers; i++ {
		p, err := start(fmt.Sprintf("extract-%d", i+1), bins["extract"])
		if err != nil {
			return err
		}
		procs = append(procs, p)
		if b.cpuQuota > 0 {
			g, err := cgroup.Limit(fmt.Sprintf("pipebench-%s-extract-%d", db, i+1), b.cpuQuota)
			if err != nil {
				return err
			}
			defer g.Close() //nolint:errcheck // teardown
			if err := g.Add(p.Pid()); err != nil {
				return err
			}
		}
	}
	sim, err := start("similarity", bins["similarity"])
	if err != nil {
		return err
	}
	procs = append(procs, sim)
	time.Sleep(time.Second) // workers connected and consuming
	postmaster := postmasterPID(filepath.Join(cluster.Dir, "data"))
	pgCPU, gwCPU, selfCPU := treeCPU(postmaster), b.gatewayCPU(), selfCPUTime()
	began := time.Now()
	ing, err := start("ingest", bins["ingest"])
	if err != nil {
		return err
	}
	// Progress is read from NATS, which is cheap: counting rows in Postgres
	// as often would cost the database a good share of a core at this size.
	// Each file's outcome is published once (Msg-Id), after its row commits.
	outcomes, err := js.Stream(ctx, events.StreamOutcomes)
	if err != nil {
		return err
	}
	err = pollUntil(ctx, append(procs, ing), func() (bool, error) {
		info, err := outcomes.Info(ctx)
		return err == nil && info.State.Msgs >= uint64(files), err
	})
	if err != nil {
		return err
	}
	elapsed := time.Since(began)
	if err := ing.Wait(); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	// Then until similarity has applied every song.
	err = pollUntil(ctx, procs, func() (bool, error) {
		settled, info, err := transport.Settled(ctx, js, events.StreamOutcomes, events.ConsumerSimilarity)
		return settled && info.Delivered.Stream > 0, err
	})
	if err != nil {
		return err
	}
	withSimilarity := time.Since(began)
	pgCPU, gwCPU, selfCPU = treeCPU(postmaster)-pgCPU, b.gatewayCPU()-gwCPU, selfCPUTime()-selfCPU
	for _, p := range procs {
		p.samplePeak()
		p.Stop(30 * time.Second) //nolint:errcheck // rusage is what matters
	}
	procs = append([]*proc{ing}, procs...)
	a, err := st.Account(ctx)
	if err != nil {
		return err
	}
	if b.statements > 0 {
		if err := printStatements(ctx, st, b.statements); err != nil {
			return err
		}
	}
	var p50, p99 float64
	err = st.Pool.QueryRow(ctx, `SELECT
		percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - discovered_at)),
		percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - discovered_at))
		FROM discovered_files`).Scan(&p50, &p99)
	if err != nil {
		return err
	}
	fmt.Printf("RESULT %d extract process(es) × %d: %d files in %.1f s = %.0f files/s (similarity applied all at %.1f s = %.0f files/s); "+
		"discovery→row p50 %.3f s, p99 %.3f s; %d songs + %d failures = %d files (balanced %v)\n",
		workers, concurrency, files, elapsed.Seconds(), float64(files)/elapsed.Seconds(), withSimilarity.Seconds(), float64(files)/withSimilarity.Seconds(),
		p50, p99, a.Songs, a.Failures, a.Discovered, a.Balanced())
	if !a.Balanced() || a.Discovered != int64(files) {
		return fmt.Errorf("accounting: %+v for %d files", a, files)
	}
	for _, p := range procs {
		if ru, ok := p.Cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			fmt.Printf("  %-12s cpu %6.1f s  peak rss %6.1f MiB\n", p.Name, cpu.Seconds(), float64(p.peakKiB)/1024)
		}
	}
	fmt.Printf("  %-12s cpu %6.1f s  (postmaster and every backend)\n", "postgres", pgCPU.Seconds())
	if b.gw != nil {
		fmt.Printf("  %-12s cpu %6.1f s\n", "versitygw", gwCPU.Seconds())
	}
	fmt.Printf("  %-12s cpu %6.1f s  (embedded NATS server and this benchmark's polling)\n", "nats+bench", selfCPU.Seconds())
	return nil
}

// printStatements prints the n statements that took Postgres longest in this
// run's database (pg_stat_statements, loaded for the run): time, calls, rows
// and WAL written.
func printStatements(ctx context.Context, st *store.Store, n int) error {
	if _, err := st.Pool.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		return err
	}
	rows, err := st.Pool.Query(ctx, `SELECT total_exec_time, calls, rows, wal_bytes::bigint, left(regexp_replace(query, '\s+', ' ', 'g'), 100)
		FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		ORDER BY total_exec_time DESC LIMIT $1`, n)
	if err != nil {
		return fmt.Errorf("reading pg_stat_statements: %w", err)
	}
	var ms float64
	var calls, nrows, wal int64
	var query string
	_, err = pgx.ForEachRow(rows, []any{&ms, &calls, &nrows, &wal, &query}, func() error {
		fmt.Printf("  statement %8.0f ms %8d calls %9d rows %6.1f MB WAL  %s\n", ms, calls, nrows, float64(wal)/1e6, query)
		return nil
	})
	if err != nil {
		return err
	}
	// How rows were written: an update that is not heap-only (HOT) writes an
	// entry into every index of its table.
	rows, err = st.Pool.Query(ctx, `SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
		WHERE n_tup_ins + n_tup_upd > 0 ORDER BY relname`)
	if err != nil {
		return fmt.Errorf("reading pg_stat_user_tables: %w", err)
	}
	var table string
	var inserted, updated, hot int64
	_, err = pgx.ForEachRow(rows, []any{&table, &inserted, &updated, &hot}, func() error {
		fmt.Printf("  table %-22s %9d inserted %9d updated (%d heap-only)\n", table, inserted, updated, hot)
		return nil
	})
	return err
}

// pollUntil samples the processes' peak memory every 50 ms until done says so.
func pollUntil(ctx context.Context, procs []*proc, done func() (bool, error)) error {
	for {
		for _, p := range procs {
			p.samplePeak()
		}
		if ok, err := done(); ok || err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b bench) gatewayCPU() time.Duration {
	if b.gw == nil {
		return 0
	}
	return treeCPU(b.gw.Pid())
}

func selfCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// slowProxy starts a TCP proxy (Toxiproxy, in this process) in front of
// upstream that delays every answer, and returns its endpoint URL.
func slowProxy(upstream string, latency, jitter time.Duration) (string, error) {
	port, err := freeport.Get()
	if err != nil {
		return "", err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	proxy := toxiproxy.NewProxy(server, "s3", listen, upstream)
	if err := server.Collection.Add(proxy, true); err != nil {
		return "", err
	}
	toxic := fmt.Sprintf(`{"name":"latency","type":"latency","stream":"downstream","toxicity":1,"attributes":{"latency":%d,"jitter":%d}}`,
		latency.Milliseconds(), jitter.Milliseconds())
	if _, err := proxy.Toxics.AddToxicJson(strings.NewReader(toxic)); err != nil {
		return "", err
	}
	return "http://" + listen, nil
}
