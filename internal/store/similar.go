package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"

	"github.com/jackc/pgx/v5"
)

// InstrumentSets calls fn with every song's instrument ids, in song id order.
func (s *Store) InstrumentSets(ctx context.Context, fn func(songID string, instruments []int16) error) error {
	return forEachSongArray(ctx, s, "instrument sets", `SELECT song_id, array_agg(instrument ORDER BY instrument)
		FROM song_instruments GROUP BY song_id ORDER BY song_id`, fn)
}

// forEachSongArray runs query, whose rows are a song and an array, and calls
// fn with each row; what names the data in errors.
func forEachSongArray[T any](ctx context.Context, s *Store, what, query string, fn func(song string, values []T) error) error {
	rows, err := s.Pool.Query(ctx, query)
	if err != nil {
		return fmt.Errorf("reading %s: %w", what, err)
	}
	defer rows.Close()
	var song string
	var values []T
	_, err = pgx.ForEachRow(rows, []any{&song, &values}, func() error { return fn(song, values) })
	if err != nil {
		return fmt.Errorf("reading %s: %w", what, err)
	}
	return nil
}

// Similar is one entry of a song's similarity list.
type Similar struct {
	Other  string
	Score  float64
	Shared []int16 // instruments both songs use
}

// WriteSimilar replaces the given songs' lists, whole, and bumps the version;
// other lists keep their rows. A list is one row: with the table's spare room
// per page a rewritten list is usually a heap-only (HOT) update, no index
// entry changes. The lists are copied in binary into a temporary table of the
// session, then upserted from it in one statement: sent as one JSON document
// instead, Postgres spent about 20 µs per list turning the document's arrays
// into its own, several times the write itself (docs/benchmarks.md). It
// writes through the lease's session: only the lease holder writes lists.
func (l *Lease) WriteSimilar(ctx context.Context, lists map[string][]Similar) error {
	if len(lists) == 0 {
		return nil
	}
	err := l.inTx(ctx, func(tx pgx.Tx) error {
		// Emptied at every commit; created once per session (a notice
		// answers the later CREATEs).
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS similar_lists_stage
			(LIKE similar_lists) ON COMMIT DELETE ROWS`); err != nil {
			return err
		}
		if err := copySimilar(ctx, tx, "similar_lists_stage", lists); err != nil {
			return err
		}
		var b pgx.Batch
		b.Queue(`INSERT INTO similar_lists (song, others, scores, shared, shared_counts)
			SELECT song, others, scores, shared, shared_counts FROM similar_lists_stage
			ON CONFLICT (song) DO UPDATE SET others = EXCLUDED.others, scores = EXCLUDED.scores,
				shared = EXCLUDED.shared, shared_counts = EXCLUDED.shared_counts`)
		b.Queue(bumpSimilarVersion)
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		return fmt.Errorf("writing %d similarity lists: %w", len(lists), err)
	}
	return nil
}

// bumpSimilarVersion runs in every transaction that writes similar_lists.
const bumpSimilarVersion = "UPDATE similar_songs_version SET version = version + 1"

// SimilarityParams are the settings similarity lists are computed with.
type SimilarityParams struct {
	K, MinInstruments int
}

// StoredSimilarityParams returns the settings the stored lists were computed
// with; ok is false when no rebuild has recorded any.
func (s *Store) StoredSimilarityParams(ctx context.Context) (p SimilarityParams, ok bool, err error) {
	err = s.Pool.QueryRow(ctx, "SELECT k, min_instruments FROM similarity_settings").Scan(&p.K, &p.MinInstruments)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, false, nil
	}
	if err != nil {
		return p, false, fmt.Errorf("reading similarity settings: %w", err)
	}
	return p, true, nil
}

// SimilarLists calls fn with every stored list: the song and the other songs
// by rank.
func (s *Store) SimilarLists(ctx context.Context, fn func(song string, others []string) error) error {
	return forEachSongArray(ctx, s, "similarity lists", "SELECT song, others FROM similar_lists", fn)
}

// RebuildSimilar replaces every list (the table is emptied first) and records
// the settings they were computed with, in one transaction, then analyzes the
// table: until autovacuum gets to it, the planner would otherwise take the
// freshly filled table for the empty one it saw and scan all of it for every
// API request (measured: 11 req/s instead of 10,000 right after a Lakh-size
// rebuild). Like WriteSimilar it writes through the lease's session.
func (l *Lease) RebuildSimilar(ctx context.Context, lists map[string][]Similar, p SimilarityParams) error {
	err := l.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "TRUNCATE similar_lists"); err != nil {
			return fmt.Errorf("rebuilding similarity lists: %w", err)
		}
		_, err := tx.Exec(ctx, `INSERT INTO similarity_settings (k, min_instruments) VALUES ($1, $2)
			ON CONFLICT (only_row) DO UPDATE SET k = EXCLUDED.k, min_instruments = EXCLUDED.min_instruments`, p.K, p.MinInstruments)
		if err != nil {
			return fmt.Errorf("recording similarity settings: %w", err)
		}
		if _, err := tx.Exec(ctx, bumpSimilarVersion); err != nil {
			return fmt.Errorf("rebuilding similarity lists: %w", err)
		}
		return copySimilar(ctx, tx, "similar_lists", lists)
	})
	if err != nil {
		return err
	}
	l.mu.Lock()
	_, err = l.conn.Exec(ctx, "ANALYZE similar_lists")
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("analyzing similarity lists: %w", err)
	}
	return nil
}

// copySimilar copies lists into table, binary: similar_lists or a table like it.
// The stream is written here rather than by pgx.CopyFrom, whose encoding of
// each array through its type map was 12 % of the similarity service's CPU
// (a profile of a Lakh-size run).
func copySimilar(ctx context.Context, tx pgx.Tx, table string, lists map[string][]Similar) error {
	r := &listStream{lists: lists, songs: slices.Collect(maps.Keys(lists)), buf: append([]byte(nil), copyHeader...)}
	sql := `COPY ` + pgx.Identifier{table}.Sanitize() + ` (song, others, scores, shared, shared_counts) FROM STDIN (FORMAT binary)`
	if _, err := tx.Conn().PgConn().CopyFrom(ctx, r, sql); err != nil {
		return fmt.Errorf("copying %d lists into %s: %w", len(lists), table, err)
	}
	return nil
}

// listStream is a binary COPY stream of lists, encoded as it is read (a
// rebuild copies every list at once).
type listStream struct {
	lists map[string][]Similar
	songs []string // the lists' songs; next is the first not yet encoded
	next  int
	buf   []byte // encoded, not yet read from off on
	off   int
}

func (r *listStream) Read(p []byte) (int, error) {
	for r.off == len(r.buf) {
		if r.next > len(r.songs) {
			return 0, io.EOF
		}
		r.buf, r.off = r.buf[:0], 0
		for ; r.next < len(r.songs) && len(r.buf) < 64<<10; r.next++ {
			r.buf = appendListRow(r.buf, r.songs[r.next], r.lists[r.songs[r.next]])
		}
		if r.next == len(r.songs) {
			r.buf = binary.BigEndian.AppendUint16(r.buf, 0xFFFF) // the end of the rows
			r.next++
		}
	}
	n := copy(p, r.buf[r.off:])
	r.off += n
	return n, nil
}

// copyHeader opens a binary COPY stream: its signature, no flags, no extension.
var copyHeader = []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00")

// The element types of the lists' arrays.
const (
	oidInt2   = 21
	oidText   = 25
	oidFloat8 = 701
)

// appendListRow appends a list as one row of similar_lists in COPY's binary
// format: the song, then the others, their scores, every entry's shared
// instruments one after another, and how many each entry has.
func appendListRow(b []byte, song string, list []Similar) []byte {
	b = binary.BigEndian.AppendUint16(b, 5)
	b = appendText(b, song)
	b, at := appendArrayHeader(b, oidText, len(list))
	for _, e := range list {
		b = appendText(b, e.Other)
	}
	b = endField(b, at)
	b, at = appendArrayHeader(b, oidFloat8, len(list))
	for _, e := range list {
		b = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32(b, 8), math.Float64bits(e.Score))
	}
	b = endField(b, at)
	shared := 0
	for _, e := range list {
		shared += len(e.Shared)
	}
	b, at = appendArrayHeader(b, oidInt2, shared)
	for _, e := range list {
		for _, v := range e.Shared {
			b = appendInt2(b, v)
		}
	}
	b = endField(b, at)
	b, at = appendArrayHeader(b, oidInt2, len(list))
	for _, e := range list {
		b = appendInt2(b, int16(len(e.Shared)))
	}
	return endField(b, at)
}

// appendArrayHeader opens a field holding a one-dimensional array of n
// elements of type elem, none null: the elements follow, each with its
// length, and endField(b, at) closes the field.
func appendArrayHeader(b []byte, elem uint32, n int) (_ []byte, at int) {
	at = len(b)
	b = append(b, 0, 0, 0, 0) // the field's length, set by endField
	if n == 0 {
		b = binary.BigEndian.AppendUint32(b, 0) // no dimensions
		b = binary.BigEndian.AppendUint32(b, 0) // no nulls
		return binary.BigEndian.AppendUint32(b, elem), at
	}
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, elem)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	return binary.BigEndian.AppendUint32(b, 1), at // the lower bound
}

// endField sets the length of the field opened at at to what follows it.
func endField(b []byte, at int) []byte {
	binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at-4))
	return b
}

// appendText appends a text field or element: its length, then its bytes.
func appendText(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint32(b, uint32(len(s))), s...)
}

func appendInt2(b []byte, v int16) []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint32(b, 2), uint16(v))
}
