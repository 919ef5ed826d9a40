// Package launcher starts Scale's binaries as child processes and stops them:
// the one way the end-to-end tests, the pipeline benchmark and the chaos
// runner's local driver run real processes. Each child runs in its own process
// group with its output in a log file, and is only ever signalled by its own
// PID, never looked up by name.
package launcher

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Build compiles each package (a path relative to the module root dir, such
// as ./services/extract/cmd/extract) into outDir, named by the key, and
// returns the binaries' paths by name.
func Build(dir, outDir string, pkgs map[string]string) (map[string]string, error) {
	bins := make(map[string]string, len(pkgs))
	args := []string{"build", "-o", outDir + string(filepath.Separator)}
	for name, pkg := range pkgs {
		if filepath.Base(pkg) != name {
			return nil, fmt.Errorf("binary %s: package %s must end in its name", name, pkg)
		}
		bins[name] = filepath.Join(outDir, name)
		args = append(args, pkg)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building %v: %w\n%s", pkgs, err, out)
	}
	return bins, nil
}

// RepoRoot is the nearest folder at or above the working one that holds the
// repository's go.work: where Build finds the packages.
func RepoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("not inside the Scale repository (no go.work above the working folder)")
		}
		d = parent
	}
}

// Process is a started child.
type Process struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string
	done    chan struct{}
	err     error // Wait's result, set before done closes
}

// Spec says what to start.
type Spec struct {
	Name    string
	Binary  string
	Args    []string
	Env     []string // added to this process's environment
	LogPath string   // stdout and stderr; created or truncated
	// DieWithParent has the kernel SIGKILL the process when this one dies,
	// however it dies: a killed parent leaves no children running.
	DieWithParent bool
	// NewNetNS starts the process in a network namespace of its own (only a
	// loopback, down); NetNS starts it in an existing one, named by a path
	// such as /proc/PID/ns/net. Both need root.
	NewNetNS bool
	NetNS    string
}

// Start starts the process.
func Start(s Spec) (*Process, error) {
	logf, err := os.Create(s.LogPath)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", s.Name, err)
	}
	defer logf.Close() // the child holds its own descriptor
	cmd := exec.Command(s.Binary, s.Args...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if s.DieWithParent {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if s.NewNetNS {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNET
	}
	if err := startIn(s.NetNS, cmd); err != nil {
		return nil, fmt.Errorf("starting %s: %w", s.Name, err)
	}
	p := &Process{Name: s.Name, Cmd: cmd, LogPath: s.LogPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns how it ended (nil for exit
// status 0); any number of callers may wait.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Signal sends sig to the process (by PID); a process that has exited is not
// an error.
func (p *Process) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.Cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signalling %s (pid %d): %w", p.Name, p.Pid(), err)
	}
	return nil
}

// Kill sends SIGKILL and waits for the exit.
func (p *Process) Kill() {
	p.Signal(syscall.SIGKILL) //nolint:errcheck // exited already is fine
	<-p.done
}

// Stop sends SIGTERM and waits up to grace for the exit, then kills; it
// returns how the process ended, or an error saying it had to be killed.
func (p *Process) Stop(grace time.Duration) error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		p.Kill()
		return fmt.Errorf("%s did not exit within %v of SIGTERM; killed", p.Name, grace)
	}
}

// WaitReady polls ready every 50 ms until it returns nil. It fails when the
// process exits first, or, after killing the process, when timeout passes;
// both errors carry the process's log.
func (p *Process) WaitReady(timeout time.Duration, ready func() error) error {
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v\n%s", p.Name, p.Wait(), p.Log())
		default:
		}
		if time.Now().After(deadline) {
			p.Kill()
			return fmt.Errorf("%s not ready within %v: %w\n%s", p.Name, timeout, err, p.Log())
		}
	}
}

// Log returns what the process has written so far.
func (p *Process) Log() string {
	data, err := os.ReadFile(p.LogPath)
	if err != nil {
		return err.Error()
	}
	return string(data)
}
