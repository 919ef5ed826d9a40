package extract

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInspect(t *testing.T) {
	dir := t.TempDir()
	// Format 0, one track: program 25 on channel 0, one note; one drum note.
	good := []byte("MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60" +
		"MTrk\x00\x00\x00\x0f\x00\xc0\x19\x00\x90\x3c\x40\x00\x99\x24\x40\x00\xff\x2f\x00")
	if err := os.WriteFile(filepath.Join(dir, "good.mid"), good, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.mid"), good[:20], 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Inspect([]string{dir, filepath.Join(dir, "missing.mid")}, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3:\n%s", len(lines), out.String())
	}
	var results []map[string]any
	for _, l := range lines {
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		for _, k := range []string{"file", "md5", "format", "tracks", "instruments", "error"} {
			if _, ok := r[k]; !ok {
				t.Errorf("line %q lacks %q", l, k)
			}
		}
		results = append(results, r)
	}
	// Folder entries come sorted: bad.mid, good.mid; then the missing file.
	if results[0]["error"] == "" || results[2]["error"] == "" {
		t.Errorf("bad and missing files must carry an error: %v / %v", results[0]["error"], results[2]["error"])
	}
	wantGood := `[{"drums":false,"notes":1,"program":25},{"drums":true,"notes":1,"program":null}]`
	got, _ := json.Marshal(results[1]["instruments"])
	if results[1]["error"] != "" || string(got) != wantGood {
		t.Errorf("good.mid: instruments %s error %q, want %s", got, results[1]["error"], wantGood)
	}
}
