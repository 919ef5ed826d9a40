package wiring_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/freeport"
	"github.com/scale-dev/scale/internal/natsembed"
	"github.com/scale-dev/scale/internal/testenv"
	"github.com/scale-dev/scale/internal/wiring"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// get returns the status and body of GET http://addr/path (0 when nothing answers).
func get(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body))
}

// waitFor polls cond for up to 30 s.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	testenv.Poll(t, what, 30*time.Second, cond)
}

func opsAddr(t *testing.T) string {
	t.Helper()
	port, err := freeport.Get()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// TestLifecycle walks a service through its phases: /healthz answers while
// NATS is still away and /readyz says "starting"; once NATS is up the
// service runs and is ready; on cancel /readyz says "draining" while the
// body finishes, and the ops endpoint answers until Run returns.
func TestLifecycle(t *testing.T) {
	natsPort, err := freeport.Get()
	if err != nil {
		t.Fatal(err)
	}
	addr := opsAddr(t)
	svc := wiring.Service{
		Name: "test", Ops: config.Ops{Addr: addr, DrainTimeout: 10 * time.Second},
		NATS:     &config.NATS{URL: fmt.Sprintf("nats://127.0.0.1:%d", natsPort), Replicas: 1, DuplicateWindow: time.Minute},
		Postgres: &config.Postgres{URL: testenv.PostgresURL(t), Wait: 10 * time.Second, Migrate: true},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bodyStarted, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- wiring.Run(ctx, svc, quiet, func(ctx context.Context, in *wiring.Infra) error {
			close(bodyStarted)
			<-ctx.Done()
			<-release // the work in hand
			return nil
		})
	}()

	waitFor(t, "/healthz while NATS is away", func() (bool, string) {
		code, body := get(addr, "/healthz")
		return code == 200, body
	})
	if code, body := get(addr, "/readyz"); code != 503 || body != "starting" {
		t.Errorf("/readyz while connecting: %d %q, want 503 starting", code, body)
	}
	srv, err := natsembed.Start(natsembed.Options{Port: natsPort, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	<-bodyStarted
	waitFor(t, "/readyz once connected", func() (bool, string) {
		code, body := get(addr, "/readyz")
		return code == 200 && body == "ready", body
	})

	cancel()
	waitFor(t, "/readyz while draining", func() (bool, string) {
		code, body := get(addr, "/readyz")
		return code == 503 && body == "draining", body
	})
	if code, _ := get(addr, "/healthz"); code != 200 {
		t.Errorf("/healthz while draining: %d, want 200", code)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if code, _ := get(addr, "/healthz"); code != 0 {
		t.Errorf("the ops endpoint still answers (%d) after Run returned", code)
	}
}

// TestDrainIsBounded: a body that does not finish its work in hand is given
// the drain bound, and Run returns after it with an error that says so.
func TestDrainIsBounded(t *testing.T) {
	svc := wiring.Service{Name: "test", Ops: config.Ops{Addr: opsAddr(t), DrainTimeout: 300 * time.Millisecond}}
	ctx, cancel := context.WithCancel(context.Background())
	stuck := make(chan struct{})
	defer close(stuck)
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- wiring.Run(ctx, svc, quiet, func(context.Context, *wiring.Infra) error {
			close(started)
			<-stuck
			return nil
		})
	}()
	<-started
	cancel()
	begin := time.Now()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "drain bound") {
			t.Errorf("Run: %v, want the drain bound's error", err)
		}
		if d := time.Since(begin); d < 250*time.Millisecond || d > 5*time.Second {
			t.Errorf("Run returned %v after cancel, want about the 300 ms bound", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10 s of cancel with a 300 ms drain bound")
	}
}

// TestTakenAddressStopsAtOnce: a taken ops address fails the service before
// it connects to anything or runs its body.
func TestTakenAddressStopsAtOnce(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	svc := wiring.Service{Name: "test", Ops: config.Ops{Addr: taken.Addr().String(), DrainTimeout: time.Second},
		NATS: &config.NATS{URL: "nats://127.0.0.1:1"}}
	ran := false
	start := time.Now()
	err = wiring.Run(context.Background(), svc, quiet, func(context.Context, *wiring.Infra) error { ran = true; return nil })
	if err == nil || ran || time.Since(start) > 2*time.Second {
		t.Errorf("Run on a taken address: %v after %v (body ran: %v), want an error at once", err, time.Since(start), ran)
	}
}
