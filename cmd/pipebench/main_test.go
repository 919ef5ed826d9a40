package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/scale-dev/scale/internal/synth"
	"github.com/scale-dev/scale/internal/testenv"
)

// TestSmoke runs the benchmark as a person would, on a small corpus read
// through versitygw behind a 10 ms latency proxy, so that it cannot rot. It
// asserts no timing; run fails if any file is not accounted for.
func TestSmoke(t *testing.T) {
	shared := testenv.SharedCorpus(t)
	testenv.S3(t) // skips outside CI, fails in CI, when versitygw is absent
	st, err := synth.Measure(shared)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "corpus")
	if err := synth.WriteCorpus(context.Background(), st, dir, 300, 1, 0.01, nil); err != nil {
		t.Fatal(err)
	}
	flag.CommandLine = flag.NewFlagSet("pipebench", flag.ContinueOnError)
	os.Args = []string{"pipebench", "-dir", dir, "-workers", "1", "-source", "s3", "-s3-latency", "10ms", "-s3-jitter", "1ms", "-statements", "3"}
	if err := run(context.Background()); err != nil {
		t.Fatal(err)
	}
}
