package ingest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/scale-dev/scale/internal/objstore"
)

// TestSongName: LMD's md5_to_paths.json names a song by its content MD5 (as a
// listing reports it) or by its file name (LMD names files by MD5); the
// first path wins, without its extension and with _ and - as spaces; a file
// the names do not know keeps its own name.
func TestSongName(t *testing.T) {
	const md5 = "0123456789abcdef0123456789abcdef"
	dir := t.TempDir()
	namesFile := filepath.Join(dir, "md5_to_paths.json")
	err := os.WriteFile(namesFile, []byte(`{
		"0123456789abcdef0123456789abcdef": ["Q/Queen/Bohemian_Rhapsody.mid", "other/Second.mid"],
		"fedcba9876543210fedcba9876543210": ["A/ABBA/Dancing-Queen.2.mid"]}`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	names, err := loadNames(namesFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		obj  objstore.Object
		want string
	}{
		{"by content md5", objstore.Object{Key: "x/whatever.mid", MD5: md5}, "Bohemian Rhapsody"},
		{"by md5 file name", objstore.Object{Key: "lmd/f/fedcba9876543210fedcba9876543210.mid"}, "Dancing Queen.2"},
		{"md5 file name in upper case", objstore.Object{Key: "FEDCBA9876543210FEDCBA9876543210.MID"}, "Dancing Queen.2"},
		{"unknown file: its own name", objstore.Object{Key: "songs/My_Song-Title.kar"}, "My Song Title"},
		{"windows separators", objstore.Object{Key: `songs\Some_Tune.mid`}, "Some Tune"},
		{"nothing but separators", objstore.Object{Key: "songs/__-.mid"}, "__-.mid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := songName(tc.obj, names); got != tc.want {
				t.Errorf("songName(%+v) = %q, want %q", tc.obj, got, tc.want)
			}
		})
	}
	if got := songName(objstore.Object{Key: md5 + ".mid"}, nil); got != md5 {
		t.Errorf("without a names file: %q, want the file name", got)
	}
}

func TestLoadNamesErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"a": "not a list"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{filepath.Join(dir, "missing.json"), bad} {
		if _, err := loadNames(file); err == nil {
			t.Errorf("loadNames(%s) succeeded", file)
		}
	}
	if names, err := loadNames(""); names != nil || err != nil {
		t.Errorf("loadNames(\"\") = %v, %v; want no names and no error", names, err)
	}
}
