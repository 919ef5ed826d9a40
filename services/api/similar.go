package api

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scale-dev/scale/internal/gm"
	"github.com/scale-dev/scale/internal/ops"
	"github.com/scale-dev/scale/internal/store"
)

// SimilarSong is one entry of a song's similar list.
type SimilarSong struct {
	Rank   int          `json:"rank"`
	ID     string       `json:"id"`
	Name   string       `json:"name"`
	Score  float64      `json:"score"`
	Shared []Instrument `json:"shared"`
}

// similarList is a song's stored list, by rank (empty when nothing is
// similar), with the table its entries' other songs are in.
type similarList struct {
	entries []similarEntry
	others  fragments
}

// similarEntry holds no pointer, so a cache of millions of them costs the
// garbage collector nothing to scan.
type similarEntry struct {
	shared [3]uint64 // instrument ids (0–128) both songs use
	score  float64   // as stored
	other  uint32    // the other song's fragment in the list's table
	rank   int16
}

// fragments holds `"id":…,"name":…` JSON fragments back to back; fragment i is
// data[end[i-1]:end[i]]. Appending never moves what a reader already holds.
type fragments struct {
	data []byte
	end  []uint32
}

func (f *fragments) add(fragment []byte) uint32 {
	f.data = append(f.data, fragment...)
	f.end = append(f.end, uint32(len(f.data)))
	return uint32(len(f.end) - 1)
}

func (f fragments) get(i uint32) []byte {
	start := uint32(0)
	if i > 0 {
		start = f.end[i-1]
	}
	return f.data[start:f.end[i]]
}

// versionPoll is how often the cache checks similar_songs_version, and so how
// much older than the database an answer from the cache can be.
const versionPoll = 100 * time.Millisecond

// similarCache keeps songs' similar lists in memory, so that the busiest
// endpoint answers without a database round trip. Every write to
// similar_songs bumps similar_songs_version in the same transaction; run polls
// it and starts an empty generation whenever it moves. A request that misses
// reads the database and stores into the generation it started with, which is
// dropped whole if the version moved meanwhile, so nothing older than the
// last poll is ever served. While the version cannot be read, nothing is
// cached and every request reads the database.
type similarCache struct {
	maxSongs          int
	cur               atomic.Pointer[cacheGen]
	hits, misses, off prometheus.Counter
}

type cacheGen struct {
	version int64
	mu      sync.RWMutex
	lists   map[[16]byte]span   // song → its entries
	entries []similarEntry      // every cached list, back to back
	ids     map[[16]byte]uint32 // other song → its fragment in others
	others  fragments
}

type span struct{ off, n uint32 }

func newGen(version int64) *cacheGen {
	return &cacheGen{version: version, lists: map[[16]byte]span{}, ids: map[[16]byte]uint32{}}
}

func newSimilarCache(maxSongs int, reg prometheus.Registerer) *similarCache {
	lookups := ops.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "scale_api_similar_cache_lookups_total", Help: "Similar-list lookups by result (hit, miss, off).",
	}, []string{"result"}))
	c := &similarCache{maxSongs: maxSongs,
		hits: lookups.WithLabelValues("hit"), misses: lookups.WithLabelValues("miss"), off: lookups.WithLabelValues("off")}
	ops.Register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "scale_api_similar_cache_songs", Help: "Songs whose similar lists are in the cache.",
	}, func() float64 { songs, _ := c.size(); return float64(songs) }))
	ops.Register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "scale_api_similar_cache_bytes",
		Help: "Bytes the cached lists take: their entries and the id and name of each song they name (the two maps by song id add about 60 bytes per song).",
	}, func() float64 { _, bytes := c.size(); return float64(bytes) }))
	ops.Register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "scale_api_similar_cache_version",
		Help: "The similar_songs_version the cache serves (-1 while it is off); behind the database's for up to one poll.",
	}, func() float64 {
		if g := c.cur.Load(); g != nil {
			return float64(g.version)
		}
		return -1
	}))
	return c
}

