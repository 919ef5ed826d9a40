package midiparse

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/testenv"
)

// FuzzParse feeds arbitrary bytes to Parse, seeded with the shared corpus (valid
// and deliberately broken files). Parse must return a profile or an ErrInvalid,
// never panic, hang or return an inconsistent profile.
func FuzzParse(f *testing.F) {
	root := testenv.SharedCorpus(f)
	files, err := corpus.Files(root)
	if err != nil {
		f.Fatal(err)
	}
	for i, rel := range files {
		if i%4 != 0 { // a quarter of the corpus keeps the seed run short
			continue
		}
		if data, err := os.ReadFile(filepath.Join(root, rel)); err == nil && len(data) < 16<<10 {
			f.Add(data)
		}
	}
	f.Add([]byte("MThd\x00\x00\x00\x06\x00\x01\x00\x01\x00\x60MTrk\x00\x00\x00\x04\x00\xff\x2f\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		for _, in := range p.Instruments {
			if in.Notes <= 0 || in.Program > 127 || (in.Drums && in.Program != 0) {
				t.Fatalf("bad instrument %+v", in)
			}
		}
		if p.DurationSeconds < 0 || p.InitialBPM <= 0 {
			t.Fatalf("bad timing: %+v", p)
		}
	})
}
