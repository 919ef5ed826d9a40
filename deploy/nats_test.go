package deploy_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scale-dev/scale/internal/natsembed"
	"github.com/scale-dev/scale/internal/transport"
	"github.com/scale-dev/scale/pkg/events"
)

// TestNATSPermissions runs the services' own connection code as each user of
// deploy/nats/authorization.conf against a real server configured with it:
// each can provision the streams and do its work; none but the chaos runner
// may publish chaos.*; none may delete or purge a stream.
func TestNATSPermissions(t *testing.T) {
	users := []string{"ingest", "extract", "similarity", "migrate", "chaos-runner"}
	for _, u := range users {
		t.Setenv("SCALE_NATS_"+strings.ToUpper(strings.ReplaceAll(u, "-", "_"))+"_PASSWORD", "pw-"+u)
	}
	auth, err := os.ReadFile("nats/authorization.conf")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir() // an include is relative to the including file
	if err := os.WriteFile(filepath.Join(dir, "authorization.conf"), auth, 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte("listen: \"127.0.0.1:-1\"\njetstream {store_dir: \""+t.TempDir()+"\"}\ninclude \"authorization.conf\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("authorization.conf: %v", err)
	}
	srv := serveNATS(t, opts)
	ctx := context.Background()
	type client struct {
		conn *transport.Conn
		errs *asyncErrors
	}
	connect := func(user string) client {
		t.Helper()
		errs := &asyncErrors{}
		url := strings.Replace(srv.ClientURL(), "nats://", "nats://"+user+":pw-"+user+"@", 1)
		conn, err := transport.Connect(url, user, slog.New(slog.DiscardHandler), nats.ErrorHandler(errs.add))
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		t.Cleanup(conn.NC.Close)
		// Every service provisions the streams it uses when it starts.
		if err := transport.Provision(ctx, conn.JS, slog.New(slog.DiscardHandler), events.PipelineStreams(events.StreamOptions{Replicas: 1, DuplicateWindow: time.Minute})...); err != nil {
			t.Fatalf("%s provisioning the streams: %v", user, err)
		}
		return client{conn, errs}
	}
	clients := map[string]client{}
	for _, u := range users {
		clients[u] = connect(u)
	}

	// The work each does.
	if _, err := clients["ingest"].conn.JS.Publish(ctx, events.SubjectDiscovered, []byte(`{}`)); err != nil {
		t.Errorf("ingest publishing %s: %v", events.SubjectDiscovered, err)
	}
	if _, err := clients["migrate"].conn.JS.CreateOrUpdateConsumer(ctx, events.StreamDiscovered, events.ExtractConsumer(time.Minute, 64)); err != nil {
		t.Errorf("migrate creating the extract consumer: %v", err)
	}
	fetchAndAck(t, clients["extract"].conn.JS, events.StreamDiscovered, events.ExtractConsumer(time.Minute, 64), "extract")
	if _, err := clients["extract"].conn.JS.Publish(ctx, events.SubjectExtracted, []byte(`{}`)); err != nil {
		t.Errorf("extract publishing %s: %v", events.SubjectExtracted, err)
	}
	fetchAndAck(t, clients["similarity"].conn.JS, events.StreamOutcomes, events.SimilarityConsumer(16, time.Minute), "similarity")
	if err := transport.Provision(ctx, clients["chaos-runner"].conn.JS, slog.New(slog.DiscardHandler), events.ChaosStream(events.StreamOptions{Replicas: 1, DuplicateWindow: time.Minute})); err != nil {
		t.Errorf("chaos-runner provisioning its stream: %v", err)
	}
	if _, err := clients["chaos-runner"].conn.JS.Publish(ctx, "chaos.started", []byte(`{}`)); err != nil {
		t.Errorf("chaos-runner publishing chaos.started: %v", err)
	}

	// What none of them may do.
	for _, u := range users {
		c := clients[u]
		if u != "chaos-runner" {
			if err := c.conn.NC.Publish("chaos.started", []byte(`{}`)); err == nil {
				c.conn.NC.Flush() //nolint:errcheck // the violation arrives asynchronously
			}
			if !c.errs.wait("chaos.started") {
				t.Errorf("%s may publish chaos.started", u)
			}
		}
		// A denied API request gets no answer: the attempt times out.
		dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err := c.conn.JS.DeleteStream(dctx, events.StreamOutcomes)
		cancel()
		if err == nil {
			t.Fatalf("%s deleted the stream %s", u, events.StreamOutcomes)
		}
		s, err := c.conn.JS.Stream(ctx, events.StreamOutcomes)
		if err != nil {
			t.Fatal(err)
		}
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err = s.Purge(pctx)
		cancel()
		if err == nil {
			t.Fatalf("%s purged the stream %s", u, events.StreamOutcomes)
		}
	}
	info, err := clients["ingest"].conn.JS.Stream(ctx, events.StreamOutcomes)
	if err != nil || info.CachedInfo().State.Msgs == 0 {
		t.Errorf("the outcomes stream after the attempts: %v", err)
	}
}

// fetchAndAck creates (or finds) a consumer and takes and acknowledges one message, as the service does.
func fetchAndAck(t *testing.T, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig, user string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		t.Fatalf("%s creating its consumer: %v", user, err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(3*time.Second))
	if err != nil {
		t.Fatalf("%s fetching: %v", user, err)
	}
	n := 0
	for msg := range batch.Messages() {
		if err := msg.DoubleAck(ctx); err != nil {
			t.Errorf("%s acknowledging: %v", user, err)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("%s fetched %d messages, want 1 (%v)", user, n, batch.Error())
	}
}

// asyncErrors collects a connection's asynchronous errors (permission violations).
type asyncErrors struct {
	mu   sync.Mutex
	errs []error
}

func (a *asyncErrors) add(_ *nats.Conn, _ *nats.Subscription, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.errs = append(a.errs, err)
}

// wait reports whether a permissions violation naming subject arrived within 2 s.
func (a *asyncErrors) wait(subject string) bool {
	for range 40 {
		a.mu.Lock()
		for _, err := range a.errs {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
				a.mu.Unlock()
				return true
			}
		}
		a.mu.Unlock()
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// serveNATS runs a nats-server with opts for the test.
func serveNATS(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	srv, err := natsembed.Serve(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}
