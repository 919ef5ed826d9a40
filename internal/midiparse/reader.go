package midiparse

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// maxMessageLength bounds one SysEx or meta payload, as the reference does.
const maxMessageLength = 1_000_000

// errTruncated is returned when the data ends inside a chunk or an event.
var errTruncated = errors.New("truncated: data ends inside a chunk or event")

// smfFile is a file being read. Its buffers hold every track's events, track
// after track (each track knows its share), and are reused by later parses
// (see Parse): they are most of the garbage a busy worker would make.
type smfFile struct {
	format   int
	division int // raw header division word
	tracks   []track
	notes    []note          // the melodic Note Ons
	programs []programChange // the Program Changes
	tempos   []tempoChange   // the tempo changes
	drums    int             // Note Ons on the drum channel: no program to look up
	grouped  []programChange // noteCounts.add's buffer: the changes by channel
}

type track struct {
	notes, programs, tempos span  // the track's share of the file's events, each in tick order
	lastTick                int64 // absolute tick of the track's last message
	messages                int
}

// span is a track's share of one of the file's event buffers.
type span struct{ start, end int }

// programChange is a Program Change on a track's timeline.
type programChange struct {
	tick    int64
	channel uint8
	program uint8
}

// note is a sounding Note On on a melodic channel.
type note struct {
	tick    int64
	channel uint8
}

type tempoChange struct {
	tick           int64
	usecPerQuarter uint32
}

// reader walks the file bytes; pos is the offset of the next unread byte.
type reader struct {
	data []byte
	pos  int
}

func (r *reader) byte() (byte, error) {
	if r.pos >= len(r.data) {
		return 0, errTruncated
	}
	b := r.data[r.pos]
	r.pos++
	return b, nil
}

func (r *reader) bytes(n int) ([]byte, error) {
	if n > maxMessageLength {
		return nil, fmt.Errorf("message length %d at byte %d exceeds %d", n, r.pos, maxMessageLength)
	}
	if n > len(r.data)-r.pos {
		return nil, errTruncated
	}
	b := r.data[r.pos : r.pos+n]
	r.pos += n
	return b, nil
}

// varint reads a variable-length quantity. SMF allows 4 bytes; longer ones are
// accepted while they fit, as the reference accepts them.
func (r *reader) varint() (int64, error) {
	var v int64
	for i := 0; ; i++ {
		b, err := r.byte()
		if err != nil {
			return 0, err
		}
		if i == 8 {
			return 0, fmt.Errorf("variable-length quantity at byte %d is longer than 8 bytes", r.pos)
		}
		v = v<<7 | int64(b&0x7F)
		if b < 0x80 {
			return v, nil
		}
	}
}

func (r *reader) chunkHeader() (id string, size uint32, err error) {
	h, err := r.bytes(8)
	if err != nil {
		return "", 0, err
	}
	return string(h[:4]), binary.BigEndian.Uint32(h[4:]), nil
}

// read reads data into f, whose buffers it empties first and then reuses.
func (f *smfFile) read(data []byte) error {
	*f = smfFile{tracks: f.tracks[:0], notes: f.notes[:0], programs: f.programs[:0], tempos: f.tempos[:0], grouped: f.grouped[:0]}
	r := &reader{data: data}
	id, size, err := r.chunkHeader()
	if err != nil || id != "MThd" {
		return errors.New("no MThd header: not a Standard MIDI File")
	}
	header := r.data[r.pos:min(len(r.data), r.pos+int(min(size, uint32(len(r.data)))))]
	if len(header) < 6 {
		return errTruncated
	}
	r.pos += len(header)
	f.format = int(binary.BigEndian.Uint16(header[0:]))
	f.division = int(binary.BigEndian.Uint16(header[4:]))
	// The track count is read as a signed 16-bit number, like the reference does.
	declared := int(int16(binary.BigEndian.Uint16(header[2:])))
	for i := 0; i < declared; i++ {
		tr, err := r.track(f)
		if err != nil {
			return fmt.Errorf("track %d of %d: %w", i+1, declared, err)
		}
		f.tracks = append(f.tracks, tr)
	}
	return nil
}

// messageLength is the length, status byte included, of the non-SysEx, non-meta
// messages; 0 marks an undefined status.
var messageLength = func() (l [256]int) {
	for s := 0x80; s < 0xF0; s++ {
		l[s] = 3
		if s&0xF0 == 0xC0 || s&0xF0 == 0xD0 {
			l[s] = 2
		}
	}
	l[0xF1], l[0xF2], l[0xF3] = 2, 3, 2
	for _, s := range []int{0xF6, 0xF8, 0xFA, 0xFB, 0xFC, 0xFE} {
		l[s] = 1
	}
	return l
}()

