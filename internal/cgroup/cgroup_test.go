package cgroup

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLimitMovesAndReleases: a process moved into a group is in it (and its
// quota is written); Close moves it back and removes the group.
func TestLimitMovesAndReleases(t *testing.T) {
	if _, err := os.Stat(filepath.Join(Root, "cpu.cfs_quota_us")); err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and the cgroup v1 CPU controller")
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }() //nolint:errcheck // teardown
	g, err := Limit("test", 0.25)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Add(cmd.Process.Pid); err != nil {
		g.Close() //nolint:errcheck // teardown
		t.Fatal(err)
	}
	quota, _ := os.ReadFile(filepath.Join(g.dir, "cpu.cfs_quota_us"))
	procs, _ := os.ReadFile(filepath.Join(g.dir, "cgroup.procs"))
	if strings.TrimSpace(string(quota)) != "25000" || !strings.Contains(string(procs), strconv.Itoa(cmd.Process.Pid)) {
		t.Errorf("group: quota %q, procs %q", quota, procs)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(g.dir); !os.IsNotExist(err) {
		t.Errorf("group %s still there after Close (%v)", g.dir, err)
	}
}
