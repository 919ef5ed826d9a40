package synth

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"sort"

	"gitlab.com/gomidi/midi/v2"
	"gitlab.com/gomidi/midi/v2/smf"
)

// File is one generated MIDI file and what a parser must find in it.
type File struct {
	Song    Song
	Data    []byte
	MD5     string
	Notes   map[int]int // instrument id (128: drums) → Note Ons with velocity > 0
	Corrupt string      // "" for a valid file, else how it was damaged
}

// FileGenerator writes real Standard MIDI Files with gomidi. File i depends
// only on the seed and i, so files can be written in any order and in parallel.
type FileGenerator struct {
	songs       *Generator
	st          Stats
	seed        uint64
	corruptRate float64
}

// NewFileGenerator returns a generator; corruptRate is the share of damaged files.
func NewFileGenerator(st Stats, seed uint64, corruptRate float64) *FileGenerator {
	return &FileGenerator{songs: NewGenerator(st, seed), st: st, seed: seed, corruptRate: corruptRate}
}

// noteBytes is about what one note costs in a file (delta, Note On, delta, Note Off).
const noteBytes = 8

// File writes file i. It is safe for concurrent use.
func (g *FileGenerator) File(i uint64) (File, error) {
	r := rand.New(rand.NewPCG(g.seed, i))
	s := g.songs.draw(r)
	size := g.st.Sizes[r.IntN(len(g.st.Sizes))]
	format := g.st.Formats[r.IntN(len(g.st.Formats))]
	if format > 1 {
		format = 1
	}
	ppq := 480
	if len(g.st.PPQs) > 0 {
		ppq = g.st.PPQs[r.IntN(len(g.st.PPQs))]
	}
	var melodic []int
	drums := false
	for _, in := range s.Instruments {
		if in == 128 {
			drums = true
		} else if len(melodic) < 15 { // 15 melodic channels besides the drums
			melodic = append(melodic, in)
		}
	}
	s.Instruments = melodic
	if drums {
		s.Instruments = append(s.Instruments, 128)
	}
	voices := len(s.Instruments)
	total := max(size/noteBytes, voices)
	f := File{Song: s, Notes: map[int]int{}}

	type ev struct {
		tick int64
		msg  []byte
	}
	tracks := make([][]ev, voices)
	bpm := 60 + r.Float64()*120
	for v, inst := range s.Instruments {
		ch := uint8(v)
		if v >= 9 {
			ch++ // channel 9 is the drums'
		}
		if inst == 128 {
			ch = 9
		} else {
			tracks[v] = append(tracks[v], ev{0, midi.ProgramChange(ch, uint8(inst))})
		}
		n := max(1, total/voices+r.IntN(total/voices/4+1))
		step := int64(ppq / 4 * (1 + r.IntN(4)))
		var tick int64
		for i := 0; i < n; i++ {
			key := uint8(36 + r.IntN(48))
			tracks[v] = append(tracks[v], ev{tick, midi.NoteOn(ch, key, uint8(1+r.IntN(126)))}, ev{tick + step/2, midi.NoteOff(ch, key)})
			tick += step
		}
		f.Notes[inst] += n
	}
	file := smf.NewSMF1()
	if format == 0 {
		file = smf.New()
	}
	file.TimeFormat = smf.MetricTicks(uint16(ppq))
	addTrack := func(evs []ev, withTempo bool) error {
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].tick < evs[j].tick })
		var tr smf.Track
		if withTempo {
			tr.Add(0, smf.MetaTempo(bpm))
		}
		var last int64
		for _, e := range evs {
			tr.Add(uint32(e.tick-last), e.msg)
			last = e.tick
		}
		tr.Close(0)
		return file.Add(tr)
	}
	if format == 0 {
		var all []ev
		for _, t := range tracks {
			all = append(all, t...)
		}
		if err := addTrack(all, true); err != nil {
			return f, err
		}
	} else {
		if err := addTrack(nil, true); err != nil {
			return f, err
		}
		for _, t := range tracks {
			if err := addTrack(t, false); err != nil {
				return f, err
			}
		}
	}
	var buf bytes.Buffer
	if _, err := file.WriteTo(&buf); err != nil {
		return f, fmt.Errorf("writing SMF: %w", err)
	}
	f.Data = buf.Bytes()
	if r.Float64() < g.corruptRate {
		if r.IntN(2) == 0 {
			f.Data = f.Data[:14+r.IntN(len(f.Data)-14)] // cut inside the tracks
			f.Corrupt = "truncated"
		} else {
			f.Data = append([]byte("RIFF"), f.Data[4:]...) // no MThd
			f.Corrupt = "no header"
		}
		f.Notes = nil
	}
	sum := md5.Sum(f.Data)
	f.MD5 = hex.EncodeToString(sum[:])
	return f, nil
}
