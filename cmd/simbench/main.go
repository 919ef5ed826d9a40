// Command simbench measures similarity and the API at Lakh size: it starts a
// throwaway Postgres cluster, writes synthetic songs (statistics of the shared
// corpus, seeded), times `similarity rebuild` and a restart over the stored
// lists, starts the api binary as its own process and has it read every list
// once (its cache), then loads
// /v1/songs/{id}/similar with vegeta: closed loop with N concurrent clients,
// and open loop at a fixed rate with up to N in flight; then, where wrk is
// installed, closed loop with wrk against /similar and /healthz.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	vegeta "github.com/tsenart/vegeta/v12/lib"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/freeport"
	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/ops"
	"github.com/scale-dev/scale/internal/pglocal"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/synth"
	"github.com/scale-dev/scale/services/similarity"
)

func main() { config.Main("simbench", run) }

func run(ctx context.Context) error {
	songs := flag.Int("songs", 176_581, "synthetic songs (176,581 is the Lakh MIDI Dataset)")
	seed := flag.Uint64("seed", 1, "generator seed")
	clients := flag.Int("clients", 500, "concurrent clients of the load test")
	rate := flag.Int("rate", 2000, "requests per second of the open-loop run")
	curve := flag.String("overload", "", "comma-separated offered rates (req/s) of an overload curve: open loop with up to 4,000 requests in flight (far past the API's limit), so that the API's load shedding (fast 503) shows")
	duration := flag.Duration("duration", 20*time.Second, "length of each load run")
	cacheSongs := flag.Int("cache-songs", 200_000, "the API's similar-list cache size in songs (0: off, every request reads Postgres)")
	wrkThreads := flag.Int("wrk-threads", 1, "wrk's threads (it shares the machine's CPUs with the API)")
	maxInFlight := flag.Int("max-in-flight", 0, "the API's SCALE_API_MAX_IN_FLIGHT (requests handled at once before it sheds with a 503; 0: its default)")
	apiCPU := flag.Int("api-cpu", -1, "run the API on this CPU alone and the load generator on the others, as if each had its own machine (-1: both share every CPU)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the API process during the first load run to this file")
	flag.Parse()
	log := config.Ops{LogLevel: "warn"}.Logger("simbench")
	say := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	say("simbench: %d songs, seed %d, GOMAXPROCS %d, %s", *songs, *seed, runtime.GOMAXPROCS(0), time.Now().UTC().Format(time.RFC3339))

	dir, err := os.MkdirTemp("", "simbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cluster, err := pglocal.Start(ctx, dir, pglocal.Options{Durable: true})
	if err != nil {
		return err
	}
	defer cluster.Stop() //nolint:errcheck // teardown
	st, err := store.Open(ctx, cluster.URL("postgres"), 30*time.Second)
	if err != nil {
		return err
	}
	defer st.Close()

	root, err := corpus.SharedDir()
	if err != nil {
		return err
	}
	stats, err := synth.Measure(root)
	if err != nil {
		return err
	}
	start := time.Now()
	ids, err := writeSongs(ctx, st, synth.NewGenerator(stats, *seed), *songs)
	if err != nil {
		return err
	}
	say("wrote %d songs in %.1f s", len(ids), time.Since(start).Seconds())

	start = time.Now()
	sim := similarity.New(similarity.Deps{Store: st, Log: log, Metrics: ops.NewRegistry()}, similarity.Settings{K: 10, MinInstruments: 3})
	if err := sim.Exclusive(ctx, func(ctx context.Context) error { return sim.Rebuild(ctx, os.Stdout) }); err != nil {
		return err
	}
	say("RESULT similarity rebuild: %.1f s for %d songs", time.Since(start).Seconds(), len(ids))
	start = time.Now()
	restarted := similarity.New(similarity.Deps{Store: st, Log: log, Metrics: ops.NewRegistry()}, similarity.Settings{K: 10, MinInstruments: 3})
	if err := restarted.Exclusive(ctx, restarted.Start); err != nil {
		return err
	}
	say("RESULT similarity start over the stored lists (a restart): %.1f s", time.Since(start).Seconds())

	// The API runs as its own process, the binary a deployment runs: its heap,
	// garbage collector and scheduler are its own, not shared with vegeta's.
	apiProc, base, opsAddr, err := startAPI(dir, cluster.URL("postgres"), *cacheSongs, *maxInFlight, *apiCPU)
	if err != nil {
		return err
	}
	defer apiProc.Stop(10 * time.Second) //nolint:errcheck // teardown

	if *cacheSongs > 0 {
		start = time.Now()
		if err := warmUp(ctx, base, ids); err != nil {
			return err
		}
		say("warm-up: every song's list asked for once, in %.1f s (the API keeps them in memory from then on)", time.Since(start).Seconds())
		var metrics strings.Builder
		if err := config.Probe(opsAddr, "/metrics", &metrics); err != nil {
			return err
		}
		for _, line := range strings.Split(metrics.String(), "\n") {
			if strings.HasPrefix(line, "scale_api_similar_cache_songs ") || strings.HasPrefix(line, "scale_api_similar_cache_bytes ") {
				say("RESULT %s", line)
			}
		}
	}

	// The profile covers the API process during the first load run.
	var profiled chan error
	if *cpuProfile != "" {
		profiled = make(chan error, 1)
		go func() {
			f, err := os.Create(*cpuProfile)
			if err == nil {
				err = config.Probe(opsAddr, fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(duration.Seconds())), f)
				f.Close()
			}
			profiled <- err
		}()
		defer func() {
			if err := <-profiled; err != nil {
				say("cpu profile: %v", err)
			}
		}()
	}
	if *apiCPU >= 0 {
		if err := avoidCPU(*apiCPU); err != nil {
			return err
		}
		say("the API runs on CPU %d alone, the load generator on the other %d", *apiCPU, runtime.NumCPU()-1)
	}
	r := rand.New(rand.NewPCG(*seed, 2))
	targeter := func(t *vegeta.Target) error {
		t.Method = "GET"
		t.URL = base + "/v1/songs/" + ids[r.IntN(len(ids))] + "/similar?limit=10"
		return nil
	}
	attack := func(name string, pacer vegeta.Pacer, maxInFlight int) {
		atk := vegeta.NewAttacker(vegeta.Workers(uint64(min(*clients, maxInFlight))), vegeta.MaxWorkers(uint64(maxInFlight)),
			vegeta.Connections(maxInFlight), vegeta.KeepAlive(true), vegeta.Timeout(10*time.Second))
		var m vegeta.Metrics
		for res := range atk.Attack(targeter, pacer, *duration, name) {
			m.Add(res)
		}
		m.Close()
		say("RESULT %s: %d requests, %.0f req/s, success %.4f, p50 %v, p95 %v, p99 %v, max %v, codes %v",
			name, m.Requests, m.Throughput, m.Success, m.Latencies.P50.Round(time.Microsecond), m.Latencies.P95.Round(time.Microsecond),
			m.Latencies.P99.Round(time.Microsecond), m.Latencies.Max.Round(time.Microsecond), m.StatusCodes)
	}
	if *curve != "" {
		for _, f := range strings.Split(*curve, ",") {
			offered, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || offered < 1 {
				return fmt.Errorf("bad -overload rate %q", f)
			}
			attack(fmt.Sprintf("overload, %d req/s offered", offered), vegeta.ConstantPacer{Freq: offered, Per: time.Second}, 4000)
		}
		return nil
	}
	attack(fmt.Sprintf("closed loop, %d concurrent clients", *clients), vegeta.ConstantPacer{}, *clients)
	attack(fmt.Sprintf("open loop, %d req/s, up to %d in flight", *rate, *clients), vegeta.ConstantPacer{Freq: *rate, Per: time.Second}, *clients)
	return wrkRuns(ctx, dir, base, ids, *wrkThreads, *clients, *duration, say)
}

