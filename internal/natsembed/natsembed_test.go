package natsembed_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scale-dev/scale/internal/natsembed"
	"github.com/scale-dev/scale/internal/testenv"
)

// TestClusterNodeRestartsOnItsPortAndStore: a node stopped and restarted
// comes back on the same client port with its store, and catches up: the
// stream it replicates is whole on it again.
func TestClusterNodeRestartsOnItsPortAndStore(t *testing.T) {
	base := t.TempDir()
	c, err := natsembed.StartCluster(3, func(i int) string { return fmt.Sprintf("%s/n%d", base, i) })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	// A publish that gets no answer while the stream elects a leader is
	// sent again, as a client must; its message id makes the copy harmless.
	sent := 0
	publish := func(n int) {
		for range n {
			sent++
			for {
				attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := js.Publish(attempt, "s", []byte("x"), jetstream.WithMsgID(fmt.Sprint(sent)))
				cancel()
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("message %d: %v", sent, err)
				}
				t.Logf("message %d: %v; sending it again", sent, err)
			}
		}
	}
	publish(10)
	url0 := c.ClientURL(0)
	c.Stop(0)
	publish(10) // two of three nodes still make a quorum
	if err := c.Restart(0); err != nil {
		t.Fatal(err)
	}
	if got := c.Servers[0].ClientURL(); got != url0 {
		t.Errorf("node 0 came back on %s, want its old %s", got, url0)
	}
	// Ask node 0 alone until its copy of the stream is whole.
	direct, err := nats.Connect(url0)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	testenv.Poll(t, "node 0 to hold all 20 messages", 30*time.Second, func() (bool, string) {
		jsz, err := c.Servers[0].Jsz(nil)
		if err != nil {
			return false, err.Error()
		}
		return jsz.Messages == 20, fmt.Sprintf("%d messages", jsz.Messages)
	})
}
