package midiparse

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"gitlab.com/gomidi/midi/v2"
	"gitlab.com/gomidi/midi/v2/smf"
)

type timed struct {
	delta uint32
	msg   []byte
}

// write builds an SMF of the given format with gomidi's writer.
func write(t *testing.T, format uint16, tracks ...[]timed) []byte {
	t.Helper()
	var f *smf.SMF
	switch format {
	case 0:
		f = smf.New()
	case 1:
		f = smf.NewSMF1()
	default:
		f = smf.NewSMF2()
	}
	f.TimeFormat = smf.MetricTicks(96)
	for _, evs := range tracks {
		var tr smf.Track
		for _, e := range evs {
			tr.Add(e.delta, e.msg)
		}
		tr.Close(0)
		if err := f.Add(tr); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := f.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestParseSemantics(t *testing.T) {
	pc := func(d uint32, ch, p uint8) timed { return timed{d, midi.ProgramChange(ch, p)} }
	on := func(d uint32, ch, key, vel uint8) timed { return timed{d, midi.NoteOn(ch, key, vel)} }
	off := func(d uint32, ch, key uint8) timed { return timed{d, midi.NoteOff(ch, key)} }
	tests := []struct {
		name   string
		format uint16
		tracks [][]timed
		want   []Instrument
	}{
		{"no program change means piano", 0, [][]timed{{on(0, 0, 60, 100), off(10, 0, 60)}},
			[]Instrument{{Program: 0, Notes: 1}}},
		{"velocity 0 and note off do not count", 0, [][]timed{{on(0, 0, 60, 0), off(1, 0, 60)}}, nil},
		{"program in effect at the note's tick", 0, [][]timed{{pc(0, 0, 40), on(0, 0, 60, 90), pc(10, 0, 41), on(0, 0, 62, 90), on(5, 0, 64, 90)}},
			[]Instrument{{Program: 40, Notes: 1}, {Program: 41, Notes: 2}}},
		{"drums are one instrument whatever the kit", 0, [][]timed{{pc(0, 9, 25), on(0, 9, 36, 100), pc(1, 9, 0), on(0, 9, 38, 100)}},
			[]Instrument{{Drums: true, Notes: 2}}},
		{"format 1 shares channel state across tracks", 1, [][]timed{{pc(0, 2, 33)}, {on(10, 2, 40, 80)}},
			[]Instrument{{Program: 33, Notes: 1}}},
		{"format 1 applies program changes first at equal ticks", 1, [][]timed{{on(10, 3, 40, 80)}, {pc(10, 3, 56)}},
			[]Instrument{{Program: 56, Notes: 1}}},
		{"format 1: of changes at one tick, the later track's wins", 1, [][]timed{{on(5, 3, 40, 80), pc(5, 3, 10)}, {pc(10, 3, 20)}, {on(10, 3, 41, 80)}},
			[]Instrument{{Program: 0, Notes: 1}, {Program: 20, Notes: 1}}},
		{"format 1: a later track's change applies from its tick on", 1, [][]timed{{on(0, 5, 40, 80), on(10, 5, 41, 80), on(10, 5, 42, 80)}, {pc(10, 5, 30)}},
			[]Instrument{{Program: 0, Notes: 1}, {Program: 30, Notes: 2}}},
		{"format 2 resets state per track", 2, [][]timed{{pc(0, 4, 73), on(0, 4, 70, 80)}, {on(0, 4, 70, 80)}},
			[]Instrument{{Program: 0, Notes: 1}, {Program: 73, Notes: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(write(t, tt.format, tt.tracks...))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(p.Instruments, tt.want) {
				t.Errorf("instruments = %+v, want %+v", p.Instruments, tt.want)
			}
			if p.Format != int(tt.format) || p.Tracks != len(tt.tracks) || p.TicksPerQuarter != 96 {
				t.Errorf("format/tracks/ppq = %d/%d/%d", p.Format, p.Tracks, p.TicksPerQuarter)
			}
		})
	}
}

func TestParseTiming(t *testing.T) {
	// 96 ticks per quarter: one quarter at 120 BPM (0.5 s), then one at 60 BPM (1 s).
	data := write(t, 0, []timed{
		{0, smf.MetaTempo(120)},
		{0, midi.NoteOn(0, 60, 100)},
		{96, smf.MetaTempo(60)},
		{96, midi.NoteOff(0, 60)},
	})
	p, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if p.InitialBPM != 120 || p.DurationSeconds != 1.5 {
		t.Errorf("bpm %v duration %v, want 120 and 1.5", p.InitialBPM, p.DurationSeconds)
	}
}

func TestParseErrors(t *testing.T) {
	good := write(t, 0, []timed{{0, midi.NoteOn(0, 60, 100)}})
	header := []byte("MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60")
	track := func(body string) []byte {
		b := append([]byte{}, header...)
		b = append(b, 'M', 'T', 'r', 'k', 0, 0, 0, byte(len(body)))
		return append(b, body...)
	}
	tests := []struct {
		name, want string
		data       []byte
	}{
		{"empty", "not a Standard MIDI File", nil},
		{"not midi", "not a Standard MIDI File", []byte("RIFF....WAVEfmt and so on")},
		{"truncated track", "truncated", good[:len(good)-3]},
		{"missing track", "truncated", header},
		{"wrong chunk", "expected an MTrk chunk", append(append([]byte{}, header...), "XXXX\x00\x00\x00\x00"...)},
		{"running status with no status", "running status with no previous status", track("\x00\x3c\x40")},
		{"data byte over 127", "out of range 0..127", track("\x00\x90\x3c\xff")},
		{"undefined status", "undefined status byte 0xF4", track("\x00\xf4")},
		{"bad key signature", "key signature", track("\x00\xff\x59\x02\x09\x00")},
		{"short tempo", "set tempo", track("\x00\xff\x51\x01\x07")},
		{"sysex with 8-bit data", "SysEx data byte", track("\x00\xf0\x03\x41\x90\xf7")},
		{"huge sysex", "exceeds", track("\x00\xf0\x8f\xff\xff\x7f")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.data)
			if err == nil {
				t.Fatal("Parse returned no error")
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want ErrInvalid containing %q", err, tt.want)
			}
		})
	}
}
