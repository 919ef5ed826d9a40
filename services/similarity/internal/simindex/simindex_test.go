package simindex

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
)

// bruteForce ranks every other song by float Jaccard with the documented
// tie-breaks: an independent restatement of the rule.
func bruteForce(ix *Index, i int) []Neighbor {
	type cand struct {
		j             int
		score         float64
		shared, union int
	}
	var cs []cand
	for j := range ix.Sets {
		if j == i {
			continue
		}
		s := interLen(ix.Sets[i], ix.Sets[j])
		if s == 0 {
			continue
		}
		u := ix.Sets[i].Len() + ix.Sets[j].Len() - s
		cs = append(cs, cand{j, float64(s) / float64(u), s, u})
	}
	sort.Slice(cs, func(a, b int) bool {
		if cs[a].score != cs[b].score {
			return cs[a].score > cs[b].score
		}
		if cs[a].shared != cs[b].shared {
			return cs[a].shared > cs[b].shared
		}
		return ix.IDs[cs[a].j] < ix.IDs[cs[b].j]
	})
	var out []Neighbor
	for _, c := range cs[:min(len(cs), ix.K)] {
		out = append(out, Neighbor{Song: int32(c.j), Shared: uint8(c.shared), Union: uint8(c.union)})
	}
	return out
}

// randomIndex draws n songs over features 0..features-1 with skewed
// popularity (feature ≈ features·u³), so that posting lists differ in length.
// Their sizes are 3–8.
func randomIndex(seed uint64, n, k, features int) *Index {
	return drawIndex(seed, n, k, features, func(r *rand.Rand) int { return 3 + r.IntN(6) })
}

func drawIndex(seed uint64, n, k, features int, size func(*rand.Rand) int) *Index {
	r := rand.New(rand.NewPCG(seed, 1))
	ix := New(k, 3)
	for i := 0; i < n; i++ {
		var s Set
		for want := size(r); s.Len() < want; {
			u := r.Float64()
			s.Add(int(float64(features) * u * u * u))
		}
		ix.Add(fmt.Sprintf("%032x", r.Uint64()), s)
	}
	return ix
}

func TestAllAndTopKMatchBruteForce(t *testing.T) {
	for _, features := range []int{24, Features} { // 24: many ties and equal sets
		testAgainstBruteForce(t, randomIndex(7, 3000, 10, features))
	}
}

func testAgainstBruteForce(t *testing.T, ix *Index) {
	all := ix.All(nil)
	for i := range ix.Sets {
		want := bruteForce(ix, i)
		if got := ix.TopK(int32(i)); !reflect.DeepEqual(got, want) {
			t.Fatalf("TopK(%d) = %v, want %v", i, got, want)
		}
		if !reflect.DeepEqual(all[i], want) && !(len(all[i]) == 0 && len(want) == 0) {
			t.Fatalf("All()[%d] = %v, want %v", i, all[i], want)
		}
	}
}

// TestUpdateMatchesBruteForce adds songs in batches of several sizes (with
// duplicates inside a batch and a batch applied twice, the first time as if
// storing its result failed) and checks every list against a brute force over
// the final index.
func TestUpdateMatchesBruteForce(t *testing.T) {
	testUpdateAgainstBruteForce(t, randomIndex(11, 600, 10, 24))
}

// TestWideSets: songs of 32 features and more share more features than the
// incremental search counts in its narrow counters (sizes 3–8 and 28–90,
// drawn from all features without skew so that large sets overlap widely).
func TestWideSets(t *testing.T) {
	ix := drawIndex(5, 400, 10, Features, func(r *rand.Rand) int {
		if r.IntN(2) == 0 {
			return 3 + r.IntN(6)
		}
		return 28 + r.IntN(63)
	})
	wide := 0
	for i := range ix.Sets {
		if ix.Sets[i].Len() >= 32 {
			wide++
		}
	}
	if wide < 50 {
		t.Fatalf("only %d sets of 32 features or more", wide)
	}
	testAgainstBruteForce(t, ix)
	testUpdateAgainstBruteForce(t, ix)
}

func testUpdateAgainstBruteForce(t *testing.T, full *Index) {
	for _, batch := range []int{1, 7, 64} {
		ix := New(full.K, full.MinInstruments)
		var lists [][]Neighbor
		apply := func(added []int32) {
			for len(lists) < ix.Len() {
				lists = append(lists, nil)
			}
			for y, l := range ix.Update(added, lists) {
				lists[y] = l
			}
		}
		for lo := 0; lo < len(full.IDs); lo += batch {
			var added []int32
			for i := lo; i < min(lo+batch, len(full.IDs)); i++ {
				j, _ := ix.Add(full.IDs[i], full.Sets[i])
				added = append(added, j, j)
			}
			if lo == 0 {
				if first := ix.Update(added, lists); len(first) != len(added)/2 {
					t.Fatalf("batch %d: the first batch changed %d lists, want only its own %d", batch, len(first), len(added)/2)
				}
			}
			apply(added)
		}
		for i := range ix.Sets {
			if want := bruteForce(ix, i); !reflect.DeepEqual(lists[i], want) && !(len(lists[i]) == 0 && len(want) == 0) {
				t.Fatalf("batch %d: list %d = %v, want %v", batch, i, lists[i], want)
			}
		}
	}
}

func TestMinInstruments(t *testing.T) {
	ix := New(10, 3)
	var s Set
	s.Add(0)
	s.Add(128)
	if _, ok := ix.Add("a", s); ok {
		t.Error("a song with 2 instruments must not take part at minimum 3")
	}
	s.Add(40)
	if _, ok := ix.Add("b", s); !ok || ix.Len() != 1 {
		t.Error("a song with 3 instruments takes part")
	}
	if got := s.Features(); !reflect.DeepEqual(got, []int{0, 40, 128}) {
		t.Errorf("Features() = %v", got)
	}
}
