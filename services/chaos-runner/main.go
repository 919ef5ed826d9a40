// Command chaos-runner will attack a running Scale deployment while checking its
// SLOs and its exactly-once accounting. It is its own module so that client-go's
// dependency graph stays out of the pipeline services. Not built yet: it says so
// and exits non-zero rather than pretend to run an experiment.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "chaos-runner: not implemented yet (see the chaos issues); no experiment was run")
	os.Exit(2)
}
