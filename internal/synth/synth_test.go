package synth

import (
	"bytes"
	"errors"
	"testing"

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
	for i := 0; i < 400; i++ {
		f, err := g.Next()
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

func TestSameSeedSameBytes(t *testing.T) {
	st := measured(t)
	a, b := NewFileGenerator(st, 7, 0.05), NewFileGenerator(st, 7, 0.05)
	for i := 0; i < 50; i++ {
		fa, err := a.Next()
		if err != nil {
			t.Fatal(err)
		}
		fb, _ := b.Next()
		if !bytes.Equal(fa.Data, fb.Data) {
			t.Fatalf("file %d differs between two generators with the same seed", i)
		}
	}
}
