// Command synth writes a seeded, deterministic corpus of real Standard MIDI Files
// whose statistics follow the shared corpus (instrument-set sizes, drum share,
// program popularity, file sizes, formats, resolutions), with a share of
// truncated or headerless files. Files are named by their MD5 under a folder of
// its first hex digit, as in the Lakh MIDI Dataset, beside an md5_to_paths.json
// giving song names (ingest's --ingest-names-json) and an expected.jsonl with
// what each file holds.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/synth"
)

func main() { config.Main("synth", run) }

func run(ctx context.Context) error {
	n := flag.Int("n", 1000, "files to write (176581 is the Lakh MIDI Dataset)")
	dir := flag.String("dir", "corpus", "output folder")
	seed := flag.Uint64("seed", 1, "generator seed: the same seed gives the same bytes")
	corrupt := flag.Float64("corrupt", 0.01, "share of truncated or headerless files")
	flag.Parse()
	root, err := corpus.SharedDir()
	if err != nil {
		return err
	}
	st, err := synth.Measure(root)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	g := synth.NewFileGenerator(st, *seed, *corrupt)
	// Files are written by one worker per CPU; the listing files are written in
	// index order afterwards, so the output is the same whatever the scheduling.
	type written struct {
		rel, md5, name, corrupt string
		notes                   map[int]int
	}
	out := make([]written, *n)
	var next, done, bytesTotal atomic.Int64
	start := time.Now()
	ticker := time.NewTicker(2 * time.Second)
	defer ticker.Stop()
	grp, gctx := errgroup.WithContext(ctx)
	for range runtime.GOMAXPROCS(0) {
		grp.Go(func() error {
			for i := next.Add(1) - 1; i < int64(*n) && gctx.Err() == nil; i = next.Add(1) - 1 {
				f, err := g.File(uint64(i))
				if err != nil {
					return fmt.Errorf("file %d: %w", i, err)
				}
				rel := filepath.Join(f.MD5[:1], f.MD5+".mid")
				if err := os.MkdirAll(filepath.Join(*dir, f.MD5[:1]), 0o755); err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(*dir, rel), f.Data, 0o644); err != nil {
					return err
				}
				out[i] = written{rel: rel, md5: f.MD5, name: f.Song.Name, corrupt: f.Corrupt, notes: f.Notes}
				bytesTotal.Add(int64(len(f.Data)))
				done.Add(1)
			}
			return gctx.Err()
		})
	}
	progress := func() {
		d := done.Load()
		fmt.Fprintf(os.Stderr, "synth: %d of %d files, %.1f MB, %.0f files/s\n", d, *n, float64(bytesTotal.Load())/1e6, float64(d)/time.Since(start).Seconds())
	}
	finished := make(chan error, 1)
	go func() { finished <- grp.Wait() }()
	for waiting := true; waiting; {
		select {
		case err := <-finished:
			if err != nil {
				return err
			}
			waiting = false
		case <-ticker.C:
			progress()
		}
	}
	progress()
	expected, err := os.Create(filepath.Join(*dir, "expected.jsonl"))
	if err != nil {
		return err
	}
	defer expected.Close()
	enc := json.NewEncoder(expected)
	names := make(map[string][]string, *n)
	for _, w := range out {
		names[w.md5] = []string{"Synthetic/" + w.name + ".mid"}
		if err := enc.Encode(map[string]any{"file": w.rel, "md5": w.md5, "notes": w.notes, "corrupt": w.corrupt}); err != nil {
			return err
		}
	}
	data, err := json.Marshal(names)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(*dir, "md5_to_paths.json"), data, 0o644)
}
