package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

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

// Similar is one row of a song's similarity list.
type Similar struct {
	Rank   int
	Other  string
	Score  float64
	Shared []int16
}

// WriteSimilar writes entries of songs' lists, each at its rank, replacing
// what those ranks held, in one statement, and bumps the version. Entries not
// given keep their rows: an incremental update sends only the ranks that
// changed (a list never shrinks when songs are added). Rewriting a rank in
// place is a HOT update (no index entry changes), far cheaper than deleting and
// inserting the list. It writes through the lease's session: only the lease
// holder writes lists.
func (l *Lease) WriteSimilar(ctx context.Context, lists map[string][]Similar) error {
	var songs, others, shared []string
	var ranks []int16
	var scores []float64
	for song, l := range lists {
		for _, e := range l {
			songs, ranks, others, scores = append(songs, song), append(ranks, int16(e.Rank)), append(others, e.Other), append(scores, e.Score)
			shared = append(shared, smallintArray(e.Shared))
		}
	}
	if len(songs) == 0 {
		return nil
	}
	var b pgx.Batch
	b.Queue(`INSERT INTO similar_songs (song, rank, other, score, shared)
		SELECT song, rank, other, score, shared::smallint[]
		FROM unnest($1::text[], $2::smallint[], $3::text[], $4::float8[], $5::text[]) AS u(song, rank, other, score, shared)
		ON CONFLICT (song, rank) DO UPDATE SET other = EXCLUDED.other, score = EXCLUDED.score, shared = EXCLUDED.shared`,
		songs, ranks, others, scores, shared)
	b.Queue(bumpSimilarVersion)
	err := l.inTx(ctx, func(tx pgx.Tx) error { return tx.SendBatch(ctx, &b).Close() })
	if err != nil {
		return fmt.Errorf("writing %d similarity entries: %w", len(songs), err)
	}
	return nil
}

// bumpSimilarVersion runs in every transaction that writes similar_songs.
const bumpSimilarVersion = "UPDATE similar_songs_version SET version = version + 1"

// smallintArray is the Postgres literal of ids: {1,2,3}.
func smallintArray(ids []int16) string {
	b := make([]byte, 0, 2+4*len(ids))
	b = append(b, '{')
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(id), 10)
	}
	return string(append(b, '}'))
}

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
	return forEachSongArray(ctx, s, "similarity lists", "SELECT song, array_agg(other ORDER BY rank) FROM similar_songs GROUP BY song", fn)
}

// RebuildSimilar replaces every list (the table is emptied first) and records
// the settings they were computed with, in one transaction, then analyzes the
// table: until autovacuum gets to it, the planner would otherwise take the
// freshly filled table for the empty one it saw and scan all of it for every
// API request (measured: 11 req/s instead of 10,000 right after a Lakh-size
// rebuild). Like WriteSimilar it writes through the lease's session.
func (l *Lease) RebuildSimilar(ctx context.Context, lists map[string][]Similar, p SimilarityParams) error {
	err := l.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "TRUNCATE similar_songs"); err != nil {
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
		return copySimilar(ctx, tx, lists)
	})
	if err != nil {
		return err
	}
	l.mu.Lock()
	_, err = l.conn.Exec(ctx, "ANALYZE similar_songs")
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("analyzing similarity lists: %w", err)
	}
	return nil
}

func copySimilar(ctx context.Context, tx pgx.Tx, lists map[string][]Similar) error {
	rows := make([][]any, 0, len(lists)*10)
	for song, l := range lists {
		for _, e := range l {
			rows = append(rows, []any{song, int16(e.Rank), e.Other, e.Score, e.Shared})
		}
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"similar_songs"}, []string{"song", "rank", "other", "score", "shared"}, pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("writing similarity lists: %w", err)
	}
	return nil
}
