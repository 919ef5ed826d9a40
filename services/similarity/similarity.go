// Package similarity keeps every song's top-K most similar songs (exact Jaccard
// over instrument sets) in Postgres. At start it loads all instrument sets and
// the stored lists (recomputing every list instead when they were computed with
// other settings, or never); then it applies midi.extracted events a fetched batch
// at a time: the new songs get their lists, and the lists they enter are
// updated, in one transaction per batch, acknowledged after commit. One
// instance writes at a time: it holds the writer lease, and any other instance
// stands by to take over (see Run).
package similarity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scale-dev/scale/internal/gm"
	"github.com/scale-dev/scale/internal/ops"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/telemetry"
	"github.com/scale-dev/scale/internal/transport"
	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/similarity/internal/simindex"
)

// Settings are the similarity flags and SCALE_SIMILARITY_* variables.
type Settings struct {
	K              int           `conf:"default:10,help:similar songs kept per song"`
	MinInstruments int           `conf:"default:3,help:instruments a song needs to take part"`
	Batch          int           `conf:"default:1024,help:midi.extracted events applied together: one update of the index and one statement"`
	AckWait        time.Duration `conf:"default:10s,help:how long a batch taken by an instance that died waits before it is delivered again (to the instance that took over)"`
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
	d        Deps
	set      Settings
	ix       *simindex.Index
	lists    [][]simindex.Neighbor
	applied  prometheus.Counter
	changed  prometheus.Counter
	rebuilds prometheus.Counter
	songs    prometheus.Gauge
	leader   prometheus.Gauge
	lease    *store.Lease // held while this instance is the writer
}

// New returns a service with an empty index.
func New(d Deps, s Settings) *Service {
	s.Batch = max(s.Batch, 1)
	return &Service{
		d: d, set: s, ix: simindex.New(s.K, s.MinInstruments),
		applied: ops.Register(d.Metrics, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scale_similarity_applied_total", Help: "midi.extracted events applied."})),
		changed: ops.Register(d.Metrics, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scale_similarity_lists_written_total", Help: "Similarity lists rewritten by applied events."})),
		rebuilds: ops.Register(d.Metrics, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scale_similarity_rebuilds_total", Help: "Full recomputations of every list (at start when the stored lists do not fit, or on demand)."})),
		songs: ops.Register(d.Metrics, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "scale_similarity_indexed_songs", Help: "Songs in the similarity index."})),
		leader: ops.Register(d.Metrics, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "scale_similarity_leader", Help: "1 while this instance holds the writer lease and applies songs (its lists loaded); 0 while it stands by or loads."})),
	}
}

// errStale marks stored lists that do not fit the index.
var errStale = errors.New("stored similarity lists do not fit the songs and settings")

// loadIndex builds the index from every instrument set in Postgres.
func (s *Service) loadIndex(ctx context.Context) error {
	s.ix = simindex.New(s.set.K, s.set.MinInstruments)
	err := s.d.Store.InstrumentSets(ctx, func(id string, instruments []int16) error {
		s.ix.Add(id, toSet(instruments))
		return nil
	})
	s.songs.Set(float64(s.ix.Len()))
	return err
}

// params are the settings the lists depend on.
func (s *Service) params() store.SimilarityParams {
	return store.SimilarityParams{K: s.set.K, MinInstruments: s.set.MinInstruments}
}

