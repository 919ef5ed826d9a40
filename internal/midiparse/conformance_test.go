package midiparse

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/scale-dev/scale/internal/testenv"
)

// reference is the part of ../shared/midi/expected.json the checks use.
type reference struct {
	Files map[string]struct {
		Error       *string  `json:"error"`
		Format      int      `json:"format"`
		NTracks     int      `json:"ntracks"`
		DurationS   float64  `json:"duration_s"`
		InitialBPM  float64  `json:"initial_bpm"`
		Instruments [][3]any `json:"instruments"`
	} `json:"files"`
}

// instrumentKey is (program, drums); drums are one instrument, so the reference's
// per-kit drum entries are folded into one with program 0.
type instrumentKey struct {
	program uint8
	drums   bool
}

func loadReference(t testing.TB) (string, reference) {
	t.Helper()
	root := testenv.SharedCorpus(t)
	raw, err := os.ReadFile(filepath.Join(root, "expected.json"))
	if err != nil {
		t.Fatalf("reading expected.json: %v", err)
	}
	var ref reference
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatalf("decoding expected.json: %v", err)
	}
	if len(ref.Files) == 0 {
		t.Fatal("expected.json lists no files")
	}
	return root, ref
}

// TestConformance checks Parse against the independent reference on every file
// of the shared corpus, and demands what the parser achieves: for every file
// the reference parsed, the same instrument set, note counts, format, track
// count, duration and initial tempo; for every file it rejected, an error.
func TestConformance(t *testing.T) {
	root, ref := loadReference(t)
	var parsed, samePairs, sameNotes, sameMeta, rejected, rejectedToo int
	for rel, want := range ref.Files {
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		p, perr := Parse(data)
		if want.Error != nil {
			rejected++
			if perr != nil {
				rejectedToo++
			} else {
				t.Errorf("%s: reference rejected it (%s), Parse returned no error", rel, *want.Error)
			}
			continue
		}
		parsed++
		if perr != nil {
			t.Errorf("%s: %v", rel, perr)
			continue
		}
		wantCounts := map[instrumentKey]int{}
		for _, in := range want.Instruments {
			k := instrumentKey{program: uint8(in[0].(float64)), drums: in[1].(bool)}
			if k.drums {
				k.program = 0
			}
			wantCounts[k] += int(in[2].(float64))
		}
		gotCounts := map[instrumentKey]int{}
		for _, in := range p.Instruments {
			gotCounts[instrumentKey{in.Program, in.Drums}] = in.Notes
		}
		pairsEqual, notesEqual := len(gotCounts) == len(wantCounts), true
		for k, n := range wantCounts {
			g, ok := gotCounts[k]
			pairsEqual = pairsEqual && ok
			notesEqual = notesEqual && g == n
		}
		if pairsEqual {
			samePairs++
		}
		if pairsEqual && notesEqual {
			sameNotes++
		} else {
			t.Errorf("%s: instruments and note counts %v, reference %v", rel, gotCounts, wantCounts)
		}
		if p.Format == want.Format && p.Tracks == want.NTracks &&
			math.Abs(p.DurationSeconds-want.DurationS) < 1e-3 && math.Abs(p.InitialBPM-want.InitialBPM) < 1e-3 {
			sameMeta++
		} else {
			t.Errorf("%s: format/tracks/duration/bpm %d/%d/%.4f/%.4f, reference %d/%d/%.4f/%.4f", rel,
				p.Format, p.Tracks, p.DurationSeconds, p.InitialBPM, want.Format, want.NTracks, want.DurationS, want.InitialBPM)
		}
	}
	t.Logf("reference parsed %d: instrument sets equal %d, note counts equal %d, format/tracks/duration/tempo equal %d; reference rejected %d, rejected here %d",
		parsed, samePairs, sameNotes, sameMeta, rejected, rejectedToo)
	if parsed == 0 || rejected == 0 {
		t.Errorf("the reference lists %d parsed and %d rejected files; the corpus should have both", parsed, rejected)
	}
}
