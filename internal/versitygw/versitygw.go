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
	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/objstore"
)

// Version is the release .ci/run installs.
const Version = "v1.8.0"

// InstallHint is the command that installs it.
const InstallHint = "go install github.com/versity/versitygw/cmd/versitygw@" + Version

// Server is a running gateway.
type Server struct {
	Config objstore.S3Config // how to reach it
	Addr   string            // host:port it listens on
	spec   launcher.Spec
	proc   *launcher.Process
}

// Options say how to run it.
type Options struct {
	Addr string // host:port; empty: a free loopback port
	// DieWithParent has the kernel kill the gateway when this process dies.
	DieWithParent bool
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

// Start runs the gateway over root, writing its output to logPath, and
// returns once it accepts connections.
func Start(root, logPath string, o Options) (*Server, error) {
	bin, err := Path()
	if err != nil {
		return nil, err
	}
	if o.Addr == "" {
		port, err := freeport.Get()
		if err != nil {
			return nil, err
		}
		o.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	}
	cfg := objstore.S3Config{Endpoint: "http://" + o.Addr, Region: "us-east-1", PathStyle: true, AccessKey: "scale-local", SecretKey: "scale-local-secret"}
	// Without --keep-alive the gateway closes the connection after every
	// response, so every object read costs a new TCP connection; --quiet
	// stops it logging every request.
	s := &Server{Config: cfg, Addr: o.Addr, spec: launcher.Spec{
		Name: "versitygw", Binary: bin, LogPath: logPath, DieWithParent: o.DieWithParent,
		Args: []string{"--access", cfg.AccessKey, "--secret", cfg.SecretKey, "--port", o.Addr, "--keep-alive", "--quiet", "posix", root},
	}}
	return s, s.Restart()
}

// Restart starts the gateway (again, after Stop) on the same address and
// root, and returns once it accepts connections.
func (s *Server) Restart() error {
	p, err := launcher.Start(s.spec)
	if err != nil {
		return err
	}
	s.proc = p
	return p.WaitReady(20*time.Second, func() error {
		c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
		if err != nil {
			return fmt.Errorf("not listening on %s: %w", s.Addr, err)
		}
		return c.Close()
	})
}

// Pid is the gateway's process id.
func (s *Server) Pid() int { return s.proc.Pid() }

// Stop kills the gateway and waits for it.
func (s *Server) Stop() { s.proc.Kill() }
