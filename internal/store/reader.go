package store

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Reader is the API's view of the database: a pool whose sessions run as the
// SELECT-only scale_reader role in read-only transactions, so that no request
// can change anything whatever its input.
type Reader struct {
	Pool *pgxpool.Pool
}

// OpenReader returns a Reader over url. It does not wait for the server: the
// pool connects on first use, and Ping tells whether it can.
func OpenReader(ctx context.Context, url string) (*Reader, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parsing database URL: %w", err)
	}
	cfg.MaxConns = int32(max(4, 2*runtime.GOMAXPROCS(0)))
	traced(cfg)
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, "SET ROLE scale_reader; SET default_transaction_read_only = on")
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("creating the reader pool: %w", err)
	}
	return &Reader{Pool: pool}, nil
}

// Close closes the pool.
func (r *Reader) Close() { r.Pool.Close() }

// Ping checks that the database answers.
func (r *Reader) Ping(ctx context.Context) error { return r.Pool.Ping(ctx) }

// InstrumentCount is an instrument id with the number of songs using it.
type InstrumentCount struct {
	ID    int
	Songs int64
}

// InstrumentCounts lists every catalog instrument with its song count, by id.
func (r *Reader) InstrumentCounts(ctx context.Context) ([]InstrumentCount, error) {
	rows, err := r.Pool.Query(ctx, `SELECT i.id, count(si.song_id) FROM instruments i
		LEFT JOIN song_instruments si ON si.instrument = i.id GROUP BY i.id ORDER BY i.id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[InstrumentCount])
}

// SongRef is a song in a list.
type SongRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// InstrumentSongs lists up to n songs using instrument inst with ids after
// afterID, by id.
func (r *Reader) InstrumentSongs(ctx context.Context, inst int, afterID string, n int) ([]SongRef, error) {
	rows, err := r.Pool.Query(ctx, `SELECT s.id, s.name FROM song_instruments si JOIN songs s ON s.id = si.song_id
		WHERE si.instrument = $1 AND si.song_id > $2 ORDER BY si.song_id LIMIT $3`, inst, afterID, n)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[SongRef])
}

// SongQuery filters songs: a case-insensitive name substring (empty: any) and
// an instrument (negative: any), after a (name, id) position.
type SongQuery struct {
	Name       string
	Instrument int
	AfterName  string
	AfterID    string // empty: from the start
	Limit      int
}

// Songs lists the songs matching q by name, then id.
func (r *Reader) Songs(ctx context.Context, q SongQuery) ([]SongRef, error) {
	rows, err := r.Pool.Query(ctx, `SELECT s.id, s.name FROM songs s
		WHERE ($1 = '' OR lower(s.name) LIKE $2)
		  AND ($3 < 0 OR EXISTS (SELECT 1 FROM song_instruments si WHERE si.song_id = s.id AND si.instrument = $3))
		  AND ($4 = '' OR (s.name, s.id) > ($5, $4))
		ORDER BY s.name, s.id LIMIT $6`, q.Name, likePattern(q.Name), q.Instrument, q.AfterID, q.AfterName, q.Limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[SongRef])
}

// likePattern escapes LIKE metacharacters so that q matches literally.
func likePattern(q string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(strings.ToLower(q)) + "%"
}

// SongDetail is a stored song with its instruments' note counts.
type SongDetail struct {
	ID, Name, Source     string
	Format, Tracks, TPQ  int
	DurationSeconds, BPM float64
	InstrumentNotes      []InstrumentNotes // by instrument id
}

// InstrumentNotes is one instrument of a song.
type InstrumentNotes struct {
	ID    int
	Notes int
}

// ErrNotFound is returned for a song that does not exist.
var ErrNotFound = errors.New("not found")

// Song returns one song, or ErrNotFound.
func (r *Reader) Song(ctx context.Context, id string) (SongDetail, error) {
	var s SongDetail
	err := r.Pool.QueryRow(ctx, `SELECT id, name, source_key, smf_format, tracks, ticks_per_quarter, duration_seconds, initial_bpm
		FROM songs WHERE id = $1`, id).Scan(&s.ID, &s.Name, &s.Source, &s.Format, &s.Tracks, &s.TPQ, &s.DurationSeconds, &s.BPM)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, ErrNotFound
	}
	if err != nil {
		return s, err
	}
	rows, err := r.Pool.Query(ctx, "SELECT instrument, notes FROM song_instruments WHERE song_id = $1 ORDER BY instrument", id)
	if err != nil {
		return s, err
	}
	s.InstrumentNotes, err = pgx.CollectRows(rows, pgx.RowToStructByPos[InstrumentNotes])
	return s, err
}

// SimilarEntry is one entry of a stored similar list, with the other song's name.
type SimilarEntry struct {
	Rank   int16
	Other  string
	Name   string
	Score  float64
	Shared []int16
}

// SimilarTo calls fn for each entry of song id's stored list, by rank, and
// returns ErrNotFound when there is no such song (a song with no list calls fn
// never).
func (r *Reader) SimilarTo(ctx context.Context, id string, fn func(SimilarEntry) error) error {
	var (
		others         []string
		scores         []float64
		shared, counts []int16
		names          []*string // nil where the other song has no row: its entry is left out
	)
	err := r.Pool.QueryRow(ctx, `SELECT l.others, l.scores, l.shared, l.shared_counts,
			ARRAY(SELECT o.name FROM unnest(l.others) WITH ORDINALITY AS u(id, n) LEFT JOIN songs o ON o.id = u.id ORDER BY u.n)
		FROM songs s LEFT JOIN similar_lists l ON l.song = s.id WHERE s.id = $1`, id).Scan(&others, &scores, &shared, &counts, &names)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	if len(scores) != len(others) || len(counts) != len(others) || len(names) != len(others) {
		return fmt.Errorf("similar list of %s: %d others, %d scores, %d shared counts", id, len(others), len(scores), len(counts))
	}
	for i, other := range others {
		n := int(counts[i])
		if n > len(shared) {
			return fmt.Errorf("similar list of %s: entry %d has %d shared instruments, %d left", id, i+1, n, len(shared))
		}
		entryShared := shared[:n:n]
		shared = shared[n:]
		if names[i] == nil {
			continue
		}
		if err := fn(SimilarEntry{Rank: int16(i + 1), Other: other, Name: *names[i], Score: scores[i], Shared: entryShared}); err != nil {
			return err
		}
	}
	return nil
}

// SimilarVersion is similar_songs_version, bumped by every write of the lists.
func (r *Reader) SimilarVersion(ctx context.Context) (int64, error) {
	var v int64
	err := r.Pool.QueryRow(ctx, "SELECT version FROM similar_songs_version").Scan(&v)
	return v, err
}

// Account is the pipeline's ledger as the API reads it (Store.Account's).
func (r *Reader) Account(ctx context.Context) (Accounting, error) { return account(ctx, r.Pool) }

// FinishedSince counts the files that became a song or a failure in the
// last d.
func (r *Reader) FinishedSince(ctx context.Context, d time.Duration) (int64, error) {
	var n int64
	err := r.Pool.QueryRow(ctx, "SELECT count(*) FROM discovered_files WHERE finished_at > now() - make_interval(secs => $1)", d.Seconds()).Scan(&n)
	return n, err
}

// reasonGroup is a failure reason with its numbers (byte offsets, track
// numbers, status bytes) masked: the files that failed for the same cause
// in different places share it.
const reasonGroup = `regexp_replace(reason, '0x[0-9A-Fa-f]+|[0-9]+', 'N', 'g')`

// FailureGroup is a cause of failure and how many files failed of it.
type FailureGroup struct {
	Reason string // with numbers masked as N
	Files  int64
}

// FailureGroups lists the causes of failure, the commonest first (at most n).
func (r *Reader) FailureGroups(ctx context.Context, n int) ([]FailureGroup, error) {
	rows, err := r.Pool.Query(ctx, `SELECT `+reasonGroup+` AS grp, count(*) FROM failures GROUP BY grp ORDER BY count(*) DESC, grp LIMIT $1`, n)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[FailureGroup])
}

// FailedFile is a file recorded as a failure.
type FailedFile struct {
	Source   string
	Name     string
	Reason   string
	Attempts int
	FailedAt time.Time
}

// FailedFiles lists up to n files that failed of a cause (a FailureGroup's
// Reason; every cause when empty), by source after afterSource.
func (r *Reader) FailedFiles(ctx context.Context, group, afterSource string, n int) ([]FailedFile, error) {
	rows, err := r.Pool.Query(ctx, `SELECT f.source_key, d.name, f.reason, f.attempts, f.failed_at
		FROM failures f JOIN discovered_files d USING (source_key)
		WHERE ($1 = '' OR `+reasonGroup+` = $1) AND f.source_key > $2
		ORDER BY f.source_key LIMIT $3`, group, afterSource, n)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[FailedFile])
}
