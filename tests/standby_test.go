package tests

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/testenv"
	"github.com/scale-dev/scale/internal/transport"
	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/extract"
)

// writer names the application holding the similarity writer lease ("" when
// nobody holds it): each similarity process connects with its own
// application_name.
func (p *pipeline) writer() string {
	p.t.Helper()
	key := int64(store.SimilarityWriter)
	var name string
	err := p.store.Pool.QueryRow(context.Background(), `SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2`, key>>32, key&0xFFFFFFFF).Scan(&name)
	if errors.Is(err, pgx.ErrNoRows) {
		return ""
	}
	if err != nil {
		p.t.Fatal(err)
	}
	return name
}

// startSimilarity starts a similarity process that names itself to Postgres.
func (p *pipeline) startSimilarity(name string) *launcher.Process {
	p.t.Helper()
	u, err := url.Parse(p.pgURL)
	if err != nil {
		p.t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", name)
	u.RawQuery = q.Encode()
	// Small batches and a short ack wait: the stream lasts long enough to be
	// cut in the middle, and the batch the killed writer held comes back soon.
	return p.start(name, "similarity", "SCALE_POSTGRES_URL="+u.String(), "SCALE_OPS_LOG_LEVEL=info",
		"SCALE_SIMILARITY_BATCH=8", "SCALE_SIMILARITY_ACK_WAIT=2s")
}

// TestSimilarityStandbyTakesOver runs two similarity processes: one writes,
// the other stands by. The writer is SIGKILLed while songs are still
// arriving; the standby takes over within seconds, and in the end every
// stored list equals the brute force.
func TestSimilarityStandbyTakesOver(t *testing.T) {
	root := testenv.SharedCorpus(t)
	p := newPipeline(t, testenv.NATS(t).ClientURL())
	files := p.ingest(root).Published

	a := p.startSimilarity("similarity-a")
	testenv.Poll(t, "similarity-a to take the writer lease", time.Minute, func() (bool, string) {
		w := p.writer()
		return w == "similarity-a", "writer " + w
	})
	b := p.startSimilarity("similarity-b")
	testenv.Poll(t, "similarity-b to stand by", time.Minute, func() (bool, string) {
		return strings.Contains(b.Log(), "standing by"), b.Log()
	})

	// One slow-ish extract loop, so that songs keep arriving for a while.
	w := extract.New(extract.Deps{JS: p.js, Store: p.store, Objects: p.objects, Log: p.log, Metrics: prometheus.NewRegistry()},
		extract.Options{Concurrency: 1, FetchBatch: 4})
	p.background("extract", w.Run)
	ctx := context.Background()
	testenv.Poll(t, "similarity-a to apply some songs", time.Minute, func() (bool, *jetstream.ConsumerInfo) {
		_, info, err := transport.Settled(ctx, p.js, events.StreamOutcomes, events.ConsumerSimilarity)
		if err != nil {
			t.Fatal(err)
		}
		return info != nil && info.AckFloor.Stream >= 40, info
	})
	a.Kill()
	killed := time.Now()
	if acc := p.account(); acc.Pending == 0 {
		t.Fatalf("extraction had finished when the writer was killed (%+v): the kill cut no stream", acc)
	}
	testenv.Poll(t, "similarity-b to take over", 30*time.Second, func() (bool, string) {
		w := p.writer()
		return w == "similarity-b", "writer " + w
	})
	t.Logf("similarity-b took the writer lease %.2f s after similarity-a was killed", time.Since(killed).Seconds())

	p.waitFor("every file finished", 2*time.Minute, func(a store.Accounting) bool { return a.Discovered == int64(files) && a.Pending == 0 })
	p.waitSimilarity()
	want, got := bruteForceTop10(t, p), storedTop(t, p)
	mismatches := 0
	for id, ids := range want {
		if fmt.Sprint(got[id]) != fmt.Sprint(ids) && len(ids) > 0 {
			if mismatches++; mismatches <= 3 {
				t.Errorf("similar of %s = %v, brute force %v", id, got[id], ids)
			}
		}
	}
	if mismatches > 0 || len(got) == 0 {
		t.Errorf("%d of %d lists differ from the brute force (%d stored)", mismatches, len(want), len(got))
	}
	if err := b.Stop(15 * time.Second); err != nil {
		t.Errorf("similarity-b after SIGTERM: %v", err)
	}
}
