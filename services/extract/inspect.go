package extract

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/midiparse"
	"github.com/scale-dev/scale/pkg/events"
)

// InspectResult is one line of `extract inspect`.
type InspectResult struct {
	File        string              `json:"file"`
	MD5         string              `json:"md5"`
	Format      int                 `json:"format"`
	Tracks      int                 `json:"tracks"`
	Instruments []events.Instrument `json:"instruments"`
	Error       string              `json:"error"`
}

// Inspect parses each path (a file, or a folder whose MIDI files are taken) and
// writes one JSON line per file to w. A file that cannot be read or parsed gets
// its reason in "error"; only a failure to write is returned.
func Inspect(paths []string, w io.Writer) error {
	enc := json.NewEncoder(w)
	for _, p := range paths {
		files := []string{p}
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			rels, err := corpus.Files(p)
			if err != nil {
				return err
			}
			files = files[:0]
			for _, rel := range rels {
				files = append(files, filepath.Join(p, filepath.FromSlash(rel)))
			}
		}
		for _, f := range files {
			if err := enc.Encode(inspectFile(f)); err != nil {
				return fmt.Errorf("writing result: %w", err)
			}
		}
	}
	return nil
}

func inspectFile(path string) InspectResult {
	res := InspectResult{File: path, Instruments: []events.Instrument{}}
	data, err := os.ReadFile(path)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	if len(data) > midiparse.MaxFileSize {
		res.Error = fmt.Sprintf("%v: %d bytes is over the %d byte limit", midiparse.ErrInvalid, len(data), midiparse.MaxFileSize)
		return res
	}
	sum := md5.Sum(data)
	res.MD5 = hex.EncodeToString(sum[:])
	p, err := midiparse.Parse(data)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.Format, res.Tracks = p.Format, p.Tracks
	res.Instruments = eventInstruments(p)
	return res
}
