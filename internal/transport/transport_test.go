package transport_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scale-dev/scale/internal/testenv"
	"github.com/scale-dev/scale/internal/transport"
	"github.com/scale-dev/scale/pkg/events"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func provision(t *testing.T, js jetstream.JetStream, replicas int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 2 { // idempotent
		if err := transport.Provision(ctx, js, quiet, events.PipelineStreams(events.StreamOptions{Replicas: replicas, DuplicateWindow: time.Minute})...); err != nil {
			t.Fatal(err)
		}
	}
}

func TestProvisionAndDeduplicate(t *testing.T) {
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv.ClientURL())
	ctx := context.Background()
	provision(t, js, 1)
	ev := events.Discovered{Source: "file:///corpus/a.mid", Size: 10, Name: "a"}
	if err := transport.PublishBatch(ctx, js, events.SubjectDiscovered, []events.Discovered{ev, ev, ev}); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, events.StreamDiscovered)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages after 3 publications with one Msg-Id, want 1", info.State.Msgs)
	}
	if info.Config.Retention.String() != "WorkQueue" || info.Config.Storage.String() != "File" {
		t.Errorf("stream config %v/%v, want WorkQueue/File", info.Config.Retention, info.Config.Storage)
	}
	// The pipeline does not provision the chaos runner's stream.
	if _, err := js.Stream(ctx, events.StreamChaos); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream %s after pipeline provisioning: %v, want not found", events.StreamChaos, err)
	}
}

func TestProvisionReplicatedOnCluster(t *testing.T) {
	c := testenv.NATSCluster(t, 3)
	_, js := testenv.JetStream(t, c.URL())
	provision(t, js, 3)
	ctx := context.Background()
	for _, cfg := range events.PipelineStreams(events.StreamOptions{}) {
		st, err := js.Stream(ctx, cfg.Name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("%s: replicas %d, cluster %+v; want 3 copies", cfg.Name, info.Config.Replicas, info.Cluster)
		}
	}
}

// consumer is the test's consumer of midi.discovered.
func consumer(reg prometheus.Registerer) transport.Consumer {
	cfg := events.ExtractConsumer(time.Minute, 1024)
	return transport.Consumer{Stream: events.StreamDiscovered, Config: cfg, Batch: 8, Log: quiet, Metrics: reg}
}

func discovered(name string) events.Discovered {
	return events.Discovered{Source: "file:///corpus/" + name + ".mid", Size: 1, Name: name}
}

// consumeUntil runs Consume in the background until stop says so (polled
// every 10 ms, at most 30 s), then cancels it and waits for it to return.
func consumeUntil(t *testing.T, js jetstream.JetStream, c transport.Consumer, h transport.Handler[events.Discovered], stop func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- transport.Consume(ctx, js, c, h) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	testenv.Poll(t, "the consumer's goal", 30*time.Second, func() (bool, struct{}) { return stop(), struct{}{} })
}

func TestPoisonMessagesAreTerminatedOnce(t *testing.T) {
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv.ClientURL())
	provision(t, js, 1)
	ctx := context.Background()
	if _, err := js.Publish(ctx, events.SubjectDiscovered, []byte(`{"v":99}`)); err != nil {
		t.Fatal(err)
	}
	if err := transport.PublishBatch(ctx, js, events.SubjectDiscovered, []events.Discovered{discovered("good")}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	var mu sync.Mutex
	var got []string
	consumeUntil(t, js, consumer(reg), func(_ context.Context, batch []transport.Delivery[events.Discovered]) {
		mu.Lock()
		defer mu.Unlock()
		for _, d := range batch {
			got = append(got, d.Event.Name)
			_ = d.Msg.Ack()
		}
	}, func() bool {
		settled, _, err := transport.Settled(ctx, js, events.StreamDiscovered, events.ConsumerExtract)
		return err == nil && settled
	})
	if len(got) != 1 || got[0] != "good" {
		t.Errorf("handler got %v, want only the decodable event", got)
	}
	if n := testenv.MetricValue(t, reg, "scale_consumer_poison_total"); n != 1 {
		t.Errorf("poison counter %v, want 1", n)
	}
}

func TestHandlerPanicPutsTheBatchBack(t *testing.T) {
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv.ClientURL())
	provision(t, js, 1)
	ctx := context.Background()
	if err := transport.PublishBatch(ctx, js, events.SubjectDiscovered, []events.Discovered{discovered("a"), discovered("b")}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	var calls, acked atomic.Int32
	var maxAttempts atomic.Int32
	consumeUntil(t, js, consumer(reg), func(_ context.Context, batch []transport.Delivery[events.Discovered]) {
		if calls.Add(1) == 1 {
			_ = batch[0].Msg.Ack() // settled before the panic: must not come back
			panic("boom")
		}
		for _, d := range batch {
			maxAttempts.Store(max(maxAttempts.Load(), int32(d.Attempts)))
			if d.Msg.Ack() == nil {
				acked.Add(1)
			}
		}
	}, func() bool { return acked.Load() >= 1 })
	if n := testenv.MetricValue(t, reg, "scale_consumer_panics_total"); n != 1 {
		t.Errorf("panics counter %v, want 1", n)
	}
	if acked.Load() != 1 || maxAttempts.Load() != 2 {
		t.Errorf("after the panic: %d messages redelivered (attempt %d), want the 1 unsettled one on its 2nd delivery", acked.Load(), maxAttempts.Load())
	}
}