// size is what the current generation holds.
func (c *similarCache) size() (songs, bytes int) {
	g := c.cur.Load()
	if g == nil {
		return 0, 0
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	return len(g.lists), cap(g.entries)*int(unsafe.Sizeof(similarEntry{})) + cap(g.others.data) + 4*cap(g.others.end)
}

// run polls the version until ctx ends.
func (c *similarCache) run(ctx context.Context, db *store.Reader, log *slog.Logger) error {
	if c.maxSongs <= 0 {
		<-ctx.Done()
		return nil
	}
	ticker := time.NewTicker(versionPoll)
	defer ticker.Stop()
	for {
		v, err := db.SimilarVersion(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			if c.cur.Swap(nil) != nil {
				log.Warn("similar-list cache off: cannot read the version", "error", err)
			}
		default:
			if g := c.cur.Load(); g == nil || g.version != v {
				c.cur.Store(newGen(v))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

func (g *cacheGen) get(key [16]byte) (similarList, bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	sp, ok := g.lists[key]
	if !ok {
		return similarList{}, false
	}
	return similarList{entries: g.entries[sp.off : sp.off+sp.n : sp.off+sp.n], others: g.others}, true
}

// put copies a list read from the database into the generation.
func (g *cacheGen) put(key [16]byte, l similarList, otherIDs [][16]byte, maxSongs int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, known := g.lists[key]; known || len(g.lists) >= maxSongs {
		return
	}
	off := uint32(len(g.entries))
	for i, e := range l.entries {
		frag, ok := g.ids[otherIDs[i]]
		if !ok {
			frag = g.others.add(l.others.get(e.other))
			g.ids[otherIDs[i]] = frag
		}
		e.other = frag
		g.entries = append(g.entries, e)
	}
	g.lists[key] = span{off: off, n: uint32(len(l.entries))}
}

// similarFor returns a song's list from the cache or the database; found is
// false when there is no such song.
func (a *API) similarFor(ctx context.Context, id string) (l similarList, found bool, err error) {
	var key [16]byte
	if _, err := hex.Decode(key[:], []byte(id)); err != nil {
		return l, false, errBadRequest("song id must be 32 lowercase hex digits")
	}
	g := a.cache.cur.Load()
	if g == nil {
		a.cache.off.Inc()
	} else if l, ok := g.get(key); ok {
		a.cache.hits.Inc()
		return l, true, nil
	} else {
		a.cache.misses.Inc()
	}
	release, ok := a.admit()
	if !ok {
		return l, false, errOverloaded
	}
	defer release()
	var otherIDs [][16]byte
	err = a.db.SimilarTo(ctx, id, func(se store.SimilarEntry) error {
		var otherKey [16]byte
		if _, err := hex.Decode(otherKey[:], []byte(se.Other)); err != nil {
			return fmt.Errorf("similar_lists.others %q: %w", se.Other, err)
		}
		e := similarEntry{rank: se.Rank, score: se.Score, other: l.others.add(idName(se.Other, se.Name))}
		for _, in := range se.Shared {
			if in >= 0 && in <= gm.Drums {
				e.shared[in/64] |= 1 << (in % 64)
			}
		}
		l.entries = append(l.entries, e)
		otherIDs = append(otherIDs, otherKey)
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return l, false, nil
	}
	if err != nil {
		return l, false, err
	}
	if g != nil {
		g.put(key, l, otherIDs, a.cache.maxSongs)
	}
	return l, true, nil
}

// idName is the `"id":…,"name":…` fragment of a song.
func idName(id, name string) []byte {
	b := append([]byte(`"id":`), mustJSON(id)...)
	b = append(b, `,"name":`...)
	return append(b, mustJSON(name)...)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // strings and catalog structs always encode
	}
	return b
}

// instrumentJSON is each instrument's JSON, as the encoder writes it.
var instrumentJSON = func() (out [gm.Drums + 1][]byte) {
	for id := range out {
		out[id] = mustJSON(instrument(id))
	}
	return out
}()

// rawJSON is a response body already encoded. The handler wrapper writes it
// and returns it to rawPool, so a busy endpoint reuses its buffers.
type rawJSON struct{ b []byte }

var rawPool = sync.Pool{New: func() any { return new(rawJSON) }}

// render appends the first limit entries of a list to dst exactly as
// encoding/json encodes {"similar": []SimilarSong, "song": id}: keys in order,
// HTML-safe strings, shared instruments by id, scores (in (0, 1]) in the 'f'
// format. id is a validated song id (hex digits: nothing to escape).
func (l similarList) render(dst []byte, id string, limit int) []byte {
	b := append(dst, `{"similar":[`...)
	for i, e := range l.entries[:min(limit, len(l.entries))] {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"rank":`...)
		b = strconv.AppendInt(b, int64(e.rank), 10)
		b = append(b, ',')
		b = append(b, l.others.get(e.other)...)
		b = append(b, `,"score":`...)
		b = strconv.AppendFloat(b, e.score, 'f', -1, 64)
		b = append(b, `,"shared":[`...)
		first := true
		for w, word := range e.shared {
			for ; word != 0; word &= word - 1 {
				if !first {
					b = append(b, ',')
				}
				first = false
				b = append(b, instrumentJSON[w*64+bits.TrailingZeros64(word)]...)
			}
		}
		b = append(b, "]}"...)
	}
	b = append(b, `],"song":"`...)
	b = append(b, id...)
	return append(b, "\"}\n"...)
}

func (a *API) similar(r *http.Request) (any, error) {
	id, err := pathSongID(r)
	if err != nil {
		return nil, err
	}
	limit, err := limitParam(r)
	if err != nil {
		return nil, err
	}
	l, found, err := a.similarFor(r.Context(), id)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, errNotFound("no such song")
	}
	raw := rawPool.Get().(*rawJSON)
	raw.b = l.render(raw.b[:0], id, limit)
	return raw, nil
}
