package local

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/scale-dev/scale/internal/cgroup"
	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
)

// cpuHog starts step.Workers busy processes (a shell loop each) that die
// with the runner, and returns how to stop them.
func (e *Env) cpuHog(step experiment.Step) (func(context.Context) error, error) {
	var burners []*launcher.Process
	stop := func(context.Context) error {
		for _, b := range burners {
			b.Kill()
		}
		return nil
	}
	for i := range max(step.Workers, 1) {
		p, err := launcher.Start(launcher.Spec{
			Name: fmt.Sprintf("cpu-hog-%d", i+1), Binary: "/bin/sh", Args: []string{"-c", "while :; do :; done"},
			LogPath: filepath.Join(e.opts.Dir, "logs", "cpu-hog.log"), DieWithParent: true,
		})
		if err != nil {
			stop(context.Background()) //nolint:errcheck // stopping what started
			return nil, err
		}
		burners = append(burners, p)
	}
	return stop, nil
}

// cpuQuota moves the targets' processes into a new cgroup allowed
// step.CPUs of CPU time, and returns how to move them back and remove it.
func (e *Env) cpuQuota(step experiment.Step, name string) (func(context.Context) error, error) {
	g, err := cgroup.Limit("chaos-"+name, step.CPUs)
	if err != nil {
		return nil, err
	}
	for _, t := range step.Targets {
		if p := e.Process(t); p != nil {
			if err := g.Add(p.Pid()); err != nil {
				g.Close() //nolint:errcheck // undoing
				return nil, err
			}
		}
	}
	return func(context.Context) error { return g.Close() }, nil
}
