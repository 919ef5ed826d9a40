// Package testenv is the harness every test uses for real parts: a throwaway
// PostgreSQL cluster started from the installed binaries (or the server at
// DATABASE_URL), embedded NATS JetStream servers, and a real S3-compatible server
// (versitygw with its posix backend).
//
// A package that uses Postgres runs its tests through Main:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/natsembed"
	"github.com/scale-dev/scale/internal/pglocal"
	"github.com/scale-dev/scale/internal/store"
)

var (
	mainUsed  bool
	pgOnce    sync.Once
	pgCluster *pglocal.Cluster
	pgAdmin   string // URL of a database to run CREATE DATABASE from
	pgErr     error
)

// Main runs the tests and then stops the throwaway Postgres cluster, if one was
// started.
func Main(m *testing.M) int {
	mainUsed = true
	code := m.Run()
	if pgCluster != nil {
		if err := pgCluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "testenv: stopping Postgres:", err)
		}
		os.RemoveAll(pgCluster.Dir)
	}
	return code
}

// Missing stops a test that lacks a real part it needs (what says so, and
// how to install it): a failure in CI (CI set), where every part must be
// there, and a skip elsewhere.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

func startPostgres() {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		pgAdmin = u
		return
	}
	dir, err := os.MkdirTemp("", "scale-pg-")
	if err != nil {
		pgErr = err
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pgCluster, pgErr = pglocal.Start(ctx, dir, pglocal.Options{})
	if pgErr != nil {
		os.RemoveAll(dir)
		return
	}
	pgAdmin = pgCluster.URL("postgres")
}

// PostgresURL returns the URL of a new, empty database, dropped when the test ends.
func PostgresURL(t testing.TB) string {
	t.Helper()
	if !mainUsed {
		t.Fatal("testenv: the package's TestMain must call testenv.Main")
	}
	pgOnce.Do(startPostgres)
	if pgErr != nil {
		t.Fatalf("testenv: starting Postgres: %v", pgErr)
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, pgAdmin)
	if err != nil {
		t.Fatalf("testenv: connecting to Postgres: %v", err)
	}
	defer admin.Close(ctx)
	name := "scale_test_" + randomHex(6)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testenv: creating database: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, pgAdmin)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") //nolint:errcheck // best effort
	})
	u, err := url.Parse(pgAdmin)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// Store opens a migrated store on a new database.
func Store(t testing.TB) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), PostgresURL(t), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// NATS starts a single embedded JetStream server for the test.
func NATS(t testing.TB) *server.Server {
	t.Helper()
	s, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// NATSCluster starts n routed JetStream servers for the test.
func NATSCluster(t testing.TB, n int) *natsembed.Cluster {
	t.Helper()
	base := t.TempDir()
	c, err := natsembed.StartCluster(n, func(i int) string { return fmt.Sprintf("%s/n%d", base, i) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	return c
}

// JetStream connects to url and returns the JetStream context.
func JetStream(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) //nolint:errcheck // crypto/rand.Read does not fail
	return hex.EncodeToString(b)
}

// SharedCorpus returns the shared MIDI corpus folder. Outside CI a test skips
// when it is absent; in CI, where shared/ is always beside the checkout, that
// is a failure.
func SharedCorpus(t testing.TB) string {
	t.Helper()
	dir, err := corpus.SharedDir()
	if err != nil {
		Missing(t, "shared corpus: %v", err)
	}
	return dir
}

// MetricValue sums the values of a counter or gauge family in reg, or the
// observation counts of a histogram (0 when it has no series yet),
// optionally only the series whose labels include every name=value pair of
// labels.
func MetricValue(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
				}
				if !found {
					continue series
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// Poll calls cond every 10 ms until it reports done and returns its last
// state, or fails the test with that state once timeout has passed.
func Poll[S any](t testing.TB, what string, timeout time.Duration, cond func() (done bool, state S)) S {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done, state := cond()
		if done {
			return state
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %+v", timeout, what, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Root skips a test that needs root (namespaces, cgroups, nftables) when it
// runs as another user; in CI, where the tests run as root, it fails instead.
func Root(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	Missing(t, "this test needs root (CI runs as root)")
}
