// Package synth generates seeded, deterministic synthetic songs whose statistics
// follow a real corpus: the distribution of instrument-set sizes, the share of
// songs with drums and the popularity of each GM program are measured on the
// corpus (normally ../shared/midi) and sampled from.
package synth

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"

	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/midiparse"
)

// Stats are the measured distributions.
type Stats struct {
	Songs         int
	SetSizes      []int   // SetSizes[k]: songs with k melodic programs (k ≥ 1)
	DrumShare     float64 // share of songs with drums
	ProgramWeight [128]float64
	Sizes         []int // bytes of each usable file
	Formats       []int // SMF format of each
	PPQs          []int // ticks per quarter note of each metric-timed file
}

// Measure parses every MIDI file under root and collects the statistics of
// those that parse and have at least one melodic instrument.
func Measure(root string) (Stats, error) {
	var st Stats
	var drums int
	files, err := corpus.Files(root)
	if err != nil {
		return st, err
	}
	for _, rel := range files {
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			return st, err
		}
		p, err := midiparse.Parse(data)
		if err != nil {
			continue
		}
		melodic := 0
		for _, in := range p.Instruments {
			if in.Drums {
				drums++
				continue
			}
			melodic++
			st.ProgramWeight[in.Program]++
		}
		if melodic == 0 || melodic > 40 { // test files listing every program say nothing of songs
			continue
		}
		st.Sizes = append(st.Sizes, len(data))
		st.Formats = append(st.Formats, p.Format)
		if p.TicksPerQuarter > 0 {
			st.PPQs = append(st.PPQs, p.TicksPerQuarter)
		}
		for len(st.SetSizes) <= melodic {
			st.SetSizes = append(st.SetSizes, 0)
		}
		st.SetSizes[melodic]++
		st.Songs++
	}
	if st.Songs == 0 {
		return st, fmt.Errorf("no usable songs under %s", root)
	}
	st.DrumShare = float64(drums) / float64(st.Songs)
	for i := range st.ProgramWeight {
		st.ProgramWeight[i]++ // every program stays possible
	}
	return st, nil
}

// Song is one synthetic song: instrument ids 0–127 are programs, 128 the drums.
type Song struct {
	ID          string
	Name        string
	Instruments []int
}

// Generator draws songs; the same stats and seed give the same songs.
type Generator struct {
	r          *rand.Rand
	st         Stats
	sizeCum    []float64
	programCum []float64
}

// NewGenerator returns a generator.
func NewGenerator(st Stats, seed uint64) *Generator {
	g := &Generator{r: rand.New(rand.NewPCG(seed, 0x5CA1E)), st: st}
	g.sizeCum = cumulative(intsToFloats(st.SetSizes))
	g.programCum = cumulative(st.ProgramWeight[:])
	return g
}

func intsToFloats(in []int) []float64 {
	out := make([]float64, len(in))
	for i, v := range in {
		out[i] = float64(v)
	}
	return out
}

func cumulative(w []float64) []float64 {
	c := make([]float64, len(w))
	var sum float64
	for i, v := range w {
		sum += v
		c[i] = sum
	}
	return c
}

func pick(r *rand.Rand, cum []float64) int {
	x := r.Float64() * cum[len(cum)-1]
	return sort.SearchFloat64s(cum, x)
}

var words = []string{"Blue", "Night", "River", "Dance", "Summer", "Heart", "Fire", "Rain", "Road", "Dream", "Light",
	"Moon", "City", "Love", "Storm", "Waltz", "Echo", "Gold", "Shadow", "Song", "Train", "Ocean", "Star", "Wild"}

// Next draws one song.
func (g *Generator) Next() Song { return g.draw(g.r) }

// draw draws one song from r; g itself is only read, so draws may run in parallel.
func (g *Generator) draw(r *rand.Rand) Song {
	size := max(pick(r, g.sizeCum), 1)
	seen := map[int]bool{}
	for len(seen) < size {
		seen[pick(r, g.programCum)] = true
	}
	s := Song{ID: fmt.Sprintf("%016x%016x", r.Uint64(), r.Uint64())}
	for p := range seen {
		s.Instruments = append(s.Instruments, p)
	}
	if r.Float64() < g.st.DrumShare {
		s.Instruments = append(s.Instruments, 128)
	}
	sort.Ints(s.Instruments)
	s.Name = fmt.Sprintf("%s %s %s", words[r.IntN(len(words))], words[r.IntN(len(words))], words[r.IntN(len(words))])
	return s
}