// track reads one MTrk chunk, appending its notes to f. Like the reference, it
// stops when the bytes read equal the declared length exactly; an event that
// runs past the declared end keeps reading, and the file then fails further on.
func (r *reader) track(f *smfFile) (track, error) {
	tr := track{notes: span{start: len(f.notes)}, programs: span{start: len(f.programs)}, tempos: span{start: len(f.tempos)}}
	id, size, err := r.chunkHeader()
	if err != nil {
		return tr, err
	}
	if id != "MTrk" {
		return tr, fmt.Errorf("expected an MTrk chunk, found %q", printable(id))
	}
	start := r.pos
	var tick int64
	var lastStatus byte // 0: none yet
	var msg [3]byte
	for int64(r.pos-start) != int64(size) {
		if r.pos < len(r.data) && r.data[r.pos] < 0x80 {
			// Most delta times are one byte: read them without varint's loop.
			tick += int64(r.data[r.pos])
			r.pos++
		} else {
			delta, err := r.varint()
			if err != nil {
				return tr, err
			}
			tick += delta
		}
		at := r.pos
		status, err := r.byte()
		if err != nil {
			return tr, err
		}
		var peek []byte
		if status < 0x80 {
			if lastStatus == 0 {
				return tr, fmt.Errorf("running status with no previous status at byte %d", at)
			}
			msg[1] = status
			peek = msg[1:2]
			status = lastStatus
		} else if status != 0xFF { // meta events leave running status alone
			lastStatus = status
		}
		tr.messages++
		tr.lastTick = tick
		switch {
		case status == 0xFF:
			if err := r.meta(f, tick); err != nil {
				return tr, err
			}
		case status == 0xF0 || status == 0xF7:
			if err := r.sysex(); err != nil {
				return tr, err
			}
		default:
			n := messageLength[status]
			if n == 0 {
				return tr, fmt.Errorf("undefined status byte 0x%02X at byte %d", status, at)
			}
			need := n - 1 - len(peek)
			if need < 0 {
				return tr, fmt.Errorf("running status data byte after 0x%02X, which takes no data, at byte %d", status, at)
			}
			if need > len(r.data)-r.pos {
				return tr, errTruncated
			}
			// At most two data bytes: moved one by one, not through bytes and
			// copy, which were a quarter of all parse time.
			msg[0] = status
			for k := range need {
				msg[1+len(peek)+k] = r.data[r.pos+k]
			}
			r.pos += need
			if n > 1 && (msg[1]|msg[n-1])&0x80 != 0 {
				b := msg[1]
				if b <= 0x7F {
					b = msg[n-1]
				}
				return tr, fmt.Errorf("data byte 0x%02X out of range 0..127 at byte %d", b, at)
			}
			f.channelMessage(msg[:n], tick)
		}
	}
	tr.notes.end, tr.programs.end, tr.tempos.end = len(f.notes), len(f.programs), len(f.tempos)
	return tr, nil
}

// channelMessage records Program Changes and sounding Note Ons (a Note On with
// velocity 0 is a Note Off). msg is a complete message whose data bytes are
// checked. It dispatches on the status byte itself: asking gomidi's
// Message.GetNoteStart and GetProgramChange in turn derived each message's type
// up to four times, which was half of all parse time (a profile of the full
// pipeline: 10.6 % of the machine's CPU against 21.4 % for Parse), and every
// other kind of channel message is skipped without being looked at.
func (f *smfFile) channelMessage(msg []byte, tick int64) {
	channel := msg[0] & 0x0F
	switch msg[0] & 0xF0 {
	case 0x90:
		if msg[2] == 0 {
			return
		}
		if channel == DrumChannel {
			f.drums++
		} else {
			f.notes = append(f.notes, note{tick: tick, channel: channel})
		}
	case 0xC0:
		f.programs = append(f.programs, programChange{tick: tick, channel: channel, program: msg[1]})
	}
}

// sysex skips a SysEx (F0) or escape (F7) event, checking its data bytes the way
// the reference does: a leading F0 and a trailing F7 are framing, the rest must be
// 7-bit.
func (r *reader) sysex() error {
	at := r.pos
	n, err := r.varint()
	if err != nil {
		return err
	}
	if n > maxMessageLength {
		return fmt.Errorf("SysEx length %d at byte %d exceeds %d", n, at, maxMessageLength)
	}
	body, err := r.bytes(int(n))
	if err != nil {
		return err
	}
	if len(body) > 0 && body[0] == 0xF0 {
		body = body[1:]
	}
	if len(body) > 0 && body[len(body)-1] == 0xF7 {
		body = body[:len(body)-1]
	}
	for _, b := range body {
		if b > 0x7F {
			return fmt.Errorf("SysEx data byte 0x%02X out of range 0..127 at byte %d", b, at)
		}
	}
	return nil
}

// meta reads a meta event, records tempo changes, and validates the payloads the
// reference decodes (a file whose key signature cannot be decoded is rejected).
func (r *reader) meta(f *smfFile, tick int64) error {
	at := r.pos - 1
	typ, err := r.byte()
	if err != nil {
		return err
	}
	n, err := r.varint()
	if err != nil {
		return err
	}
	if n > maxMessageLength {
		return fmt.Errorf("meta event length %d at byte %d exceeds %d", n, at, maxMessageLength)
	}
	d, err := r.bytes(int(n))
	if err != nil {
		return err
	}
	short := func(need int, name string) error {
		if len(d) < need {
			return fmt.Errorf("%s meta event at byte %d has %d data bytes, needs %d", name, at, len(d), need)
		}
		return nil
	}
	switch typ {
	case 0x00:
		if len(d) == 1 {
			return short(2, "sequence number")
		}
	case 0x20:
		return short(1, "channel prefix")
	case 0x51:
		if err := short(3, "set tempo"); err != nil {
			return err
		}
		f.tempos = append(f.tempos, tempoChange{tick: tick, usecPerQuarter: uint32(d[0])<<16 | uint32(d[1])<<8 | uint32(d[2])})
	case 0x54:
		if err := short(5, "SMPTE offset"); err != nil {
			return err
		}
		if d[1] > 59 || d[2] > 59 || d[4] > 99 {
			return fmt.Errorf("SMPTE offset at byte %d out of range (minutes %d, seconds %d, subframes %d)", at, d[1], d[2], d[4])
		}
	case 0x58:
		return short(4, "time signature")
	case 0x59:
		if err := short(2, "key signature"); err != nil {
			return err
		}
		if sf := int8(d[0]); sf < -7 || sf > 7 || d[1] > 1 {
			return fmt.Errorf("key signature at byte %d cannot be decoded (%d sharps/flats, mode %d)", at, sf, d[1])
		}
	}
	return nil
}

func printable(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7E {
			b[i] = '.'
		}
	}
	return string(b)
}
