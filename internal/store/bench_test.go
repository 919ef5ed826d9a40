package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/testenv"
)

// BenchmarkWriteSimilar writes batches of lists as the similarity service
// does at Lakh size under backlog: 1,350 changed lists of 10 entries (about
// 8 lists per song in a batch of 256 new songs, batches of 170), over 20,000
// stored lists, so most writes rewrite a list in place.
func BenchmarkWriteSimilar(b *testing.B) {
	s := testenv.Store(b)
	ctx := context.Background()
	lease, err := s.TryLease(ctx, store.SimilarityWriter)
	if err != nil {
		b.Fatal(err)
	}
	defer lease.Release()
	r := rand.New(rand.NewPCG(1, 2))
	ids := make([]string, 20_000)
	for i := range ids {
		ids[i] = fmt.Sprintf("%016x%016x", r.Uint64(), r.Uint64())
	}
	batch := func() map[string][]store.Similar {
		lists := make(map[string][]store.Similar, 1350)
		for len(lists) < 1350 {
			list := make([]store.Similar, 10)
			for k := range list {
				shared := make([]int16, 3+r.IntN(4))
				for j := range shared {
					shared[j] = int16(r.IntN(129))
				}
				list[k] = store.Similar{Other: ids[r.IntN(len(ids))], Score: 0.5 + r.Float64()/2, Shared: shared}
			}
			lists[ids[r.IntN(len(ids))]] = list
		}
		return lists
	}
	for range 20 { // fill the table first
		if err := lease.WriteSimilar(ctx, batch()); err != nil {
			b.Fatal(err)
		}
	}
	batches := make([]map[string][]store.Similar, 16)
	for i := range batches {
		batches[i] = batch()
	}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if err := lease.WriteSimilar(ctx, batches[i%len(batches)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1350, "µs/list")
}

// BenchmarkSaveOutcomes stores batches as an extract worker does on the
// Lakh corpus: 32 files a batch (the default fetch), each a song with 5.2
// instruments on average (926,000 instrument rows for 176,581 files), their
// discovered files already recorded by ingest. Every batch is new songs, so
// the tables grow as they do in a run.
func BenchmarkSaveOutcomes(b *testing.B) {
	s := testenv.Store(b)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 4))
	const perBatch = 32
	batch := func(n int) []store.Song {
		songs := make([]store.Song, perBatch)
		for i := range songs {
			id := fmt.Sprintf("%016x%016x", r.Uint64(), r.Uint64())
			notes := map[int]int{}
			for len(notes) < 1+r.IntN(9) { // 1 to 9 instruments: 5 on average
				notes[r.IntN(129)] = 1 + r.IntN(2000)
			}
			songs[i] = store.Song{ID: id, Name: id, SourceKey: fmt.Sprintf("s3://bench/%d/%d.mid", n, i), Format: 1, Tracks: 8,
				TicksPerQuarter: 480, DurationSeconds: 180, InitialBPM: 120, InstrumentNotes: notes, DiscoveredSize: 30_000}
		}
		return songs
	}
	discover := func(songs []store.Song) {
		files := make([]store.DiscoveredFile, len(songs))
		for i, s := range songs {
			files[i] = store.DiscoveredFile{SourceKey: s.SourceKey, MD5: s.ID, Size: s.DiscoveredSize, Name: s.Name}
		}
		if _, err := s.RecordDiscovered(ctx, files); err != nil {
			b.Fatal(err)
		}
	}
	for n := range 200 { // 6,400 songs stored before the timing
		songs := batch(n)
		discover(songs)
		if err := s.SaveOutcomes(ctx, songs, nil); err != nil {
			b.Fatal(err)
		}
	}
	n := 200
	for b.Loop() {
		b.StopTimer()
		songs := batch(n)
		discover(songs)
		n++
		b.StartTimer()
		if err := s.SaveOutcomes(ctx, songs, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/perBatch, "µs/song")
}