// startAPI builds and starts the api binary on free ports over the given
// database and waits until it is ready; it returns the process, the API's base
// URL and its ops address. A port found free can be taken by another process
// before the API binds it (tests run in parallel): then it tries new ports.
func startAPI(dir, pgURL string, cacheSongs, maxInFlight, cpu int) (*launcher.Process, string, string, error) {
	root, err := launcher.RepoRoot()
	if err != nil {
		return nil, "", "", err
	}
	bins, err := launcher.Build(root, dir, map[string]string{"api": "./services/api/cmd/api"})
	if err != nil {
		return nil, "", "", err
	}
	binary, args := bins["api"], []string(nil)
	if cpu >= 0 { // the Go runtime then sizes GOMAXPROCS to the one CPU
		binary, args = "taskset", []string{"--cpu-list", strconv.Itoa(cpu), bins["api"]}
	}
	env := []string{"SCALE_POSTGRES_URL=" + pgURL, "SCALE_OPS_LOG_LEVEL=warn", "SCALE_API_CACHE_SONGS=" + strconv.Itoa(cacheSongs)}
	if maxInFlight > 0 {
		env = append(env, "SCALE_API_MAX_IN_FLIGHT="+strconv.Itoa(maxInFlight))
	}
	for attempt := 1; ; attempt++ {
		var addrs [2]string
		for i := range addrs {
			port, err := freeport.Get()
			if err != nil {
				return nil, "", "", err
			}
			addrs[i] = fmt.Sprintf("127.0.0.1:%d", port)
		}
		appAddr, opsAddr := addrs[0], addrs[1]
		p, err := launcher.Start(launcher.Spec{Name: "api", Binary: binary, Args: args, LogPath: filepath.Join(dir, "api.log"), DieWithParent: true,
			Env: append([]string{"SCALE_API_ADDR=" + appAddr, "SCALE_OPS_ADDR=" + opsAddr}, env...)})
		if err != nil {
			return nil, "", "", err
		}
		err = p.WaitReady(30*time.Second, func() error { return config.Probe(opsAddr, "/readyz", io.Discard) })
		if err == nil {
			return p, "http://" + appAddr, opsAddr, nil
		}
		if attempt == 3 || !strings.Contains(p.Log(), "address already in use") {
			return nil, "", "", err
		}
	}
}

