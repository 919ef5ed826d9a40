// Command pipebench runs the real pipeline over a corpus folder and measures it:
// ingest, N extract processes and similarity run as separate processes against
// an embedded NATS JetStream server and a throwaway Postgres cluster. For each N
// it prints files/s end to end, p50/p99 time from discovery to the file's final
// row, CPU seconds and peak memory per process, and the exact accounting; it also
// prints the in-process parse rate of the same files as the ceiling.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/midiparse"
	"github.com/scale-dev/scale/internal/natsembed"
	"github.com/scale-dev/scale/internal/pglocal"
	"github.com/scale-dev/scale/internal/store"
)

func main() { config.Main("pipebench", run) }

type proc struct {
	name    string
	cmd     *exec.Cmd
	peakKiB int // VmHWM, sampled while the process runs
}

// samplePeak reads the process's peak resident set from /proc while it runs.
// (Rusage's maxrss of a child counts the parent's memory shared at fork.)
func (p *proc) samplePeak() {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
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
	concurrency := flag.Int("concurrency", 2, "files in flight per extract process")
	flag.Parse()
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	files, err := corpus.Files(abs)
	if err != nil {
		return err
	}
	fmt.Printf("pipebench: %d files under %s, %d CPUs, %s\n", len(files), abs, runtime.NumCPU(), time.Now().UTC().Format(time.RFC3339))
	if err := parseCeiling(abs, files); err != nil {
		return err
	}

	tmp, err := os.MkdirTemp("", "pipebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bins := map[string]string{}
	for _, svc := range []string{"ingest", "extract", "similarity"} {
		bins[svc] = filepath.Join(tmp, svc)
		build := exec.Command("go", "build", "-o", bins[svc], "./services/"+svc+"/cmd/"+svc)
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building %s: %w", svc, err)
		}
	}
	cluster, err := pglocal.Start(ctx, filepath.Join(tmp, "pg"), pglocal.Options{Durable: true})
	if err != nil {
		return err
	}
	defer cluster.Stop() //nolint:errcheck // teardown

	for _, w := range strings.Split(*workerList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 1 {
			return fmt.Errorf("bad -workers entry %q", w)
		}
		if err := runOnce(ctx, tmp, cluster, bins, abs, len(files), n, *concurrency); err != nil {
			return err
		}
	}
	return nil
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
	for _, workers := range []int{1, runtime.NumCPU()} {
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

func runOnce(ctx context.Context, tmp string, cluster *pglocal.Cluster, bins map[string]string, dir string, files, workers, concurrency int) error {
	db := fmt.Sprintf("bench_%d_%d", workers, time.Now().UnixNano())
	admin, err := pgx.Connect(ctx, cluster.URL("postgres"))
	if err != nil {
		return err
	}
	_, err = admin.Exec(ctx, "CREATE DATABASE "+db)
	admin.Close(ctx)
	if err != nil {
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
	env := append(os.Environ(), "SCALE_NATS_URL="+srv.ClientURL(), "SCALE_POSTGRES_URL="+pgURL,
		"SCALE_OPS_ADDR=127.0.0.1:0", "SCALE_OPS_LOG_LEVEL=warn", "SCALE_INGEST_SOURCE="+dir,
		"SCALE_EXTRACT_CONCURRENCY="+strconv.Itoa(concurrency))
	start := func(name, bin string) (*proc, error) {
		cmd := exec.Command(bin)
		cmd.Env = env
		logf, err := os.Create(filepath.Join(tmp, db+"-"+name+".log"))
		if err != nil {
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return &proc{name: name, cmd: cmd}, nil
	}
	var procs []*proc
	for i := 0; i < workers; i++ {
		p, err := start(fmt.Sprintf("extract-%d", i+1), bins["extract"])
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	sim, err := start("similarity", bins["similarity"])
	if err != nil {
		return err
	}
	procs = append(procs, sim)
	time.Sleep(time.Second) // workers connected and consuming
	began := time.Now()
	ing, err := start("ingest", bins["ingest"])
	if err != nil {
		return err
	}
	var a store.Accounting
	for {
		for _, p := range append(procs, ing) {
			p.samplePeak()
		}
		a, err = st.Account(ctx)
		if err != nil {
			return err
		}
		if a.Discovered == int64(files) && a.Pending == 0 {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(began)
	if err := ing.cmd.Wait(); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	for _, p := range procs {
		p.samplePeak()
		p.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // may have exited
		p.cmd.Wait()                          //nolint:errcheck // rusage is what matters
	}
	procs = append([]*proc{ing}, procs...)
	var p50, p99 float64
	err = st.Pool.QueryRow(ctx, `SELECT
		percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - discovered_at)),
		percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - discovered_at))
		FROM discovered_files`).Scan(&p50, &p99)
	if err != nil {
		return err
	}
	fmt.Printf("RESULT %d extract process(es) × %d: %d files in %.1f s = %.0f files/s; discovery→row p50 %.3f s, p99 %.3f s; "+
		"%d songs + %d failures = %d files (balanced %v)\n",
		workers, concurrency, files, elapsed.Seconds(), float64(files)/elapsed.Seconds(), p50, p99, a.Songs, a.Failures, a.Discovered, a.Balanced())
	for _, p := range procs {
		if ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			fmt.Printf("  %-12s cpu %6.1f s  peak rss %6.1f MiB\n", p.name, cpu.Seconds(), float64(p.peakKiB)/1024)
		}
	}
	return nil
}
