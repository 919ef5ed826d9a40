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
	"flag"
	"os"

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
	return synth.WriteCorpus(ctx, st, *dir, *n, *seed, *corrupt, os.Stderr)
}