// avoidCPU moves every thread of this process off one CPU (threads started
// later inherit it) and sizes GOMAXPROCS to the CPUs left.
func avoidCPU(cpu int) error {
	var set unix.CPUSet
	for c := range runtime.NumCPU() {
		if c != cpu {
			set.Set(c)
		}
	}
	if set.Count() == 0 {
		return fmt.Errorf("-api-cpu %d leaves the load generator no CPU", cpu)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pinning thread %d: %w", tid, err)
		}
	}
	runtime.GOMAXPROCS(set.Count())
	return nil
}

// warmUp asks for every song's list once, so that the load runs measure the
// API with its cache filled (the state it stays in while no songs arrive).
func warmUp(ctx context.Context, base string, ids []string) error {
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range 8 {
		g.Go(func() error {
			for i := next.Add(1) - 1; i < int64(len(ids)); i = next.Add(1) - 1 {
				req, err := http.NewRequestWithContext(gctx, http.MethodGet, base+"/v1/songs/"+ids[i]+"/similar?limit=10", nil)
				if err != nil {
					return err
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return fmt.Errorf("warm-up: %w", err)
				}
				io.Copy(io.Discard, resp.Body) //nolint:errcheck // drained for reuse
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("warm-up: %s: status %d", ids[i], resp.StatusCode)
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// wrkRuns repeats the closed loop with wrk (Debian's package), a load
// generator in C that leaves more of the shared CPUs to the server than
// vegeta does, against /similar and, as the HTTP stack's own ceiling, /healthz.
func wrkRuns(ctx context.Context, dir, base string, ids []string, threads, clients int, duration time.Duration, say func(string, ...any)) error {
	bin, err := exec.LookPath("wrk")
	if err != nil {
		say("wrk is not installed (apt-get install wrk): its closed-loop runs are skipped")
		return nil
	}
	idFile := filepath.Join(dir, "ids.txt")
	if err := os.WriteFile(idFile, []byte(strings.Join(ids, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	script := filepath.Join(dir, "similar.lua")
	// Each thread formats every request once, in init: formatting one per
	// request costs wrk more CPU than the API spends answering it.
	lua := fmt.Sprintf(`local requests = {}
init = function(args)
  for id in io.lines(%q) do
    requests[#requests + 1] = wrk.format("GET", "/v1/songs/" .. id .. "/similar?limit=10")
  end
end
request = function()
  return requests[math.random(#requests)]
end
`, idFile)
	if err := os.WriteFile(script, []byte(lua), 0o644); err != nil {
		return err
	}
	for _, run := range []struct{ name, path string }{{"/v1/songs/{random id}/similar?limit=10", "/"}, {"/healthz", "/healthz"}} {
		args := []string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(clients), "-d", duration.String(), "--latency", "--timeout", "10s"}
		if run.path == "/" {
			args = append(args, "-s", script)
		}
		out, err := exec.CommandContext(ctx, bin, append(args, base+run.path)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("wrk: %w\n%s", err, out)
		}
		say("RESULT wrk closed loop, %d connections, %s:", clients, run.name)
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			say("  %s", line)
		}
	}
	return nil
}

// writeSongs stores n generated songs with COPY and returns their ids.
func writeSongs(ctx context.Context, st *store.Store, g *synth.Generator, n int) ([]string, error) {
	ids := make([]string, 0, n)
	var songRows, instRows [][]any
	for range n {
		s := g.Next()
		ids = append(ids, s.ID)
		songRows = append(songRows, []any{s.ID, s.Name, "synthetic://" + s.ID, int32(1), int32(len(s.Instruments) + 1), int32(480), 180.0, 120.0})
		for _, in := range s.Instruments {
			instRows = append(instRows, []any{s.ID, int16(in), int32(100)})
		}
	}
	err := pgx.BeginFunc(ctx, st.Pool, func(tx pgx.Tx) error {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"songs"}, []string{"id", "name", "source_key", "smf_format", "tracks", "ticks_per_quarter", "duration_seconds", "initial_bpm"}, pgx.CopyFromRows(songRows)); err != nil {
			return err
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"song_instruments"}, []string{"song_id", "instrument", "notes"}, pgx.CopyFromRows(instRows))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("writing synthetic songs: %w", err)
	}
	if _, err := st.Pool.Exec(ctx, "ANALYZE"); err != nil {
		return nil, err
	}
	return ids, nil
}
