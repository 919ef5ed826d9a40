// Package corpus finds the shared MIDI corpus (../shared/midi beside the project
// root) and lists MIDI files in a folder.
package corpus

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// EnvDir names a variable that overrides where the shared corpus is.
const EnvDir = "SCALE_SHARED_MIDI"

// IsMIDIName reports whether a file or object name has a MIDI extension.
func IsMIDIName(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".mid", ".midi", ".kar":
		return true
	}
	return false
}

// SharedDir returns the shared corpus folder: $SCALE_SHARED_MIDI, or the first
// shared/midi found beside the working directory or one of its parents.
func SharedDir() (string, error) {
	if d := os.Getenv(EnvDir); d != "" {
		return d, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		cand := filepath.Join(dir, "shared", "midi")
		if st, err := os.Stat(cand); err == nil && st.IsDir() {
			return cand, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no shared/midi folder beside %s or its parents; set %s", mustGetwd(), EnvDir)
		}
		dir = parent
	}
}

func mustGetwd() string {
	d, _ := os.Getwd()
	return d
}

// Files lists the MIDI files under root as slash-separated paths relative to
// root, sorted.
func Files(root string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && IsMIDIName(d.Name()) {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", root, err)
	}
	if len(out) == 0 {
		return nil, errors.New("no MIDI files under " + root)
	}
	sort.Strings(out)
	return out, nil
}
