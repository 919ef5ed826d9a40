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
	"time"

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
	expected, err := os.Create(filepath.Join(*dir, "expected.jsonl"))
	if err != nil {
		return err
	}
	defer expected.Close()
	enc := json.NewEncoder(expected)
	names := map[string][]string{}
	g := synth.NewFileGenerator(st, *seed, *corrupt)
	start, last := time.Now(), time.Now()
	var bytesTotal int64
	for i := 0; i < *n; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f, err := g.Next()
		if err != nil {
			return err
		}
		rel := filepath.Join(f.MD5[:1], f.MD5+".mid")
		if err := os.MkdirAll(filepath.Join(*dir, f.MD5[:1]), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(*dir, rel), f.Data, 0o644); err != nil {
			return err
		}
		bytesTotal += int64(len(f.Data))
		names[f.MD5] = []string{"Synthetic/" + f.Song.Name + ".mid"}
		if err := enc.Encode(map[string]any{"file": rel, "md5": f.MD5, "notes": f.Notes, "corrupt": f.Corrupt}); err != nil {
			return err
		}
		if time.Since(last) >= 2*time.Second || i == *n-1 {
			last = time.Now()
			fmt.Fprintf(os.Stderr, "synth: %d of %d files, %.1f MB, %.0f files/s\n", i+1, *n, float64(bytesTotal)/1e6, float64(i+1)/time.Since(start).Seconds())
		}
	}
	data, err := json.Marshal(names)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(*dir, "md5_to_paths.json"), data, 0o644)
}