func TestConsumeRecreatesADeletedConsumer(t *testing.T) {
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv.ClientURL())
	provision(t, js, 1)
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	var handled atomic.Int32
	deleted, republished := false, false
	consumeUntil(t, js, consumer(reg), func(_ context.Context, batch []transport.Delivery[events.Discovered]) {
		for _, d := range batch {
			_ = d.Msg.Ack()
			handled.Add(1)
		}
	}, func() bool {
		switch {
		case !deleted:
			if _, err := js.Consumer(ctx, events.StreamDiscovered, events.ConsumerExtract); err != nil {
				return false // not created yet
			}
			if err := js.DeleteConsumer(ctx, events.StreamDiscovered, events.ConsumerExtract); err != nil {
				t.Error(err)
				return true
			}
			deleted = true
		case !republished:
			if testenv.MetricValue(t, reg, "scale_consumer_fetch_errors_total") < 1 {
				return false // the loop has not noticed yet
			}
			if err := transport.PublishBatch(ctx, js, events.SubjectDiscovered, []events.Discovered{discovered("after")}); err != nil {
				t.Error(err)
				return true
			}
			republished = true
		}
		return handled.Load() == 1
	})
}

func TestConsumeStopsPromptlyWhileNATSIsAway(t *testing.T) {
	srv := testenv.NATS(t)
	conn, err := transport.Connect(srv.ClientURL(), "test", quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.NC.Close)
	provision(t, conn.JS, 1)
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- transport.Consume(ctx, conn.JS, consumer(reg), func(context.Context, []transport.Delivery[events.Discovered]) {})
	}()
	testenv.Poll(t, "the consumer to exist", 10*time.Second, func() (bool, error) {
		_, err := conn.JS.Consumer(ctx, events.StreamDiscovered, events.ConsumerExtract)
		return err == nil, err
	})
	srv.Shutdown()
	srv.WaitForShutdown()
	// The client has seen the server go; the loop is now fetching from a
	// connection that is away, backing off, or trying to create the
	// consumer again (each attempt waits up to 5 s for an answer).
	testenv.Poll(t, "the client to see NATS gone", 30*time.Second, func() (bool, string) {
		return !conn.NC.IsConnected(), conn.NC.Status().String()
	})
	time.Sleep(time.Second)
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("Consume took %v to stop after cancel", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Consume did not return within 10 s of cancel while NATS was away")
	}
}

func TestCloseWaitsForTheDrain(t *testing.T) {
	srv := testenv.NATS(t)
	conn, err := transport.Connect(srv.ClientURL(), "test", quiet)
	if err != nil {
		t.Fatal(err)
	}
	provision(t, conn.JS, 1)
	ctx := context.Background()
	if err := transport.PublishBatch(ctx, conn.JS, events.SubjectDiscovered, []events.Discovered{discovered("a")}); err != nil {
		t.Fatal(err)
	}
	cons, err := conn.JS.CreateOrUpdateConsumer(ctx, events.StreamDiscovered, events.ExtractConsumer(time.Minute, 1024))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next()
	if err != nil {
		t.Fatal(err)
	}
	if err := msg.Ack(); err != nil { // sent, not confirmed
		t.Fatal(err)
	}
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if !conn.NC.IsClosed() {
		t.Error("Close returned before the connection was closed")
	}
	_, js := testenv.JetStream(t, srv.ClientURL())
	settled, info, err := transport.Settled(ctx, js, events.StreamDiscovered, events.ConsumerExtract)
	if err != nil || !settled {
		t.Errorf("after Close: settled %v (%+v, %v); the ack sent before Close must have reached the server", settled, info, err)
	}
}

// TestLostAcknowledgementFailsThePublication: a publication whose
// acknowledgement never comes (here a subscriber takes the message and
// never answers, as a stream leader lost mid-election would) fails after
// PublishAckWait instead of holding the publisher forever.
func TestLostAcknowledgementFailsThePublication(t *testing.T) {
	srv := testenv.NATS(t)
	conn, err := transport.Connect(srv.ClientURL(), "test", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.NC.Close()
	// No stream holds the subject; this subscriber swallows what is sent.
	sub, err := conn.NC.SubscribeSync(events.SubjectDiscovered)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // test teardown
	if err := conn.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*transport.PublishAckWait)
	defer cancel()
	start := time.Now()
	err = transport.PublishBatch(ctx, conn.JS, events.SubjectDiscovered, []events.Discovered{discovered("a")})
	if !errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
		t.Errorf("publication with no acknowledgement: %v after %s, want ErrAsyncPublishTimeout", err, time.Since(start).Round(time.Millisecond))
	}
	if took := time.Since(start); took > 2*transport.PublishAckWait {
		t.Errorf("the publication failed after %s", took)
	}
}
