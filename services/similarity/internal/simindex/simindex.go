// Package simindex keeps the instrument sets of all songs in memory and computes
// each song's exact top-K most similar songs by Jaccard similarity of instrument
// sets (each GM program is a feature, drums one more). Ties are broken by score,
// then shared count, then song id, so every list is deterministic. Scores are
// compared as exact fractions, never as floats.
package simindex

import (
	"github.com/scale-dev/scale/internal/gm"

	"math/bits"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
)

// Features is the number of instrument features: one per instrument id (gm).
const Features = gm.Instruments

// Set is a set of instrument features.
type Set [3]uint64

// Add puts feature f (0–128) in the set.
func (s *Set) Add(f int) { s[f/64] |= 1 << (f % 64) }

// Len is the number of features.
func (s Set) Len() int {
	return bits.OnesCount64(s[0]) + bits.OnesCount64(s[1]) + bits.OnesCount64(s[2])
}

// Features lists the set's features in order.
func (s Set) Features() []int {
	var out []int
	for w, word := range s {
		for word != 0 {
			b := bits.TrailingZeros64(word)
			out = append(out, w*64+b)
			word &^= 1 << b
		}
	}
	return out
}

func interLen(a, b Set) int {
	return bits.OnesCount64(a[0]&b[0]) + bits.OnesCount64(a[1]&b[1]) + bits.OnesCount64(a[2]&b[2])
}

// Neighbor is one entry of a top-K list.
type Neighbor struct {
	Song   int32 // index of the other song
	Shared uint8 // |A ∩ B|
	Union  uint8 // |A ∪ B|
}

// Score is the Jaccard similarity.
func (n Neighbor) Score() float64 { return float64(n.Shared) / float64(n.Union) }

// Index holds the songs that take part (at least MinInstruments instruments).
type Index struct {
	K, MinInstruments int
	IDs               []string
	Sets              []Set
	sizes             []uint8 // Sets[i].Len(), kept: comparisons need it all the time
	byID              map[string]int32

	// For incremental updates (see Update): every song under each of its
	// features, and the reverse index of the lists: song y under the first
	// features of its prefix for its list's worst score, in the feature order
	// fixed when the reverse index was last built.
	postings [Features][]int32
	rev      [Features][]int32
	order    [Features]uint8 // position of each feature, rarest first
	revSize  int             // songs when rev was last built
}

// New returns an empty index.
func New(k, minInstruments int) *Index {
	return &Index{K: k, MinInstruments: minInstruments, byID: map[string]int32{}}
}

// Add indexes a song and returns its index; ok is false when the song has too
// few instruments to take part. Adding a known id returns its index.
func (ix *Index) Add(id string, set Set) (i int32, ok bool) {
	if set.Len() < ix.MinInstruments {
		return -1, false
	}
	if i, known := ix.byID[id]; known {
		return i, true
	}
	i = int32(len(ix.IDs))
	ix.IDs = append(ix.IDs, id)
	ix.Sets = append(ix.Sets, set)
	ix.sizes = append(ix.sizes, uint8(set.Len()))
	ix.byID[id] = i
	for _, f := range set.Features() {
		ix.postings[f] = append(ix.postings[f], i)
	}
	return i, true
}

// Lookup returns the index of a song; ok is false when it is not indexed.
func (ix *Index) Lookup(id string) (i int32, ok bool) {
	i, ok = ix.byID[id]
	return i, ok
}

// Len is the number of indexed songs.
func (ix *Index) Len() int { return len(ix.IDs) }

// better reports whether a ranks before b: higher score, then more shared, then smaller id.
func (ix *Index) better(a, b Neighbor) bool {
	// a.Shared/a.Union vs b.Shared/b.Union, exactly.
	l, r := int(a.Shared)*int(b.Union), int(b.Shared)*int(a.Union)
	if l != r {
		return l > r
	}
	if a.Shared != b.Shared {
		return a.Shared > b.Shared
	}
	return ix.IDs[a.Song] < ix.IDs[b.Song]
}

