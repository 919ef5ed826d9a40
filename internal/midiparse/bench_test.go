package midiparse

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/testenv"
)

// BenchmarkParseCorpus parses every file of the shared corpus once per
// iteration on one goroutine; it reports files/s, and MB/s through SetBytes.
func BenchmarkParseCorpus(b *testing.B) {
	root := testenv.SharedCorpus(b)
	files, err := corpus.Files(root)
	if err != nil {
		b.Fatal(err)
	}
	var blobs [][]byte
	var total int64
	for _, rel := range files {
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			b.Fatal(err)
		}
		blobs = append(blobs, data)
		total += int64(len(data))
	}
	b.SetBytes(total)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for _, data := range blobs {
			_, _ = Parse(data)
		}
	}
	b.ReportMetric(float64(len(blobs))*float64(b.N)/b.Elapsed().Seconds(), "files/s")
}
