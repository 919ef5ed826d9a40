package simindex

import (
	"testing"

	"github.com/scale-dev/scale/internal/synth"
	"github.com/scale-dev/scale/internal/testenv"
)

// LakhSongs is the size of the Lakh MIDI Dataset.
const LakhSongs = 176_581

// BenchmarkAllLakh computes every top-10 list over 176,581 synthetic songs
// (statistics of the shared corpus, seed 1), in memory, on all CPUs.
func BenchmarkAllLakh(b *testing.B) {
	root := testenv.SharedCorpus(b)
	st, err := synth.Measure(root)
	if err != nil {
		b.Fatal(err)
	}
	g := synth.NewGenerator(st, 1)
	ix := New(10, 3)
	for range LakhSongs {
		s := g.Next()
		var set Set
		for _, f := range s.Instruments {
			set.Add(f)
		}
		ix.Add(s.ID, set)
	}
	b.Logf("%d songs take part (at least 3 instruments)", ix.Len())
	b.ResetTimer()
	for b.Loop() {
		ix.All(nil)
	}
}
