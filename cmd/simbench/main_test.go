package main

import (
	"context"
	"flag"
	"os"
	"testing"

	"github.com/scale-dev/scale/internal/testenv"
)

// TestSmoke runs the benchmark as a person would, at a small size and for a
// second per load run, so that it cannot rot. It asserts no timing.
func TestSmoke(t *testing.T) {
	testenv.SharedCorpus(t)
	flag.CommandLine = flag.NewFlagSet("simbench", flag.ContinueOnError)
	os.Args = []string{"simbench", "-songs", "3000", "-clients", "20", "-rate", "200", "-duration", "1s"}
	if err := run(context.Background()); err != nil {
		t.Fatal(err)
	}
}
