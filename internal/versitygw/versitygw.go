// Package versitygw runs the versitygw S3 gateway over a posix folder: every
// folder directly under the root is a bucket. Tests and the pipeline benchmark
// use it as the real S3-compatible server.
package versitygw

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/scale-dev/scale/internal/freeport"
	"github.com/scale-dev/scale/internal/objstore"
)

// Version is the release .ci/run installs.
const Version = "v1.8.0"

// InstallHint is the command that installs it.
const InstallHint = "go install github.com/versity/versitygw/cmd/versitygw@" + Version

// Server is a running gateway.
type Server struct {
	Config objstore.S3Config // how to reach it
	cmd    *exec.Cmd
}

// Path finds the binary on PATH or in GOPATH/bin.
func Path() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		home, _ := os.UserHomeDir()
		gopath = filepath.Join(home, "go")
	}
	p := filepath.Join(gopath, "bin", "versitygw")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("versitygw not installed (%s): %w", InstallHint, err)
	}
	return p, nil
}

// Start runs the gateway on a free loopback port over root, writing its output
// to logPath, and returns once it accepts connections.
func Start(root, logPath string) (*Server, error) {
	bin, err := Path()
	if err != nil {
		return nil, err
	}
	port, err := freeport.Get()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := objstore.S3Config{Endpoint: "http://" + addr, Region: "us-east-1", PathStyle: true, AccessKey: "scale-local", SecretKey: "scale-local-secret"}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	// Without --keep-alive the gateway closes the connection after every
	// response, so every object read costs a new TCP connection; --quiet
	// stops it logging every request.
	cmd := exec.Command(bin, "--access", cfg.AccessKey, "--secret", cfg.SecretKey, "--port", addr, "--keep-alive", "--quiet", "posix", root)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting versitygw: %w", err)
	}
	logFile.Close() // the child has its own descriptor
	s := &Server{Config: cfg, cmd: cmd}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			out, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("versitygw did not listen on %s in 20s:\n%s", addr, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Pid is the gateway's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Stop kills the gateway and waits for it.
func (s *Server) Stop() {
	s.cmd.Process.Kill() //nolint:errcheck // may have exited
	s.cmd.Wait()         //nolint:errcheck // killed
}
