package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

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

// cgroupCPU is the cgroup v1 CPU controller's root on this machine.
const cgroupCPU = "/sys/fs/cgroup/cpu"

// cgroupPrefix names the cgroups the driver creates, so that a start can
// find and remove those a killed runner left (empty: their processes died
// with it).
const cgroupPrefix = "scale-chaos-"

// cpuQuota moves the targets' processes into a new cgroup allowed
// step.CPUs of CPU time, and returns how to move them back and remove it.
func (e *Env) cpuQuota(step experiment.Step, name string) (func(context.Context) error, error) {
	if _, err := os.Stat(filepath.Join(cgroupCPU, "cpu.cfs_quota_us")); err != nil {
		return nil, fmt.Errorf("cpu-quota needs the cgroup v1 CPU controller at %s: %w", cgroupCPU, err)
	}
	dir := filepath.Join(cgroupCPU, cgroupPrefix+strconv.Itoa(os.Getpid())+"-"+name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating cgroup %s: %w", dir, err)
	}
	const period = 100000
	quota := int(step.CPUs * period)
	if err := os.WriteFile(filepath.Join(dir, "cpu.cfs_period_us"), []byte(strconv.Itoa(period)), 0o644); err != nil {
		os.Remove(dir)
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "cpu.cfs_quota_us"), []byte(strconv.Itoa(quota)), 0o644); err != nil {
		os.Remove(dir)
		return nil, err
	}
	var pids []int
	for _, t := range step.Targets {
		if p := e.Process(t); p != nil {
			pids = append(pids, p.Pid())
		}
	}
	release := func(context.Context) error {
		var errs []error
		for _, pid := range pids {
			if err := os.WriteFile(filepath.Join(cgroupCPU, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("moving pid %d back: %w", pid, err))
			}
		}
		if err := os.Remove(dir); err != nil {
			errs = append(errs, fmt.Errorf("removing cgroup %s: %w", dir, err))
		}
		return errors.Join(errs...)
	}
	for _, pid := range pids {
		// Every thread of the process moves with it (cgroup.procs).
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			release(context.Background()) //nolint:errcheck // undoing
			return nil, fmt.Errorf("moving pid %d into %s: %w", pid, dir, err)
		}
	}
	return release, nil
}

// SweepCgroups removes cgroups a runner that died left behind (their
// processes died with it, so they are empty), and returns how many.
func SweepCgroups() int {
	dirs, _ := filepath.Glob(filepath.Join(cgroupCPU, cgroupPrefix+"*"))
	n := 0
	for _, d := range dirs {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), cgroupPrefix), "-")
		if id, err := strconv.Atoi(pid); err == nil && syscall.Kill(id, 0) == nil && id != os.Getpid() {
			continue // its runner lives: not an orphan
		}
		if os.Remove(d) == nil {
			n++
		}
	}
	return n
}
