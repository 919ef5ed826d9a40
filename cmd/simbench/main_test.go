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
	for _, args := range [][]string{
		{"-songs", "3000", "-clients", "20", "-rate", "200", "-duration", "1s"},
		// The overload curve of an API without its cache, shedding at 4 requests at the database.
		{"-songs", "3000", "-cache-songs", "0", "-max-in-flight", "4", "-overload", "300,1000", "-duration", "1s"},
	} {
		flag.CommandLine = flag.NewFlagSet("simbench", flag.ContinueOnError)
		os.Args = append([]string{"simbench"}, args...)
		if err := run(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
