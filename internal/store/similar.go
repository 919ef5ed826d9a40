package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// InstrumentSets calls fn with every song's instrument ids, in song id order.
func (s *Store) InstrumentSets(ctx context.Context, fn func(songID string, instruments []int16) error) error {
	rows, err := s.Pool.Query(ctx, `SELECT song_id, array_agg(instrument ORDER BY instrument)
		FROM song_instruments GROUP BY song_id ORDER BY song_id`)
	if err != nil {
		return fmt.Errorf("reading instrument sets: %w", err)
	}
	defer rows.Close()
	var id string
	var set []int16
	_, err = pgx.ForEachRow(rows, []any{&id, &set}, func() error { return fn(id, set) })
	if err != nil {
		return fmt.Errorf("reading instrument sets: %w", err)
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

// ReplaceSimilar rewrites the lists of the given songs in one transaction.
func (s *Store) ReplaceSimilar(ctx context.Context, lists map[string][]Similar) error {
	return pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		ids := make([]string, 0, len(lists))
		for id := range lists {
			ids = append(ids, id)
		}
		if _, err := tx.Exec(ctx, "DELETE FROM similar_songs WHERE song = ANY($1)", ids); err != nil {
			return fmt.Errorf("replacing similarity lists: %w", err)
		}
		return copySimilar(ctx, tx, lists)
	})
}

// RebuildSimilar replaces every list (the table is emptied first) in one transaction.
func (s *Store) RebuildSimilar(ctx context.Context, lists map[string][]Similar) error {
	return pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "TRUNCATE similar_songs"); err != nil {
			return fmt.Errorf("rebuilding similarity lists: %w", err)
		}
		return copySimilar(ctx, tx, lists)
	})
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
