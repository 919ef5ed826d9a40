package deploy_test

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/scale-dev/scale/internal/freeport"
	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/pglocal"
	"github.com/scale-dev/scale/internal/testenv"
	"github.com/scale-dev/scale/internal/versitygw"
)

// TestComposeHealthChecksNatively runs each health check of docker-compose.yml
// against the same program started natively (no Docker engine here): Scale's
// services with their compose environment and their own probe, pg_isready
// against Postgres, and the NATS and versitygw health URLs (the same requests
// wget makes in their images) against nats-server with monitoring and
// versitygw started with the compose command's arguments.
func TestComposeHealthChecksNatively(t *testing.T) {
	project := loadCompose(t)
	bins := binaries(t)
	pgURL := testenv.PostgresURL(t)
	natsURL := testenv.NATS(t).ClientURL()

	// Scale's services: started with their compose environment (addresses
	// pointed at the real parts), then their health check command is run.
	for _, name := range []string{"extract", "similarity", "api"} {
		svc := project.Services[name]
		binary, _ := scaleBinary(svc.Image)
		opsPort, err := freeport.Get()
		if err != nil {
			t.Fatal(err)
		}
		opsAddr := fmt.Sprintf("127.0.0.1:%d", opsPort)
		// The addresses of the containers' network, pointed at this machine's parts.
		here := map[string]string{"SCALE_OPS_ADDR": opsAddr, "SCALE_NATS_URL": natsURL, "SCALE_POSTGRES_URL": pgURL,
			"SCALE_POSTGRES_MIGRATE": "true", "SCALE_API_ADDR": "127.0.0.1:0", "SCALE_STORAGE_ENDPOINT": ""}
		var env []string
		for k, v := range svc.Environment {
			if h, ok := here[k]; ok {
				env = append(env, k+"="+h)
			} else if v != nil {
				env = append(env, k+"="+*v)
			}
		}
		proc, err := launcher.Start(launcher.Spec{Name: name, Binary: bins[binary], Env: env, LogPath: filepath.Join(t.TempDir(), name+".log")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(proc.Kill)
		test := svc.HealthCheck.Test // ["CMD", "/usr/local/bin/NAME", "probe"]
		if len(test) < 3 || test[0] != "CMD" || filepath.Base(test[1]) != binary {
			t.Fatalf("%s: health check %v", name, test)
		}
		testenv.Poll(t, name+"'s health check", 60*time.Second, func() (bool, string) {
			cmd := exec.Command(bins[binary], test[2:]...)
			cmd.Env = append(os.Environ(), "SCALE_OPS_ADDR="+opsAddr)
			out, err := cmd.CombinedOutput()
			return err == nil, fmt.Sprintf("%v: %s\n%s", err, out, proc.Log())
		})
	}

	// Postgres: the CMD-SHELL line, with the server's address in PGHOST/PGPORT.
	pgBin, err := pglocal.BinDir()
	if err != nil {
		testenv.Missing(t, "PostgreSQL binaries: %v", err)
	}
	u, err := url.Parse(pgURL)
	if err != nil {
		t.Fatal(err)
	}
	pgTest := project.Services["postgres"].HealthCheck.Test
	if pgTest[0] != "CMD-SHELL" {
		t.Fatalf("postgres health check %v", pgTest)
	}
	cmd := exec.Command("sh", "-c", pgTest[1])
	cmd.Env = append(os.Environ(), "PATH="+pgBin+":"+os.Getenv("PATH"), "PGHOST="+u.Hostname(), "PGPORT="+u.Port(),
		"POSTGRES_USER="+u.User.Username(), "POSTGRES_DB="+strings.TrimPrefix(u.Path, "/"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("postgres health check %q: %v\n%s", pgTest[1], err, out)
	}

	// NATS: -js -m 8222, then the health URL.
	nats := project.Services["nats"]
	if !strings.Contains(strings.Join(nats.Command, " "), "-js") || !strings.Contains(strings.Join(nats.Command, " "), "-m 8222") {
		t.Errorf("nats command %v: want JetStream and monitoring on 8222", nats.Command)
	}
	ns := serveNATS(t, &server.Options{Host: "127.0.0.1", Port: -1, HTTPHost: "127.0.0.1", HTTPPort: -1, JetStream: true, StoreDir: t.TempDir()})
	checkHealthURL(t, "nats", nats.HealthCheck, "127.0.0.1:8222", ns.MonitorAddr().String())

	// versitygw: the compose command's arguments on a free port.
	gw, err := versitygw.Path()
	if err != nil {
		testenv.Missing(t, "versitygw: %v", err)
	}
	s3 := project.Services["s3"]
	port, err := freeport.Get()
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(s3.Command, "\x00")
	args = strings.ReplaceAll(args, ":7070", fmt.Sprintf("127.0.0.1:%d", port))
	args = strings.ReplaceAll(args, "/data", t.TempDir())
	var env []string
	for k, v := range s3.Environment {
		env = append(env, k+"="+*v)
	}
	gwProc, err := launcher.Start(launcher.Spec{Name: "versitygw", Binary: gw, Args: strings.Split(args, "\x00"), Env: env,
		LogPath: filepath.Join(t.TempDir(), "versitygw.log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gwProc.Kill)
	checkHealthURL(t, "s3", s3.HealthCheck, "127.0.0.1:7070", fmt.Sprintf("127.0.0.1:%d", port))
}

// checkHealthURL does the GET of a `wget -qO- URL` health check against the
// natively started server (its address in place of the container's).
func checkHealthURL(t *testing.T, name string, hc *types.HealthCheckConfig, containerAddr, addr string) {
	t.Helper()
	if hc == nil || len(hc.Test) != 4 || hc.Test[0] != "CMD" || hc.Test[1] != "wget" || hc.Test[2] != "-qO-" {
		t.Fatalf("%s: health check %v, want [CMD wget -qO- URL]", name, hc)
	}
	target := strings.Replace(hc.Test[3], containerAddr, addr, 1)
	testenv.Poll(t, name+"'s health URL", 30*time.Second, func() (bool, string) {
		resp, err := http.Get(target)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("%s: %s", target, resp.Status)
	})
}
