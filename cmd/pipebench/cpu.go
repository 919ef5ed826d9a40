package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on Linux.
const clockTicks = 100

// treeCPU is the CPU time of a process and its children: its own time, the
// time of children it has reaped (cutime, cstime), and the time of children
// still running. A difference of two readings is what the tree spent between
// them, whether a child ended in between or not.
func treeCPU(pid int) time.Duration {
	total := ticks(pid, true)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		if parent(child) == pid {
			total += ticks(child, false)
		}
	}
	return time.Duration(total) * time.Second / clockTicks
}

// statFields are the fields of /proc/<pid>/stat after the command name.
func statFields(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(data)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

func parent(pid int) int {
	f := statFields(pid)
	if len(f) < 2 {
		return 0
	}
	p, _ := strconv.Atoi(f[1])
	return p
}

// ticks is utime+stime (fields 14, 15), plus cutime+cstime (16, 17) when
// reaped children count; after the name, field n is index n-3.
func ticks(pid int, reaped bool) int64 {
	f := statFields(pid)
	if len(f) < 15 {
		return 0
	}
	last := 12
	if reaped {
		last = 14
	}
	var sum int64
	for i := 11; i <= last; i++ {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		sum += v
	}
	return sum
}

// postmasterPID reads the first line of the cluster's postmaster.pid.
func postmasterPID(dataDir string) int {
	data, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(data), "\n", 2)[0]))
	return pid
}