// topList is a bounded, sorted list of the best neighbors.
type topList struct {
	ix   *Index
	cap  int
	list []Neighbor
}

func (t *topList) offer(n Neighbor) {
	if len(t.list) == t.cap && !t.ix.better(n, t.list[len(t.list)-1]) {
		return
	}
	pos := sort.Search(len(t.list), func(i int) bool { return t.ix.better(n, t.list[i]) })
	if len(t.list) < t.cap {
		t.list = append(t.list, Neighbor{})
	}
	copy(t.list[pos+1:], t.list[pos:])
	t.list[pos] = n
}

// marks remembers which songs a search has met, without clearing between searches.
type marks struct {
	gen  uint32
	seen []uint32
}

func (m *marks) reset(n int) {
	if len(m.seen) < n {
		m.seen = make([]uint32, n+n/4)
		m.gen = 0
	}
	m.gen++
	if m.gen == 0 { // wrapped: start over
		clear(m.seen)
		m.gen = 1
	}
}

// first reports whether j is met for the first time in this search.
func (m *marks) first(j int32) bool {
	if m.seen[j] == m.gen {
		return false
	}
	m.seen[j] = m.gen
	return true
}

// TopK computes song i's list. Candidates come from the postings of i's
// features, rarest first; once the list is full with worst score t, a song
// that could still enter shares at least ceil(t·|i|) features with i, so it is
// in one of the first |i| - ceil(t·|i|) + 1 postings: the rest are skipped.
func (ix *Index) TopK(i int32) []Neighbor {
	var m marks
	return ix.topK(i, &m)
}

func (ix *Index) topK(i int32, m *marks) []Neighbor {
	m.reset(len(ix.Sets))
	m.first(i)
	feats := ix.Sets[i].Features()
	sort.Slice(feats, func(a, b int) bool { return len(ix.postings[feats[a]]) < len(ix.postings[feats[b]]) })
	t := topList{ix: ix, cap: ix.K}
	for p := 0; p < prefixLen(&t, len(feats)); p++ {
		for _, j := range ix.postings[feats[p]] {
			if m.first(j) {
				n, _ := ix.Neighbor(i, j)
				t.offer(n)
			}
		}
	}
	return t.list
}

// enters reports whether candidate n would enter list (a current top-K), and
// returns the new list if so; list itself is left as it was.
func (ix *Index) enters(list []Neighbor, n Neighbor) ([]Neighbor, bool) {
	if len(list) == ix.K && !ix.better(n, list[len(list)-1]) {
		return list, false // the common case at scale: no copy
	}
	for _, e := range list {
		if e.Song == n.Song {
			return list, false
		}
	}
	t := topList{ix: ix, cap: ix.K, list: append(make([]Neighbor, 0, ix.K), list...)}
	t.offer(n)
	return t.list, true
}

// revPrefix is how many of song y's features, in rev order, y is listed under
// for a list whose worst entry is worst (all of them while the list is not full).
func (ix *Index) revPrefix(y int32, list []Neighbor) []int {
	feats := ix.Sets[y].Features()
	sort.Slice(feats, func(a, b int) bool { return ix.order[feats[a]] < ix.order[feats[b]] })
	t := topList{cap: ix.K, list: list}
	return feats[:prefixLen(&t, len(feats))]
}

// reindex orders the features rarest first by the current postings and lists
// every song y under the features of its prefix for lists[y].
func (ix *Index) reindex(lists [][]Neighbor) {
	feats := make([]int, Features)
	for f := range feats {
		feats[f] = f
	}
	sort.SliceStable(feats, func(a, b int) bool { return len(ix.postings[feats[a]]) < len(ix.postings[feats[b]]) })
	for pos, f := range feats {
		ix.order[f] = uint8(pos)
		ix.rev[f] = ix.rev[f][:0]
	}
	for y := range ix.Sets {
		var l []Neighbor
		if y < len(lists) {
			l = lists[y]
		}
		for _, f := range ix.revPrefix(int32(y), l) {
			ix.rev[f] = append(ix.rev[f], int32(y))
		}
	}
	ix.revSize = len(ix.Sets)
}

