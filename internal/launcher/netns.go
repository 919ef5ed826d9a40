package launcher

import (
	"os/exec"

	"github.com/scale-dev/scale/internal/nsenter"
)

// startIn starts cmd in the network namespace at path ("" is this
// process's): a child inherits the namespace of the thread that forks it.
func startIn(path string, cmd *exec.Cmd) error {
	if path == "" {
		return cmd.Start()
	}
	return nsenter.Net(path, cmd.Start)
}
