package simindex

import "math/bits"

// The incremental search (TopK, Update) keeps the songs in classes by set
// size. Inside a class every song has a bit position, and the class keeps one
// bitmap per feature over those positions. For a newcomer x of size a, adding
// up the bitmaps of x's features word by word in bit-sliced counters gives,
// for 64 songs at a time, how many features each shares with x; within a class
// the union follows from that count (a + size - shared), so the count alone
// ranks the class's songs against x. No song's set is read one by one.
//
// The other direction — which lists x enters — uses a second set of bitmaps
// per class: admits[s][a] marks the songs whose list a song of size a sharing
// s features could enter, judged by each list's bar (its worst entry). A
// song's bits change only when its bar does.

// bar is what a newcomer must beat to enter a full list: its worst entry's
// shared and union counts. union 0: the list is not full, anyone enters.
type bar struct{ shared, union uint8 }

func barOf(k int, list []Neighbor) bar {
	if len(list) < k {
		return bar{}
	}
	w := list[len(list)-1]
	return bar{w.Shared, w.Union}
}

// admits reports whether a neighbor sharing s with union u may enter a list
// with bar b: it does not rank below the bar on score and shared count (the
// song id, which breaks the last tie, is checked on the list itself).
func (b bar) admits(s, u int) bool {
	if b.union == 0 {
		return true
	}
	l, r := s*int(b.union), int(b.shared)*u
	return l > r || (l == r && s >= int(b.shared))
}

// class holds the songs of one set size.
type class struct {
	size    int
	members []int32 // song index by position
	// has[f] bit p: members[p] holds feature f.
	has [Features][]uint64
	// admits[s][a] bit p (1 ≤ s ≤ size, s ≤ a): a song of size a sharing s
	// features with members[p] may enter its list; open[s][a] counts those
	// bits, so that a level nobody admits at is skipped unread.
	admits [][][]uint64
	open   [][]int
}

func (c *class) words() int { return (len(c.members) + 63) / 64 }

// levels makes room for newcomers of sizes up to maxSize; a new level's bits
// follow the bars its members have now.
func (ix *Index) levels(c *class, maxSize int) {
	for len(c.admits) <= c.size {
		c.admits = append(c.admits, nil)
		c.open = append(c.open, nil)
	}
	for s := 1; s <= c.size; s++ {
		for a := len(c.admits[s]); a <= maxSize; a++ {
			var words []uint64
			open := 0
			if a >= s && a >= ix.MinInstruments {
				words = make([]uint64, c.words())
				for p, y := range c.members {
					if ix.bars[y].admits(s, a+c.size-s) {
						words[p/64] |= 1 << (p % 64)
						open++
					}
				}
			}
			c.admits[s] = append(c.admits[s], words)
			c.open[s] = append(c.open[s], open)
		}
	}
}

// place puts song i (already in IDs and Sets) in its class, its list not
// full yet.
func (ix *Index) place(i int32) {
	size := int(ix.sizes[i])
	if size > ix.maxSize {
		ix.maxSize = size
		for _, c := range ix.classes {
			if c != nil {
				ix.levels(c, ix.maxSize)
			}
		}
	}
	c := ix.classes[size]
	if c == nil {
		c = &class{size: size}
		ix.classes[size] = c
		ix.levels(c, ix.maxSize)
	}
	p := len(c.members)
	if p%64 == 0 {
		for f := range c.has {
			c.has[f] = append(c.has[f], 0)
		}
		for s := range c.admits {
			for a, words := range c.admits[s] {
				if words != nil {
					c.admits[s][a] = append(words, 0)
				}
			}
		}
	}
	c.members = append(c.members, i)
	ix.pos = append(ix.pos, int32(p))
	ix.bars = append(ix.bars, bar{})
	for _, f := range ix.Sets[i].Features() {
		c.has[f][p/64] |= 1 << (p % 64)
	}
	ix.setBar(i, bar{}, true)
}

// setBar makes song y's admits bits follow bar b. force: y was just placed,
// its bits all clear, and b applies although bars[y] reads b already.
func (ix *Index) setBar(y int32, b bar, force bool) {
	if ix.bars[y] == b && !force {
		return
	}
	c := ix.classes[ix.sizes[y]]
	p := ix.pos[y]
	w, bit := p/64, uint64(1)<<(p%64)
	for s := 1; s <= c.size; s++ {
		for a, words := range c.admits[s] {
			if words == nil {
				continue
			}
			was := words[w]&bit != 0
			if want := b.admits(s, a+c.size-s); want != was {
				if want {
					words[w] |= bit
					c.open[s][a]++
				} else {
					words[w] &^= bit
					c.open[s][a]--
				}
			}
		}
	}
	ix.bars[y] = b
}

