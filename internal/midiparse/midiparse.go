// Package midiparse turns the bytes of a Standard MIDI File into the instrument
// profile Scale stores: which General MIDI programs (and drums) sound notes, how
// many, and a few descriptive facts about the file.
//
// Semantics (../shared/midi/README.md): a note is a Note On with velocity > 0;
// channel 9 is drums, and all drum notes are one instrument; a melodic note takes
// the program in effect on its channel at its tick (0 if none); formats 0 and 1
// merge tracks on absolute ticks with Program Changes applied before Note Ons at
// equal ticks; format 2 tracks are independent.
//
// The reader is strict in the same places as the reference parser (mido): it
// rejects truncated tracks, missing tracks, running status with no status, data
// bytes over 127, undefined status bytes and malformed meta events, so a corrupt
// file becomes a clear error rather than a guessed profile. The reader is ours,
// not gomidi's (gitlab.com/gomidi/midi/v2), because gomidi's reader is lenient
// where the reference is strict (it skips unknown chunks, reads past chunk ends,
// rejects formats above 2), and its per-message type lookups cost half the parse
// time. The tests write files with gomidi's writer and check every shared
// file against the reference's instrument sets.
package midiparse

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
)

// DrumChannel is the 0-based channel General MIDI reserves for percussion.
const DrumChannel = 9

// MaxFileSize bounds what Parse accepts; real SMFs are far smaller, and the bound
// keeps a hostile object from costing a worker unbounded memory.
const MaxFileSize = 64 << 20

// ErrInvalid marks every error caused by the file's content (as opposed to the
// caller's environment): such a file will never parse, so it is a permanent failure.
var ErrInvalid = errors.New("invalid MIDI file")

// Instrument is one sounding instrument of a song: a GM program on a melodic
// channel, or the drums (channel 9, whatever kit program is set; Program is 0).
type Instrument struct {
	Program uint8
	Drums   bool
	Notes   int
}

// Profile is what Scale keeps of a parsed file.
type Profile struct {
	Format          int
	Tracks          int
	TicksPerQuarter int // 0 when the file uses SMPTE time
	DurationSeconds float64
	InitialBPM      float64
	Instruments     []Instrument // melodic by program, then drums
}

// files recycles the files of finished parses with their buffers (smfFile).
var files = sync.Pool{New: func() any { return new(smfFile) }}

// maxPooledEvents bounds the buffers kept: an outsized file's are dropped.
const maxPooledEvents = 1 << 20

