package accounting

import (
	"context"
	"fmt"
	"math/bits"
	"slices"
	"sort"

	"github.com/scale-dev/scale/internal/gm"
	"github.com/scale-dev/scale/internal/store"
)

// instrumentSet is a song's instruments as bits, one per instrument id.
type instrumentSet [(gm.Instruments + 63) / 64]uint64

func (s instrumentSet) len() int {
	n := 0
	for _, w := range s {
		n += bits.OnesCount64(w)
	}
	return n
}

func (s instrumentSet) shared(o instrumentSet) int {
	n := 0
	for i := range s {
		n += bits.OnesCount64(s[i] & o[i])
	}
	return n
}

// BruteForce computes every song's top-k similar songs from song_instruments
// by comparing it with every other song: Jaccard over instrument sets, ties
// broken by the shared count, then the id; songs with fewer than
// minInstruments instruments take no part. It shares no code with the
// similarity service, which is the point.
func BruteForce(ctx context.Context, st *store.Store, k, minInstruments int) (map[string][]string, error) {
	type song struct {
		id  string
		set instrumentSet
		n   int
	}
	var songs []song
	err := st.InstrumentSets(ctx, func(id string, instruments []int16) error {
		var s instrumentSet
		for _, in := range instruments {
			s[in/64] |= 1 << (in % 64)
		}
		if n := s.len(); n >= minInstruments {
			songs = append(songs, song{id, s, n})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	type cand struct {
		id     string
		score  float64
		shared int
	}
	out := make(map[string][]string, len(songs))
	var cs []cand
	for i, a := range songs {
		if i%1024 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		cs = cs[:0]
		for j, b := range songs {
			if i == j {
				continue
			}
			if inter := a.set.shared(b.set); inter > 0 {
				cs = append(cs, cand{b.id, float64(inter) / float64(a.n+b.n-inter), inter})
			}
		}
		sort.Slice(cs, func(x, y int) bool {
			if cs[x].score != cs[y].score {
				return cs[x].score > cs[y].score
			}
			if cs[x].shared != cs[y].shared {
				return cs[x].shared > cs[y].shared
			}
			return cs[x].id < cs[y].id
		})
		ids := make([]string, 0, k)
		for _, c := range cs[:min(k, len(cs))] {
			ids = append(ids, c.id)
		}
		out[a.id] = ids
	}
	return out, nil
}

// SimilarReport compares the stored similarity lists with the brute force.
type SimilarReport struct {
	Songs      int      `json:"songs"` // songs taking part
	Lists      int      `json:"lists"` // stored lists
	Mismatched []string `json:"mismatched"`
}

// OK is true when every list equals the brute force.
func (r SimilarReport) OK() bool { return len(r.Mismatched) == 0 }

func (r SimilarReport) String() string {
	return fmt.Sprintf("%d songs take part, %d stored lists, %d differ from the brute force", r.Songs, r.Lists, len(r.Mismatched))
}

// Similar checks every stored list against BruteForce.
func Similar(ctx context.Context, st *store.Store, k, minInstruments int) (SimilarReport, error) {
	want, err := BruteForce(ctx, st, k, minInstruments)
	if err != nil {
		return SimilarReport{}, err
	}
	got := map[string][]string{}
	err = st.SimilarLists(ctx, func(song string, others []string) error {
		got[song] = others
		return nil
	})
	if err != nil {
		return SimilarReport{}, err
	}
	r := SimilarReport{Songs: len(want), Lists: len(got), Mismatched: []string{}}
	for id, ids := range want {
		if g := got[id]; !slices.Equal(g, ids) && !(len(g) == 0 && len(ids) == 0) {
			r.Mismatched = append(r.Mismatched, id)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			r.Mismatched = append(r.Mismatched, id) // a list for a song that takes no part
		}
	}
	sort.Strings(r.Mismatched)
	return r, nil
}
