package simindex

import (
	"testing"

	"github.com/scale-dev/scale/internal/synth"
	"github.com/scale-dev/scale/internal/testenv"
)

// LakhSongs is the size of the Lakh MIDI Dataset.
const LakhSongs = 176_581

// lakhSongs draws n synthetic songs (statistics of the shared corpus, seed 1).
func lakhSongs(b *testing.B, n int) []synth.Song {
	root := testenv.SharedCorpus(b)
	st, err := synth.Measure(root)
	if err != nil {
		b.Fatal(err)
	}
	g := synth.NewGenerator(st, 1)
	songs := make([]synth.Song, n)
	for i := range songs {
		songs[i] = g.Next()
	}
	return songs
}

func add(ix *Index, s synth.Song) (int32, bool) {
	var set Set
	for _, f := range s.Instruments {
		set.Add(f)
	}
	return ix.Add(s.ID, set)
}

// BenchmarkAllLakh computes every top-10 list over 176,581 synthetic songs,
// in memory, on all CPUs.
func BenchmarkAllLakh(b *testing.B) {
	ix := New(10, 3)
	for _, s := range lakhSongs(b, LakhSongs) {
		add(ix, s)
	}
	b.Logf("%d songs take part (at least 3 instruments)", ix.Len())
	b.ResetTimer()
	for b.Loop() {
		ix.All(nil)
	}
}

// BenchmarkUpdateLakh applies batches of 256 new songs to an index holding
// the rest of 176,581 songs: one op is one batch (the similarity service's
// default), its lists and every list it enters.
func BenchmarkUpdateLakh(b *testing.B) {
	const batch = 256
	songs := lakhSongs(b, LakhSongs)
	ix := New(10, 3)
	held := len(songs) - 40*batch
	for _, s := range songs[:held] {
		add(ix, s)
	}
	lists := ix.All(nil)
	ix.Update(nil, lists) // build the reverse index as a running service has it
	next, changed := held, 0
	b.ResetTimer()
	for b.Loop() {
		if next+batch > len(songs) {
			b.Fatal("out of songs: raise the reserve")
		}
		var added []int32
		for _, s := range songs[next : next+batch] {
			if i, ok := add(ix, s); ok {
				added = append(added, i)
			}
		}
		next += batch
		for len(lists) < ix.Len() {
			lists = append(lists, nil)
		}
		c := ix.Update(added, lists)
		for y, l := range c {
			lists[y] = l
		}
		changed += len(c)
	}
	b.ReportMetric(float64(changed)/float64(b.N)/batch, "lists/song")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/batch/1e3, "µs/song")
}
