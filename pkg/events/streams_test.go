package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/scale-dev/scale/internal/testenv"
	"github.com/scale-dev/scale/pkg/events"
)

func TestProvisionAndDeduplicate(t *testing.T) {
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv.ClientURL())
	ctx := context.Background()
	opts := events.StreamOptions{Replicas: 1, DuplicateWindow: time.Minute}
	for range 2 {
		if err := events.Provision(ctx, js, opts); err != nil {
			t.Fatalf("provisioning (idempotent): %v", err)
		}
	}
	ev := events.Discovered{Source: "file:///corpus/a.mid", Size: 10, Name: "a"}
	if err := events.PublishBatch(ctx, js, events.SubjectDiscovered, []events.Discovered{ev, ev, ev}); err != nil {
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
}

func TestProvisionReplicatedOnCluster(t *testing.T) {
	c := testenv.NATSCluster(t, 3)
	_, js := testenv.JetStream(t, c.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := events.Provision(ctx, js, events.StreamOptions{Replicas: 3, DuplicateWindow: time.Minute}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{events.StreamDiscovered, events.StreamOutcomes, events.StreamChaos} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("%s: replicas %d, cluster %+v; want 3 copies", name, info.Config.Replicas, info.Cluster)
		}
	}
}