// Start prepares the service: it loads the index and the stored lists when
// they were computed with this service's settings, which is quick, and
// rebuilds every list otherwise (first start, changed settings, or stored
// lists that do not fit the songs).
func (s *Service) Start(ctx context.Context) error {
	start := time.Now()
	stored, ok, err := s.d.Store.StoredSimilarityParams(ctx)
	if err != nil {
		return err
	}
	if !ok || stored != s.params() {
		s.d.Log.Info("rebuilding similarity lists", "stored_settings", stored, "recorded", ok, "settings", s.params())
		return s.Rebuild(ctx, nil)
	}
	if err := s.loadIndex(ctx); err != nil {
		return err
	}
	s.lists = make([][]simindex.Neighbor, s.ix.Len())
	err = s.d.Store.SimilarLists(ctx, func(song string, others []string) error {
		i, ok := s.ix.Lookup(song)
		if !ok || len(others) > s.set.K {
			return errStale
		}
		list := make([]simindex.Neighbor, 0, len(others))
		for _, other := range others {
			j, ok := s.ix.Lookup(other)
			if !ok {
				return errStale
			}
			n, ok := s.ix.Neighbor(i, j)
			if !ok {
				return errStale
			}
			list = append(list, n)
		}
		s.lists[i] = list
		return nil
	})
	if errors.Is(err, errStale) {
		s.d.Log.Warn("stored similarity lists do not fit the songs; rebuilding", "error", err)
		return s.Rebuild(ctx, nil)
	}
	if err != nil {
		return err
	}
	s.d.Log.Info("similarity lists loaded", "songs", s.ix.Len(), "seconds", time.Since(start).Seconds())
	return nil
}