// Parse decodes data and computes its profile. Every error wraps ErrInvalid.
// It is safe for concurrent use.
func Parse(data []byte) (Profile, error) {
	if len(data) > MaxFileSize {
		return Profile{}, fmt.Errorf("%w: %d bytes is over the %d byte limit", ErrInvalid, len(data), MaxFileSize)
	}
	f := files.Get().(*smfFile)
	defer f.release()
	if err := f.read(data); err != nil {
		return Profile{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return f.profile()
}

// release gives f back to the pool, unless one of its buffers grew too large.
func (f *smfFile) release() {
	if max(cap(f.notes), cap(f.programs), cap(f.tempos), cap(f.grouped), cap(f.tracks)) <= maxPooledEvents {
		files.Put(f)
	}
}

func (f *smfFile) profile() (Profile, error) {
	p := Profile{Format: f.format, Tracks: len(f.tracks), InitialBPM: 120}
	clk, err := f.clock()
	if err != nil {
		return Profile{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if !clk.smpte {
		p.TicksPerQuarter = f.division
	}
	counts := noteCounts{drums: f.drums}
	if f.format == 2 {
		for i, tr := range f.tracks {
			// A track's own events are in tick order already.
			f.count(&counts, f.notes[tr.notes.start:tr.notes.end], f.programs[tr.programs.start:tr.programs.end], false)
			tempos := f.tempos[tr.tempos.start:tr.tempos.end]
			if i == 0 {
				p.InitialBPM = initialBPM(tempos)
			}
			if tr.messages > 0 {
				p.DurationSeconds = max(p.DurationSeconds, clk.seconds(tempos, tr.lastTick))
			}
		}
	} else {
		merge := len(f.tracks) > 1
		f.count(&counts, f.notes, f.programs, merge)
		// By tick, then track order: the buffer is in track order, and the
		// sort is stable.
		tempos := f.tempos
		if merge {
			slices.SortStableFunc(tempos, func(a, b tempoChange) int { return cmp.Compare(a.tick, b.tick) })
		}
		p.InitialBPM = initialBPM(tempos)
		var last int64
		for _, tr := range f.tracks {
			last = max(last, tr.lastTick)
		}
		p.DurationSeconds = clk.seconds(tempos, last)
	}
	p.Instruments = counts.instruments()
	return p, nil
}

// noteCounts counts notes per melodic program, and drums apart.
type noteCounts struct {
	melodic [128]int
	drums   int
}

// count adds to c the melodic notes of tracks merged on one timeline, by the
// program in effect on their channel at their tick; programs are the tracks'
// Program Changes, track after track, and merge says whether there are
// several tracks to merge. On the merged timeline events go by tick, Program
// Changes before Note Ons at equal ticks, then track order, then position in
// the track; so a note takes the last change on its channel, in that order,
// at or before its tick, and program 0 if there is none. Only the changes
// need ordering: each note looks its program up, in any order.
func (f *smfFile) count(c *noteCounts, notes []note, programs []programChange, merge bool) {
	// The changes grouped by channel, each group in track order (a counting
	// sort into f.grouped), then by tick.
	var at [17]int
	for _, pc := range programs {
		at[pc.channel+1]++
	}
	for ch := 1; ch <= 16; ch++ {
		at[ch] += at[ch-1]
	}
	f.grouped = slices.Grow(f.grouped[:0], len(programs))[:len(programs)]
	var byChannel [16][]programChange
	for ch := range byChannel {
		byChannel[ch] = f.grouped[at[ch]:at[ch]:at[ch+1]]
	}
	for _, pc := range programs {
		byChannel[pc.channel] = append(byChannel[pc.channel], pc)
	}
	for _, pcs := range byChannel {
		if merge { // one track's changes are in tick order already
			slices.SortStableFunc(pcs, func(a, b programChange) int { return cmp.Compare(a.tick, b.tick) })
		}
	}
	for _, n := range notes {
		pcs := byChannel[n.channel]
		if len(pcs) == 0 {
			c.melodic[0]++
			continue
		}
		// The first change after the note's tick; the one before it applies.
		i := sort.Search(len(pcs), func(i int) bool { return pcs[i].tick > n.tick })
		if i == 0 {
			c.melodic[0]++
		} else {
			c.melodic[pcs[i-1].program]++
		}
	}
}

func (c *noteCounts) instruments() []Instrument {
	var out []Instrument
	for prog, n := range c.melodic {
		if n > 0 {
			out = append(out, Instrument{Program: uint8(prog), Notes: n})
		}
	}
	if c.drums > 0 {
		out = append(out, Instrument{Drums: true, Notes: c.drums})
	}
	return out
}

// initialBPM is the tempo in effect at tick 0: the last change at tick 0 in
// merged order, 120 BPM if none.
func initialBPM(tempos []tempoChange) float64 {
	bpm := 120.0
	for _, t := range tempos {
		if t.tick != 0 {
			break
		}
		if t.usecPerQuarter > 0 {
			bpm = 60e6 / float64(t.usecPerQuarter)
		}
	}
	return bpm
}

// clock converts ticks to seconds for a file's division.
type clock struct {
	smpte       bool
	ppq         float64 // metric ticks per quarter note
	ticksPerSec float64 // SMPTE: frames per second × ticks per frame
}

func (f *smfFile) clock() (clock, error) {
	if f.division&0x8000 != 0 {
		fps := float64(256 - f.division>>8)
		if fps == 29 {
			fps = 29.97 // drop-frame
		}
		tpf := float64(f.division & 0xFF)
		if tpf == 0 {
			return clock{}, errors.New("SMPTE division with 0 ticks per frame")
		}
		return clock{smpte: true, ticksPerSec: fps * tpf}, nil
	}
	if f.division == 0 {
		return clock{}, errors.New("division of 0 ticks per quarter note")
	}
	return clock{ppq: float64(f.division)}, nil
}

// seconds is the time of tick over the tempo map (ignored under SMPTE time).
func (c clock) seconds(tempos []tempoChange, tick int64) float64 {
	if c.smpte {
		return float64(tick) / c.ticksPerSec
	}
	var secs float64
	var at int64
	usec := uint32(500000)
	for _, t := range tempos {
		if t.tick > tick {
			break
		}
		secs += float64(t.tick-at) * float64(usec) / 1e6 / c.ppq
		at, usec = t.tick, t.usecPerQuarter
	}
	return secs + float64(tick-at)*float64(usec)/1e6/c.ppq
}
