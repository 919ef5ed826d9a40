package store

import (
	"context"
	"errors"
	"fmt"

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

// listRow is a list as similar_lists stores it.
type listRow struct {
	Song         string
	Others       []string
	Scores       []float64
	Shared       []int16
	SharedCounts []int16
}

func toListRow(song string, list []Similar) listRow {
	r := listRow{Song: song, Others: make([]string, len(list)), Scores: make([]float64, len(list)),
		Shared: []int16{}, SharedCounts: make([]int16, len(list))}
	for i, e := range list {
		r.Others[i], r.Scores[i], r.SharedCounts[i] = e.Other, e.Score, int16(len(e.Shared))
		r.Shared = append(r.Shared, e.Shared...)
	}
	return r
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
func copySimilar(ctx context.Context, tx pgx.Tx, table string, lists map[string][]Similar) error {
	rows := make([][]any, 0, len(lists))
	for song, l := range lists {
		r := toListRow(song, l)
		rows = append(rows, []any{r.Song, r.Others, r.Scores, r.Shared, r.SharedCounts})
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{table}, []string{"song", "others", "scores", "shared", "shared_counts"}, pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("copying %d lists into %s: %w", len(rows), table, err)
	}
	return nil
}
