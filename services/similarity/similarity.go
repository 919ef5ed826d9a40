// Package similarity keeps every song's top-K most similar songs (exact Jaccard
// over instrument sets) in Postgres. At start it loads all instrument sets and
// recomputes every list; then it applies midi.extracted events one at a time:
// the new song gets its list, and the lists it enters are updated, in one
// transaction per event, acknowledged after commit.
package similarity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scale-dev/scale/internal/ops"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/similarity/internal/simindex"
)

// Settings are the similarity flags and SCALE_SIMILARITY_* variables.
type Settings struct {
	K              int `conf:"default:10,help:similar songs kept per song"`
	MinInstruments int `conf:"default:3,help:instruments a song needs to take part"`
}

// Deps are the explicit dependencies.
type Deps struct {
	JS      jetstream.JetStream // nil for a rebuild alone
	Store   *store.Store
	Log     *slog.Logger
	Metrics prometheus.Registerer
}

// Service holds the index and every song's current list.
type Service struct {
	d       Deps
	set     Settings
	ix      *simindex.Index
	lists   [][]simindex.Neighbor
	applied prometheus.Counter
	songs   prometheus.Gauge
}

// New returns a service with an empty index.
func New(d Deps, s Settings) *Service {
	return &Service{
		d: d, set: s, ix: simindex.New(s.K, s.MinInstruments),
		applied: ops.Register(d.Metrics, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scale_similarity_applied_total", Help: "midi.extracted events applied."})),
		songs: ops.Register(d.Metrics, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "scale_similarity_indexed_songs", Help: "Songs in the similarity index."})),
	}
}

// Rebuild loads every instrument set from Postgres, computes every list and
// replaces the stored lists. progress, if not nil, gets progress lines.
func (s *Service) Rebuild(ctx context.Context, progress io.Writer) error {
	start := time.Now()
	s.ix = simindex.New(s.set.K, s.set.MinInstruments)
	err := s.d.Store.InstrumentSets(ctx, func(id string, instruments []int16) error {
		s.ix.Add(id, toSet(instruments))
		return nil
	})
	if err != nil {
		return err
	}
	say := func(format string, args ...any) {
		if progress != nil {
			fmt.Fprintf(progress, "similarity: "+format+"\n", args...)
		}
	}
	say("%d songs with at least %d instruments loaded in %.1f s", s.ix.Len(), s.set.MinInstruments, time.Since(start).Seconds())
	last := time.Now()
	s.lists = s.ix.All(func(done, total int) {
		if time.Since(last) >= time.Second || done == total {
			last = time.Now()
			say("%d of %d distinct instrument sets ranked (%.0f s)", done, total, time.Since(start).Seconds())
		}
	})
	rows := make(map[string][]store.Similar, len(s.lists))
	for i := range s.lists {
		rows[s.ix.IDs[i]] = s.rows(int32(i))
	}
	if err := s.d.Store.RebuildSimilar(ctx, rows); err != nil {
		return err
	}
	s.songs.Set(float64(s.ix.Len()))
	say("rebuilt %d lists in %.1f s", len(rows), time.Since(start).Seconds())
	s.d.Log.Info("similarity rebuilt", "songs", s.ix.Len(), "seconds", time.Since(start).Seconds())
	return nil
}

// Run rebuilds, then applies midi.extracted events until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if err := s.Rebuild(ctx, nil); err != nil {
		return err
	}
	cons, err := s.d.JS.CreateOrUpdateConsumer(ctx, events.StreamOutcomes, events.SimilarityConsumer())
	if err != nil {
		return fmt.Errorf("creating consumer %s: %w", events.ConsumerSimilarity, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(64))
	if err != nil {
		return fmt.Errorf("pulling from %s: %w", events.ConsumerSimilarity, err)
	}
	go func() { <-ctx.Done(); it.Stop() }()
	for {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil
		}
		if err != nil {
			s.d.Log.Warn("pulling messages", "error", err)
			continue
		}
		ev, err := events.Decode[events.Extracted](msg.Data())
		if err != nil {
			s.d.Log.Error("dropping undecodable midi.extracted message", "error", err)
			_ = msg.TermWithReason("undecodable event")
			continue
		}
		if err := s.Apply(context.WithoutCancel(ctx), ev); err != nil {
			s.d.Log.Warn("applying song; will retry", "song", ev.SongID, "error", err)
			_ = msg.NakWithDelay(time.Second)
			continue
		}
		_ = msg.Ack()
	}
}

// Apply adds a song to the index, computes its list and updates every list it
// enters, storing them in one transaction. Applying a song twice changes nothing.
func (s *Service) Apply(ctx context.Context, ev events.Extracted) error {
	ids := make([]int16, 0, len(ev.Instruments))
	for _, in := range ev.Instruments {
		if in.Drums {
			ids = append(ids, store.DrumsInstrument)
		} else if in.Program != nil {
			ids = append(ids, int16(*in.Program))
		}
	}
	i, ok := s.ix.Add(ev.SongID, toSet(ids))
	if !ok {
		s.applied.Inc()
		return nil // too few instruments to take part
	}
	for len(s.lists) < s.ix.Len() {
		s.lists = append(s.lists, nil)
	}
	changed := map[int32][]simindex.Neighbor{i: s.ix.TopK(i)}
	for y, l := range s.lists[:s.ix.Len()] {
		if int32(y) == i {
			continue
		}
		n, ok := s.ix.Neighbor(int32(y), i)
		if !ok {
			continue
		}
		if nl, entered := s.ix.Enters(l, n); entered {
			changed[int32(y)] = nl
		}
	}
	rows := make(map[string][]store.Similar, len(changed))
	for y, l := range changed {
		s.lists[y] = l
		rows[s.ix.IDs[y]] = s.rows(y)
	}
	if err := s.d.Store.ReplaceSimilar(ctx, rows); err != nil {
		return err
	}
	s.applied.Inc()
	s.songs.Set(float64(s.ix.Len()))
	return nil
}

// rows converts song i's list for storage.
func (s *Service) rows(i int32) []store.Similar {
	out := make([]store.Similar, 0, len(s.lists[i]))
	for r, n := range s.lists[i] {
		shared := s.ix.Sets[i]
		other := s.ix.Sets[n.Song]
		var ids []int16
		for _, f := range simindex.Intersect(shared, other).Features() {
			ids = append(ids, int16(f))
		}
		out = append(out, store.Similar{Rank: r + 1, Other: s.ix.IDs[n.Song], Score: n.Score(), Shared: ids})
	}
	return out
}

func toSet(ids []int16) simindex.Set {
	var set simindex.Set
	for _, id := range ids {
		if id >= 0 && id < simindex.Features {
			set.Add(int(id))
		}
	}
	return set
}
