package synth

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// WriteCorpus writes n files of a seeded synthetic corpus under dir (file i at
// <md5[0]>/<md5>.mid), with md5_to_paths.json (song names, as LMD has it) and
// expected.jsonl (what a parser must find in each file). Files are written by
// one worker per CPU; the listings are written in index order afterwards, so
// the output is the same whatever the scheduling. progress, if not nil, gets
// a line every two seconds.
func WriteCorpus(ctx context.Context, st Stats, dir string, n int, seed uint64, corruptRate float64, progress io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	g := NewFileGenerator(st, seed, corruptRate)
	type written struct {
		rel, md5, name, corrupt string
		notes                   map[int]int
	}
	out := make([]written, n)
	var next, done, bytesTotal atomic.Int64
	start := time.Now()
	grp, gctx := errgroup.WithContext(ctx)
	for range runtime.GOMAXPROCS(0) {
		grp.Go(func() error {
			for i := next.Add(1) - 1; i < int64(n) && gctx.Err() == nil; i = next.Add(1) - 1 {
				f, err := g.File(uint64(i))
				if err != nil {
					return fmt.Errorf("file %d: %w", i, err)
				}
				rel := filepath.Join(f.MD5[:1], f.MD5+".mid")
				if err := os.MkdirAll(filepath.Join(dir, f.MD5[:1]), 0o755); err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, rel), f.Data, 0o644); err != nil {
					return err
				}
				out[i] = written{rel: rel, md5: f.MD5, name: f.Song.Name, corrupt: f.Corrupt, notes: f.Notes}
				bytesTotal.Add(int64(len(f.Data)))
				done.Add(1)
			}
			return gctx.Err()
		})
	}
	report := func() {
		if progress != nil {
			d := done.Load()
			fmt.Fprintf(progress, "synth: %d of %d files, %.1f MB, %.0f files/s\n", d, n, float64(bytesTotal.Load())/1e6, float64(d)/time.Since(start).Seconds())
		}
	}
	finished := make(chan error, 1)
	go func() { finished <- grp.Wait() }()
	ticker := time.NewTicker(2 * time.Second)
	defer ticker.Stop()
	for waiting := true; waiting; {
		select {
		case err := <-finished:
			if err != nil {
				return err
			}
			waiting = false
		case <-ticker.C:
			report()
		}
	}
	report()
	expected, err := os.Create(filepath.Join(dir, "expected.jsonl"))
	if err != nil {
		return err
	}
	defer expected.Close()
	enc := json.NewEncoder(expected)
	names := make(map[string][]string, n)
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
	return os.WriteFile(filepath.Join(dir, "md5_to_paths.json"), data, 0o644)
}
