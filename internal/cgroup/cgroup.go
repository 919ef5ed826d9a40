// Package cgroup caps the CPU time of processes with a cgroup (the v1 CPU
// controller, as this machine has it): the chaos runner's CPU-quota fault
// and the scale-out benchmark's small workers use it. Groups are named with
// a prefix and the creating process's PID, so that a later start can remove
// the ones a process that died left behind.
package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Root is the v1 CPU controller's mount.
const Root = "/sys/fs/cgroup/cpu"

// Prefix starts the name of every group this package creates.
const Prefix = "scale-"

// Group is a CPU-capped cgroup.
type Group struct {
	dir  string
	pids []int
}

// Limit creates a group named name (made unique with this process's PID)
// allowed cpus of CPU time (0.2: a fifth of one CPU).
func Limit(name string, cpus float64) (*Group, error) {
	if _, err := os.Stat(filepath.Join(Root, "cpu.cfs_quota_us")); err != nil {
		return nil, fmt.Errorf("CPU limits need the cgroup v1 CPU controller at %s: %w", Root, err)
	}
	dir := filepath.Join(Root, Prefix+strconv.Itoa(os.Getpid())+"-"+name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating cgroup %s: %w", dir, err)
	}
	const period = 100000
	for file, v := range map[string]int{"cpu.cfs_period_us": period, "cpu.cfs_quota_us": int(cpus * period)} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(strconv.Itoa(v)), 0o644); err != nil {
			os.Remove(dir)
			return nil, fmt.Errorf("cgroup %s: %w", file, err)
		}
	}
	return &Group{dir: dir}, nil
}

// Add moves a process (all its threads) into the group.
func (g *Group) Add(pid int) error {
	if err := os.WriteFile(filepath.Join(g.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("moving pid %d into %s: %w", pid, g.dir, err)
	}
	g.pids = append(g.pids, pid)
	return nil
}

// Close moves the group's processes back to the root group and removes it.
func (g *Group) Close() error {
	var errs []error
	for _, pid := range g.pids {
		if err := os.WriteFile(filepath.Join(Root, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("moving pid %d back: %w", pid, err))
		}
	}
	if err := os.Remove(g.dir); err != nil {
		errs = append(errs, fmt.Errorf("removing cgroup %s: %w", g.dir, err))
	}
	return errors.Join(errs...)
}

// Sweep removes the groups whose creating process is gone (their processes
// died with it, so they are empty), and returns how many.
func Sweep() int {
	dirs, _ := filepath.Glob(filepath.Join(Root, Prefix+"*"))
	n := 0
	for _, d := range dirs {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), Prefix), "-")
		if id, err := strconv.Atoi(pid); err == nil && id != os.Getpid() && syscall.Kill(id, 0) == nil {
			continue // its creator lives: not an orphan
		}
		if os.Remove(d) == nil {
			n++
		}
	}
	return n
}
