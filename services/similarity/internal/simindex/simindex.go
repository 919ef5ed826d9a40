// Package simindex keeps the instrument sets of all songs in memory and computes
// each song's exact top-K most similar songs by Jaccard similarity of instrument
// sets (each GM program is a feature, drums one more). Ties are broken by score,
// then shared count, then song id, so every list is deterministic. Scores are
// compared as exact fractions, never as floats.
package simindex

import (
	"encoding/binary"
	"iter"
	"math/bits"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/scale-dev/scale/internal/gm"
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
func (s Set) Features() []int { return slices.AppendSeq(make([]int, 0, s.Len()), s.All()) }

// All yields the set's features in order.
func (s Set) All() iter.Seq[int] {
	return func(yield func(int) bool) {
		for w, word := range s {
			for word != 0 {
				b := bits.TrailingZeros64(word)
				if !yield(w*64 + b) {
					return
				}
				word &^= 1 << b
			}
		}
	}
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
	sizes             []uint8  // Sets[i].Len(), kept: comparisons need it all the time
	idKeys            []uint64 // idKey(IDs[i]), kept: ties are broken by id all the time
	byID              map[string]int32

	// For incremental updates (TopK, Update): the songs by set size, each
	// song's position in its class, and the bar its class's admits bits
	// follow (classes.go).
	classes [Features + 1]*class
	pos     []int32
	bars    []bar
	maxSize int // the largest set indexed
	// followed: the bars have followed lists once; after that only the
	// lists in pending, the last Update's result, can have changed.
	followed bool
	pending  []int32
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
	ix.idKeys = append(ix.idKeys, idKey(id))
	ix.byID[id] = i
	ix.place(i)
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
	if ka, kb := ix.idKeys[a.Song], ix.idKeys[b.Song]; ka != kb {
		return ka < kb
	}
	return ix.IDs[a.Song] < ix.IDs[b.Song]
}

// idKey is an id's first 8 bytes as a big-endian number: two ids whose keys
// differ compare as their keys do, so most ties are broken without reading
// the strings.
func idKey(id string) uint64 {
	var b [8]byte
	copy(b[:], id)
	return binary.BigEndian.Uint64(b[:])
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

// TopK computes song i's list.
func (ix *Index) TopK(i int32) []Neighbor {
	return ix.search(i, nil)
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

// Update computes what adding the songs added (indexes from Add, already in
// the index) does to the lists: each added song gets its own list (TopK), and
// every other song's list (lists[y], its current top-K) takes in the added
// songs that rank in it. It returns only the lists that changed, by song;
// lists itself is not modified, so a caller can keep it as the stored state
// until the change is stored, then copy the changes in (all of them, or none
// when storing failed); lists must change in no other way between calls, as
// the index follows them (see followLists). Applying the same
// songs again changes no list but their own, recomputed to the same.
//
// The added songs' lists and the lists they may enter come from one search
// per added song (classes.go), after every song's admits bits have been
// brought in line with its list in lists.
func (ix *Index) Update(added []int32, lists [][]Neighbor) map[int32][]Neighbor {
	isAdded := make(map[int32]bool, len(added))
	var news []int32
	for _, x := range added {
		if !isAdded[x] {
			isAdded[x] = true
			news = append(news, x)
		}
	}
	ix.followLists(lists)
	type entry struct {
		y  int32
		nb Neighbor
	}
	own := make([][]Neighbor, len(news))
	entering := make([][]entry, len(news))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for k := next.Add(1) - 1; k < int64(len(news)); k = next.Add(1) - 1 {
				own[k] = ix.search(news[k], func(y int32, nb Neighbor) {
					if isAdded[y] {
						return // added songs get their lists from their own search
					}
					if int(y) < len(lists) {
						if _, in := ix.enters(lists[y], nb); !in {
							return
						}
					}
					entering[k] = append(entering[k], entry{y, nb})
				})
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
	ix.pending = ix.pending[:0]
	for y := range changed {
		ix.pending = append(ix.pending, y)
	}
	return changed
}

// followLists brings the songs' admits bits in line with their lists: every
// song's on the first Update, then only the songs whose lists the last
// Update returned (a caller that stored them copied them in; one that failed
// to left them as they were).
func (ix *Index) followLists(lists [][]Neighbor) {
	follow := func(y int32) {
		var l []Neighbor
		if int(y) < len(lists) {
			l = lists[y]
		}
		ix.setBar(y, barOf(ix.K, l), false)
	}
	if !ix.followed {
		for y := range ix.Sets {
			follow(int32(y))
		}
		ix.followed = true
		return
	}
	for _, y := range ix.pending {
		follow(y)
	}
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
	if !barOf(t.cap, t.list).admits(s, u) {
		return
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
