package local

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ProcStat is a process's /proc/PID/stat after its name: the state letter
// (R, S, T for stopped, Z for a zombie) first, the start time 19th.
func ProcStat(pid int) ([]string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	// pid (comm) state ...: comm may hold spaces, so split after the last ')'.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(fields) < 20 {
		return nil, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	return fields, nil
}

// processStart is a process's start time in clock ticks since boot: with
// the PID it names one process, not whichever process is given its PID
// later.
func processStart(pid int) (uint64, error) {
	fields, err := ProcStat(pid)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// StopRunner asks the runner whose environment is in dir to stop, as SIGINT
// does (every fault healed, exit 2), and waits up to timeout for it to exit.
// It signals only the process the state file names, and only if that process
// is still the one that wrote it.
func StopRunner(dir string, timeout time.Duration) error {
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return fmt.Errorf("no environment in %s: %w", dir, err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("%s: %w", StateFile, err)
	}
	if st.Runner == 0 {
		return fmt.Errorf("%s names no runner", StateFile)
	}
	if start, err := processStart(st.Runner); err != nil || start != st.RunnerStart {
		return fmt.Errorf("the runner of %s (pid %d) has already exited", dir, st.Runner)
	}
	if err := syscall.Kill(st.Runner, syscall.SIGINT); err != nil {
		return fmt.Errorf("signalling the runner (pid %d): %w", st.Runner, err)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if start, err := processStart(st.Runner); err != nil || start != st.RunnerStart {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("the runner did not exit within " + timeout.String() + " of SIGINT")
}