// Update computes what adding the songs added (indexes from Add, already in
// the index) does to the lists: each added song gets its own list (TopK), and
// every other song's list (lists[y], its current top-K) takes in the added
// songs that rank in it. It returns only the lists that changed, by song;
// lists itself is not modified, so a caller can keep it as the stored state
// until the change is stored, then copy the changes in. Applying the same
// songs again changes no list but their own, recomputed to the same.
//
// An added song x can enter y's list, whose worst score is t, only if
// J(x, y) ≥ t, so x shares at least ceil(t·|y|) features with y and holds one
// of y's first |y| - ceil(t·|y|) + 1 features (in any fixed order). The
// reverse index lists each y under those features for the worst score its
// list had when it was listed; worst scores only grow, so that prefix holds
// every feature the current one does, and looking x's features up in it finds
// every list x can enter. The reverse index is rebuilt, rarest features first,
// whenever the index has doubled since the last build.
func (ix *Index) Update(added []int32, lists [][]Neighbor) map[int32][]Neighbor {
	isAdded := make(map[int32]bool, len(added))
	var news []int32
	for _, x := range added {
		if !isAdded[x] {
			isAdded[x] = true
			news = append(news, x)
		}
	}
	if len(ix.Sets) >= 2*ix.revSize {
		ix.reindex(lists)
	}
	type entry struct {
		y  int32
		nb Neighbor
	}
	// The bar each list sets, compact, so the scan below reads no list: a
	// candidate that cannot beat it (score below, or equal with fewer
	// shared) is rejected on the spot; only the rest are offered.
	type bar struct{ shared, union uint8 } // union 0: the list is not full
	bars := make([]bar, len(ix.Sets))
	for y := range min(len(lists), len(bars)) {
		if l := lists[y]; len(l) == ix.K {
			bars[y] = bar{l[len(l)-1].Shared, l[len(l)-1].Union}
		}
	}
	own := make([][]Neighbor, len(news))
	entering := make([][]entry, len(news))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			var m marks
			for k := next.Add(1) - 1; k < int64(len(news)); k = next.Add(1) - 1 {
				x := news[k]
				own[k] = ix.topK(x, &m)
				m.reset(len(ix.Sets))
				for _, a := range news {
					m.first(a) // added songs get their lists from topK
				}
				for _, f := range ix.Sets[x].Features() {
					for _, y := range ix.rev[f] {
						if !m.first(y) {
							continue
						}
						nb, ok := ix.Neighbor(y, x)
						if !ok {
							continue
						}
						if b := bars[y]; b.union != 0 {
							sh, un := int(nb.Shared), int(nb.Union)
							if l, r := sh*int(b.union), int(b.shared)*un; l < r || (l == r && sh < int(b.shared)) {
								continue
							}
						}
						if int(y) < len(lists) {
							if _, in := ix.enters(lists[y], nb); !in {
								continue
							}
						}
						entering[k] = append(entering[k], entry{y, nb})
					}
				}
			}
		})
	}
	wg.Wait()
	changed := make(map[int32][]Neighbor, len(news)*(ix.K+1))
	for k, x := range news {
		changed[x] = own[k]
		for _, e := range entering[k] {
			l, seen := changed[e.y]
			if !seen && int(e.y) < len(lists) {
				l = lists[e.y]
			}
			if nl, in := ix.enters(l, e.nb); in {
				changed[e.y] = nl
			}
		}
	}
	// List the added songs in the reverse index under their new lists' prefixes.
	for k, x := range news {
		for _, f := range ix.revPrefix(x, own[k]) {
			ix.rev[f] = append(ix.rev[f], x)
		}
	}
	return changed
}

