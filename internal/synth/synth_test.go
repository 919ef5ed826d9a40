package synth

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/midiparse"
	"github.com/scale-dev/scale/internal/testenv"
)

func measured(t *testing.T) Stats {
	t.Helper()
	root := testenv.SharedCorpus(t)
	st, err := Measure(root)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestGeneratedFilesParseAsIntended: every valid generated file parses to exactly
// the instruments and note counts the generator put in, every damaged one is
// rejected, and the mean size is near the corpus's.
func TestGeneratedFilesParseAsIntended(t *testing.T) {
	st := measured(t)
	g := NewFileGenerator(st, 42, 0.05)
	var valid, corrupt, bytesTotal int
	formats := map[int]int{}
	for i := range uint64(400) {
		f, err := g.File(i)
		if err != nil {
			t.Fatal(err)
		}
		p, perr := midiparse.Parse(f.Data)
		if f.Corrupt != "" {
			corrupt++
			if !errors.Is(perr, midiparse.ErrInvalid) {
				t.Fatalf("file %d damaged (%s) but parsed: %v", i, f.Corrupt, perr)
			}
			continue
		}
		valid++
		bytesTotal += len(f.Data)
		if perr != nil {
			t.Fatalf("file %d: %v", i, perr)
		}
		formats[p.Format]++
		got := map[int]int{}
		for _, in := range p.Instruments {
			id := int(in.Program)
			if in.Drums {
				id = 128
			}
			got[id] = in.Notes
		}
		if len(got) != len(f.Notes) {
			t.Fatalf("file %d: instruments %v, generated %v", i, got, f.Notes)
		}
		for id, n := range f.Notes {
			if got[id] != n {
				t.Fatalf("file %d: instrument %d has %d notes, generated %d", i, id, got[id], n)
			}
		}
	}
	var corpusMean float64
	for _, s := range st.Sizes {
		corpusMean += float64(s)
	}
	corpusMean /= float64(len(st.Sizes))
	mean := float64(bytesTotal) / float64(valid)
	t.Logf("%d valid (formats %v), %d damaged; mean size %.0f bytes, corpus %.0f", valid, formats, corrupt, mean, corpusMean)
	if corrupt == 0 || formats[0] == 0 || formats[1] == 0 {
		t.Error("want both formats and some damaged files")
	}
	if mean < corpusMean/2 || mean > corpusMean*2 {
		t.Errorf("mean size %.0f is far from the corpus's %.0f", mean, corpusMean)
	}
}

// TestSameSeedSameBytes: file i is the same bytes whichever order, and however
// concurrently, the files are written.
func TestSameSeedSameBytes(t *testing.T) {
	st := measured(t)
	a, b := NewFileGenerator(st, 7, 0.05), NewFileGenerator(st, 7, 0.05)
	const n = 50
	backwards := make([][]byte, n)
	var wg sync.WaitGroup
	for i := n - 1; i >= 0; i-- {
		wg.Go(func() {
			f, err := b.File(uint64(i))
			if err != nil {
				t.Error(err)
			}
			backwards[i] = f.Data
		})
	}
	wg.Wait()
	for i := range uint64(n) {
		f, err := a.File(i)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(f.Data, backwards[i]) {
			t.Fatalf("file %d differs between two generators with the same seed", i)
		}
	}
	other, err := NewFileGenerator(st, 8, 0.05).File(0)
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := a.File(0); bytes.Equal(f.Data, other.Data) {
		t.Error("seeds 7 and 8 gave the same first file")
	}
}

func BenchmarkFile(b *testing.B) {
	root, err := corpus.SharedDir()
	if err != nil {
		b.Skip(err)
	}
	st, err := Measure(root)
	if err != nil {
		b.Fatal(err)
	}
	g := NewFileGenerator(st, 1, 0.01)
	var size int64
	b.ResetTimer()
	for i := range uint64(b.N) {
		f, err := g.File(i)
		if err != nil {
			b.Fatal(err)
		}
		size += int64(len(f.Data))
	}
	b.SetBytes(size / int64(b.N))
}