// search computes song x's own top-K list and, when others is not nil, calls
// it for every song whose list x may enter by its bar (verify with enters).
// Classes are visited in order of the best score a song of their size can
// reach with x, so that the list fills with good neighbors early and classes
// that cannot enter it are skipped.
func (ix *Index) search(x int32, others func(y int32, n Neighbor)) []Neighbor {
	q := query{ix: ix, x: x, a: int(ix.sizes[x]), want: ix.Sets[x].Features(), t: topList{ix: ix, cap: ix.K}, others: others}
	q.class(q.a)
	for d := 1; q.a-d >= 1 || q.a+d <= Features; d++ {
		q.class(q.a - d)
		q.class(q.a + d)
	}
	return q.t.list
}

// query is one search's state.
type query struct {
	ix     *Index
	x      int32
	a      int   // x's size
	want   []int // x's features
	t      topList
	others func(int32, Neighbor)
	levels []level
	rows   [][]uint64 // the class's bitmaps of x's features, reused
}

// level is what a search does with the songs of a class that share s
// features with x.
type level struct {
	s      int
	nb     Neighbor  // shared and union of such a song with x
	top    bool      // they can enter x's list
	admits []uint64  // the songs whose lists admit x at this level; nil: none
	flip   [8]uint64 // ^0 where bit k of s is clear: the counters are compared with s
}

// lowest is the fewest shared features with which a song of class c can
// still enter x's list (most+1: none can).
func (q *query) lowest(c *class, most int) int {
	b := barOf(q.t.cap, q.t.list)
	for s := 1; s <= most; s++ {
		if b.admits(s, q.a+c.size-s) {
			return s
		}
	}
	return most + 1
}

// class offers the songs of one size to x's list and to others.
func (q *query) class(size int) {
	if size < 1 || size > Features || q.ix.classes[size] == nil {
		return
	}
	c := q.ix.classes[size]
	most := min(q.a, c.size) // the most features a song of c can share with x
	low := q.lowest(c, most)
	q.levels = q.levels[:0]
	// Two sets of Features features at most share at least a+size-Features.
	for s := most; s >= max(1, q.a+c.size-Features); s-- {
		l := level{s: s, nb: Neighbor{Shared: uint8(s), Union: uint8(q.a + c.size - s)}, top: s >= low}
		for k := range l.flip {
			l.flip[k] = uint64(s>>k&1) - 1
		}
		if q.others != nil && c.open[s][q.a] > 0 {
			l.admits = c.admits[s][q.a]
		}
		if l.top || l.admits != nil {
			q.levels = append(q.levels, l)
		}
	}
	if len(q.levels) == 0 {
		return
	}
	top := low <= most
	wide := most >= 32
	rows := q.rows[:0]
	for _, f := range q.want {
		rows = append(rows, c.has[f])
	}
	q.rows = rows
	for w := range c.words() {
		if !top {
			// Only lists x may enter: a word none of them is in is skipped unread.
			var any uint64
			for i := range q.levels {
				any |= q.levels[i].admits[w]
			}
			if any == 0 {
				continue
			}
		}
		// Bit-sliced counters (c7 … c0 is each song's count in binary), in
		// registers. Counting in 5 bits (up to 31) takes a quarter less time
		// than in 8, and only classes of 32 features or more need 8.
		var c0, c1, c2, c3, c4, c5, c6, c7 uint64
		for _, row := range rows {
			carry := row[w]
			c0, carry = c0^carry, c0&carry
			c1, carry = c1^carry, c1&carry
			c2, carry = c2^carry, c2&carry
			c3, carry = c3^carry, c3&carry
			if wide {
				c4, carry = c4^carry, c4&carry
				c5, carry = c5^carry, c5&carry
				c6, carry = c6^carry, c6&carry
				c7 ^= carry
			} else {
				c4 ^= carry
			}
		}
		offered := false
		for i := range q.levels {
			l := &q.levels[i] // not copied: a level is a hundred bytes
			// A counter's bit must be set where s has it, clear where not.
			eq := (c0 ^ l.flip[0]) & (c1 ^ l.flip[1]) & (c2 ^ l.flip[2]) & (c3 ^ l.flip[3]) &
				(c4 ^ l.flip[4]) & (c5 ^ l.flip[5]) & (c6 ^ l.flip[6]) & (c7 ^ l.flip[7])
			if eq == 0 {
				continue
			}
			if l.top {
				nb := l.nb
				for m := eq; m != 0; m &= m - 1 {
					if nb.Song = c.members[w*64+bits.TrailingZeros64(m)]; nb.Song != q.x {
						q.t.offer(nb)
						offered = true
					}
				}
			}
			if l.admits != nil {
				nb := l.nb
				nb.Song = q.x
				for m := eq & l.admits[w]; m != 0; m &= m - 1 {
					if y := c.members[w*64+bits.TrailingZeros64(m)]; y != q.x {
						q.others(y, nb)
					}
				}
			}
		}
		if offered {
			if low = q.lowest(c, most); low > most {
				top = false
			}
			// Levels below the new lowest no longer enter x's list.
			kept := 0
			for i := range q.levels {
				l := &q.levels[i]
				l.top = l.s >= low
				if l.top || l.admits != nil {
					q.levels[kept] = *l
					kept++
				}
			}
			q.levels = q.levels[:kept]
			if len(q.levels) == 0 {
				return
			}
		}
	}
}
