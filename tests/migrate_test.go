package tests

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/freeport"
	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/testenv"
	"github.com/scale-dev/scale/internal/transport"
	"github.com/scale-dev/scale/pkg/events"
)

// The Helm chart's order of things: the services start with
// SCALE_POSTGRES_MIGRATE=false and wait, unready; the release's migration Job
// (`extract migrate`) applies the schema, provisions the streams and creates
// the workers' consumer with the release's MaxAckPending, and exits 0; then the
// services become ready.
func TestMigrationJobBeforeTheServices(t *testing.T) {
	ctx := context.Background()
	pgURL := testenv.PostgresURL(t)
	natsURL := testenv.NATS(t).ClientURL()
	run := func(name string, args []string, env ...string) *launcher.Process {
		t.Helper()
		return startProcess(t, launcher.Spec{
			Name: name, Binary: bins["extract"], Args: args,
			Env: append([]string{"SCALE_NATS_URL=" + natsURL, "SCALE_POSTGRES_URL=" + pgURL, "SCALE_POSTGRES_WAIT=60s"}, env...),
		})
	}
	port, err := freeport.Get()
	if err != nil {
		t.Fatal(err)
	}
	opsAddr := fmt.Sprintf("127.0.0.1:%d", port)
	worker := run("extract", nil, "SCALE_POSTGRES_MIGRATE=false", "SCALE_OPS_ADDR="+opsAddr)
	testenv.Poll(t, "the worker's ops endpoint", 20*time.Second, func() (bool, error) {
		err := config.Probe(opsAddr, "/healthz", io.Discard)
		return err == nil, err
	})
	time.Sleep(time.Second) // it had the time to migrate, if it wrongly did
	if err := config.Probe(opsAddr, "/readyz", io.Discard); err == nil {
		t.Fatal("the worker is ready before the migrations ran")
	}
	db, err := store.Connect(ctx, pgURL, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.WaitMigrated(ctx, 0); err == nil {
		t.Fatal("the worker applied the migrations with SCALE_POSTGRES_MIGRATE=false")
	}

	job := run("migrate", []string{"migrate"}, "SCALE_OPS_ADDR=127.0.0.1:0", "SCALE_EXTRACT_MAX_ACK_PENDING=96")
	select {
	case <-job.Done():
		if err := job.Wait(); err != nil {
			t.Fatalf("extract migrate: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("extract migrate did not exit")
	}
	if err := db.WaitMigrated(ctx, 0); err != nil {
		t.Fatalf("after the job: %v", err)
	}
	conn, err := transport.Connect(natsURL, "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.NC.Close()
	cons, err := conn.JS.Consumer(ctx, events.StreamDiscovered, events.ConsumerExtract)
	if err != nil {
		t.Fatalf("the job left no %s consumer: %v", events.ConsumerExtract, err)
	}
	if got := cons.CachedInfo().Config.MaxAckPending; got != 96 {
		t.Errorf("consumer MaxAckPending = %d, want the job's 96", got)
	}
	testenv.Poll(t, "the worker ready after the job", 30*time.Second, func() (bool, error) {
		err := config.Probe(opsAddr, "/readyz", io.Discard)
		return err == nil, err
	})
	select {
	case <-worker.Done():
		t.Fatalf("the worker exited: %v", worker.Wait())
	default:
	}
}