// All computes every song's list. Songs with equal sets have equal candidates, so
// the work is done once per distinct set (top K+1 over distinct sets, then the
// song itself is dropped), spread over all CPUs.
//
// Candidates come from an inverted index with prefix filtering: with features
// ordered rarest first, a set B can score at least t against A only if it holds
// one of A's first |A| - ceil(t·|A|) + 1 features. So after the lists of A's
// rarest features have filled the top list, its worst score t bounds how many
// more posting lists must be read; nothing that could enter is skipped, so the
// result is exact. progress, if not nil, is called with the distinct sets done.
func (ix *Index) All(progress func(done, total int)) [][]Neighbor {
	groups := map[Set][]int32{}
	for i, s := range ix.Sets {
		groups[s] = append(groups[s], int32(i))
	}
	distinct := make([]group, 0, len(groups))
	for s, m := range groups {
		sort.Slice(m, func(a, b int) bool { return ix.IDs[m[a]] < ix.IDs[m[b]] })
		distinct = append(distinct, group{set: s, size: s.Len(), members: m})
	}
	var postings [Features][]int32
	for g, d := range distinct {
		for _, f := range d.set.Features() {
			postings[f] = append(postings[f], int32(g))
		}
	}
	lists := make([][]Neighbor, len(ix.Sets))
	var next, done int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := make([]int32, len(distinct)) // seen[b] == g+1: b offered to g already
			for {
				mu.Lock()
				g := next
				next++
				mu.Unlock()
				if g >= len(distinct) {
					return
				}
				a := distinct[g]
				feats := a.set.Features()
				sort.Slice(feats, func(x, y int) bool { return len(postings[feats[x]]) < len(postings[feats[y]]) })
				t := topList{ix: ix, cap: ix.K + 1}
				for i := 0; i < prefixLen(&t, a.size); i++ {
					for _, b := range postings[feats[i]] {
						if seen[b] == int32(g+1) {
							continue
						}
						seen[b] = int32(g + 1)
						ix.offerGroup(&t, a, distinct[b])
					}
				}
				for _, self := range a.members {
					l := make([]Neighbor, 0, ix.K)
					for _, n := range t.list {
						if n.Song != self && len(l) < ix.K {
							l = append(l, n)
						}
					}
					lists[self] = l
				}
				if progress != nil {
					mu.Lock()
					done++
					progress(done, len(distinct))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return lists
}

// prefixLen is how many of A's rarest features a candidate must be looked up
// by: all of them until the list is full, then |A| - ceil(t·|A|) + 1 where t is
// the worst score in the list.
func prefixLen(t *topList, size int) int {
	if len(t.list) < t.cap {
		return size
	}
	w := t.list[len(t.list)-1]
	need := (int(w.Shared)*size + int(w.Union) - 1) / int(w.Union) // ceil(t·|A|)
	return size - need + 1
}

type group struct {
	set     Set
	size    int
	members []int32 // sorted by id
}

// offerGroup offers the members of group b as neighbors of group a.
func (ix *Index) offerGroup(t *topList, a, b group) {
	s := interLen(a.set, b.set)
	if s == 0 {
		return
	}
	u := a.size + b.size - s
	if len(t.list) == t.cap {
		worst := t.list[len(t.list)-1]
		if l, r := s*int(worst.Union), int(worst.Shared)*u; l < r || (l == r && s < int(worst.Shared)) {
			return
		}
	}
	n := Neighbor{Shared: uint8(s), Union: uint8(u)}
	for _, m := range b.members[:min(len(b.members), ix.K+1)] {
		n.Song = m
		if len(t.list) == t.cap && !ix.better(n, t.list[len(t.list)-1]) {
			return // members are in id order: the rest rank lower still
		}
		t.offer(n)
	}
}

// Intersect is the set of features in both a and b.
func Intersect(a, b Set) Set { return Set{a[0] & b[0], a[1] & b[1], a[2] & b[2]} }

// Neighbor returns song j as a neighbor of song i; ok is false when they share
// no instrument.
func (ix *Index) Neighbor(i, j int32) (Neighbor, bool) {
	s := interLen(ix.Sets[i], ix.Sets[j])
	if s == 0 {
		return Neighbor{}, false
	}
	return Neighbor{Song: j, Shared: uint8(s), Union: uint8(int(ix.sizes[i]) + int(ix.sizes[j]) - s)}, true
}