// Rebuild loads every instrument set from Postgres, computes every list and
// replaces the stored lists. progress, if not nil, gets progress lines.
func (s *Service) Rebuild(ctx context.Context, progress io.Writer) error {
	start := time.Now()
	if err := s.loadIndex(ctx); err != nil {
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
	for i, l := range s.lists {
		if len(l) > 0 {
			rows[s.ix.IDs[i]] = s.entries(int32(i), l)
		}
	}
	if err := s.lease.RebuildSimilar(ctx, rows, s.params()); err != nil {
		return err
	}
	s.rebuilds.Inc()
	say("rebuilt %d lists in %.1f s", len(rows), time.Since(start).Seconds())
	s.d.Log.Info("similarity rebuilt", "songs", s.ix.Len(), "seconds", time.Since(start).Seconds())
	return nil
}

// leasePoll is how often a standby tries the writer lease: a standby takes
// over within about this long of the writer's session ending.
const leasePoll = time.Second

// Run applies midi.extracted events until ctx ends, as the one writer of the
// lists. Only the instance holding the writer lease (store.SimilarityWriter)
// works; any other waits as a hot standby and takes over when the holder's
// database session ends (it died, or lost Postgres), starting over the stored
// lists. A holder that loses its session stops writing and stands by again.
func (s *Service) Run(ctx context.Context) error {
	for {
		lease, err := s.d.Store.WaitLease(ctx, store.SimilarityWriter, leasePoll, func() {
			s.d.Log.Info("standing by: another similarity instance holds the writer lease")
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		err = s.lead(ctx, lease)
		lease.Release()
		s.lease = nil
		s.leader.Set(0)
		if ctx.Err() != nil {
			return nil // stopped, perhaps part way through loading: nothing was written half
		}
		s.d.Log.Warn("no longer the similarity writer; standing by", "error", err)
		t := time.NewTimer(leasePoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// lead starts over the stored lists (see Start) and applies events, a fetched
// batch at a time, until ctx ends or the lease is lost.
func (s *Service) lead(ctx context.Context, lease *store.Lease) error {
	leadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lease.Lost():
			cancel()
		case <-leadCtx.Done():
		}
	}()
	s.lease = lease
	s.d.Log.Info("took the similarity writer lease")
	if err := s.Start(leadCtx); err != nil {
		return err
	}
	s.leader.Set(1)
	err := transport.Consume(leadCtx, s.d.JS, transport.Consumer{
		Stream: events.StreamOutcomes, Config: events.SimilarityConsumer(s.set.Batch, s.set.AckWait),
		Batch: s.set.Batch, Log: s.d.Log, Metrics: s.d.Metrics,
	}, s.handleBatch)
	select {
	case <-lease.Lost():
		return errors.New("the lease's database session failed")
	default:
		return err
	}
}

// Exclusive runs fn (Rebuild, or Start) holding the writer lease, and gives
// the lease back. It refuses while a similarity service holds the lease:
// that service rebuilds by itself when its settings change.
func (s *Service) Exclusive(ctx context.Context, fn func(context.Context) error) error {
	lease, err := s.d.Store.TryLease(ctx, store.SimilarityWriter)
	if errors.Is(err, store.ErrLeaseHeld) {
		return errors.New("a running similarity service holds the writer lease; stop it first (it rebuilds by itself when K or the minimum changes)")
	}
	if err != nil {
		return err
	}
	defer lease.Release()
	s.lease = lease
	defer func() { s.lease = nil }()
	return fn(ctx)
}

// handleBatch applies the songs of a fetched batch and settles every message:
// acknowledged after the commit, or redelivered later if the apply failed.
func (s *Service) handleBatch(ctx context.Context, batch []transport.Delivery[events.Extracted]) {
	evs := make([]events.Extracted, len(batch))
	traces := make([]context.Context, len(batch))
	for i, d := range batch {
		evs[i], traces[i] = d.Event, d.Ctx
	}
	ctx, span := telemetry.StartBatch(ctx, "similarity apply", traces)
	err := s.Apply(ctx, evs)
	telemetry.End(span, err)
	if err != nil {
		s.d.Log.Warn("applying songs; will retry", "songs", len(evs), "error", err)
		for _, d := range batch {
			_ = d.Msg.NakWithDelay(transport.Backoff(d.Attempts))
		}
		return
	}
	for _, d := range batch {
		_ = d.Msg.Ack()
	}
}

// Apply adds songs to the index, computes their lists and updates every list
// they enter, storing the entries that changed in one statement. The lists in
// memory change only after the commit, so a failed batch can be applied again;
// applying a song twice changes nothing.
func (s *Service) Apply(ctx context.Context, evs []events.Extracted) error {
	var added []int32
	for _, ev := range evs {
		ids := make([]int16, 0, len(ev.Instruments))
		for _, in := range ev.Instruments {
			if in.Drums || in.Program != nil { // Decode guarantees one of the two
				program := 0
				if in.Program != nil {
					program = *in.Program
				}
				ids = append(ids, int16(gm.ID(program, in.Drums)))
			}
		}
		if i, ok := s.ix.Add(ev.SongID, toSet(ids)); ok {
			added = append(added, i)
		} // else too few instruments to take part
	}
	for len(s.lists) < s.ix.Len() {
		s.lists = append(s.lists, nil)
	}
	changed := s.ix.Update(added, s.lists)
	rows := make(map[string][]store.Similar, len(changed))
	for y, l := range changed {
		if !slices.Equal(l, s.lists[y]) {
			rows[s.ix.IDs[y]] = s.entries(y, l)
		}
	}
	if err := s.lease.WriteSimilar(ctx, rows); err != nil {
		return err
	}
	for y, l := range changed {
		s.lists[y] = l
	}
	s.applied.Add(float64(len(evs)))
	s.changed.Add(float64(len(changed)))
	s.songs.Set(float64(s.ix.Len()))
	return nil
}

// entries converts song i's list for storage.
func (s *Service) entries(i int32, list []simindex.Neighbor) []store.Similar {
	out := make([]store.Similar, 0, len(list))
	for _, n := range list {
		common := simindex.Intersect(s.ix.Sets[i], s.ix.Sets[n.Song])
		shared := make([]int16, 0, common.Len())
		for f := range common.All() {
			shared = append(shared, int16(f))
		}
		out = append(out, store.Similar{Other: s.ix.IDs[n.Song], Score: n.Score(), Shared: shared})
	}
	return out
}

func toSet(ids []int16) simindex.Set {
	var set simindex.Set
	for _, id := range ids {
		if id >= 0 && id < gm.Instruments {
			set.Add(int(id))
		}
	}
	return set
}
