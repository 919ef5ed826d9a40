package api

import (
	"bytes"
	"encoding/json"
	"testing"
)

// TestRenderMatchesEncodingJSON: the cached lists render exactly as
// encoding/json encodes the same answer, for every Jaccard score there can be
// (s/u with 1 ≤ s ≤ u ≤ 129), names that need escaping, and every limit.
func TestRenderMatchesEncodingJSON(t *testing.T) {
	names := []string{"Plain", `Rock & "Roll" <live>`, "Ünïcødé ♫", "back\\slash\ttab"}
	var l similarList
	var want []SimilarSong
	rank := int16(0)
	for u := 1; u <= 129; u++ {
		for s := 1; s <= u; s++ {
			rank++
			other := "0123456789abcdef0123456789abcdef"
			name := names[int(rank)%len(names)]
			e := similarEntry{rank: rank, other: l.others.add(idName(other, name)), score: float64(s) / float64(u)}
			ws := SimilarSong{Rank: int(rank), ID: other, Name: name, Score: e.score, Shared: []Instrument{}}
			for _, in := range []int{0, s % 129, 64, 128} {
				e.shared[in/64] |= 1 << (in % 64)
			}
			for in := range 129 {
				if e.shared[in/64]&(1<<(in%64)) != 0 {
					ws.Shared = append(ws.Shared, instrument(in))
				}
			}
			l.entries, want = append(l.entries, e), append(want, ws)
		}
	}
	id := "fedcba9876543210fedcba9876543210"
	for _, limit := range []int{1, 10, 100, len(l.entries), len(l.entries) + 5} {
		var buf bytes.Buffer
		if err := json.NewEncoder(&buf).Encode(map[string]any{"song": id, "similar": want[:min(limit, len(want))]}); err != nil {
			t.Fatal(err)
		}
		if got := l.render(nil, id, limit); !bytes.Equal(got, buf.Bytes()) {
			t.Fatalf("limit %d: render differs from encoding/json:\n got %.300s\nwant %.300s", limit, got, buf.Bytes())
		}
		// A pooled buffer keeps what it holds before the answer.
		if got := l.render([]byte("prefix"), id, limit); !bytes.Equal(got, append([]byte("prefix"), buf.Bytes()...)) {
			t.Fatalf("limit %d: render into a used buffer: %.300s", limit, got)
		}
	}
	var buf bytes.Buffer
	json.NewEncoder(&buf).Encode(map[string]any{"song": id, "similar": []SimilarSong{}}) //nolint:errcheck // bytes.Buffer
	if got := (similarList{}).render(nil, id, 10); !bytes.Equal(got, buf.Bytes()) {
		t.Errorf("empty list: %s, want %s", got, buf.Bytes())
	}
}

// TestCacheGenRoundTrip: a list put into a generation renders as it did when
// read, whatever lists were put before it (its fragments are re-interned).
func TestCacheGenRoundTrip(t *testing.T) {
	mk := func(names ...string) (similarList, [][16]byte) {
		var l similarList
		var ids [][16]byte
		for i, n := range names {
			var key [16]byte
			key[0] = n[0]
			id := "00000000000000000000000000000000"
			l.entries = append(l.entries, similarEntry{rank: int16(i + 1), score: 1 / float64(i+1), other: l.others.add(idName(id, n))})
			l.entries[i].shared[0] = 1 << i
			ids = append(ids, key)
		}
		return l, ids
	}
	g := newGen(1)
	a, aIDs := mk("Alpha", "Beta")
	b, bIDs := mk("Beta", "Gamma", "Alpha")
	g.put([16]byte{1}, a, aIDs, 10)
	g.put([16]byte{2}, b, bIDs, 10)
	g.put([16]byte{3}, b, bIDs, 2) // over the bound: not kept
	for key, want := range map[byte]similarList{1: a, 2: b} {
		got, ok := g.get([16]byte{key})
		if !ok {
			t.Fatalf("list %d not cached", key)
		}
		if r, w := got.render(nil, "x", 10), want.render(nil, "x", 10); !bytes.Equal(r, w) {
			t.Errorf("list %d renders\n%s\nafter the round trip, want\n%s", key, r, w)
		}
	}
	if _, ok := g.get([16]byte{3}); ok {
		t.Error("a list beyond maxSongs was cached")
	}
	if len(g.others.end) != 3 {
		t.Errorf("%d fragments for 3 distinct songs", len(g.others.end))
	}
}
