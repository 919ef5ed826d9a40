// Package store is Scale's Postgres: the versioned schema, applied at start-up,
// and the writes and reads of the pipeline. Every query is parameterized.
package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/scale-dev/scale/internal/gm"
	"github.com/scale-dev/scale/internal/telemetry"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Store wraps a connection pool.
type Store struct {
	Pool *pgxpool.Pool
}

// Open connects to url, waits up to wait for the server to answer, and applies
// the migrations.
func Open(ctx context.Context, url string, wait time.Duration) (*Store, error) {
	s, err := Connect(ctx, url, wait)
	if err != nil {
		return nil, err
	}
	if err := s.Migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Connect connects to url and waits up to wait for the server to answer; it
// leaves the schema alone (see Migrate and WaitMigrated).
func Connect(ctx context.Context, url string, wait time.Duration) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parsing database URL: %w", err)
	}
	traced(cfg)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("creating pool: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		err = pool.Ping(ctx)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to Postgres: %w", err)
	}
	return &Store{Pool: pool}, nil
}

// WaitMigrated waits up to wait for every migration this build knows to have
// been applied by another process (a release's migration Job, which runs with
// an owner login the services do not have).
func (s *Store) WaitMigrated(ctx context.Context, wait time.Duration) error {
	latest, err := latestMigration()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(wait)
	for {
		var applied int
		err := s.Pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&applied)
		switch {
		case err == nil && applied >= latest:
			return nil
		case err == nil:
			err = fmt.Errorf("schema at migration %d, this build needs %d", applied, latest)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("waiting for the migrations (run `extract migrate` with an owner login): %w", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Close closes the pool.
func (s *Store) Close() { s.Pool.Close() }

// traced has the pool's queries traced (otelpgx: a span per query, batch
// and copy, in the caller's trace) when tracing is on.
func traced(cfg *pgxpool.Config) {
	if telemetry.Enabled() {
		cfg.ConnConfig.Tracer = otelpgx.NewTracer(otelpgx.WithDisableConnectionDetailsInAttributes())
	}
}

// Migrate applies every migration not applied yet, in version order, each in its
// own transaction, under an advisory lock so that processes starting together
// do not race; then it writes the GM catalog.
func (s *Store) Migrate(ctx context.Context) error {
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	defer conn.Release()
	const lockKey = 0x5CA1E
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockKey); err != nil {
		return fmt.Errorf("migrating: taking lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockKey) //nolint:errcheck // released with the session anyway
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	list, err := migrations()
	if err != nil {
		return err
	}
	for _, m := range list {
		version, name, path := m.version, m.name, m.path
		var applied bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)", version).Scan(&applied); err != nil {
			return fmt.Errorf("migrating: %w", err)
		}
		if applied {
			continue
		}
		sql, err := migrationFiles.ReadFile(path)
		if err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
			return err
		})
		if err != nil {
			return fmt.Errorf("applying migration %s: %w", name, err)
		}
	}
	return s.writeCatalog(ctx, conn.Conn())
}

type migration struct {
	version    int
	name, path string
}

// migrations lists the embedded migrations in version order.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var list []migration
	for _, path := range names {
		name := strings.TrimPrefix(path, "migrations/")
		version, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("migration %s: name must start with a version number", name)
		}
		list = append(list, migration{version: version, name: name, path: path})
	}
	return list, nil
}

// latestMigration is the version of the last embedded migration.
func latestMigration() (int, error) {
	list, err := migrations()
	if err != nil {
		return 0, err
	}
	if len(list) == 0 {
		return 0, errors.New("no migrations embedded")
	}
	return list[len(list)-1].version, nil
}

func (s *Store) writeCatalog(ctx context.Context, conn *pgx.Conn) error {
	var b pgx.Batch
	const q = `INSERT INTO instruments (id, name, family) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, family = EXCLUDED.family`
	for p := range gm.Programs {
		b.Queue(q, p, gm.Name(uint8(p), false), gm.Family(uint8(p)))
	}
	b.Queue(q, gm.Drums, gm.DrumsName, gm.DrumsFamily)
	if err := conn.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("writing the GM catalog: %w", err)
	}
	return nil
}

// DiscoveredFile is a file found by ingest.
type DiscoveredFile struct {
	SourceKey string
	MD5       string // empty when unknown
	Size      int64
	Name      string
}

// RecordDiscovered inserts the files whose source is not known yet, in one
// statement, and returns each file's status in order: "pending" means it still
// needs extracting (new, or found before but never finished), so ingest
// publishes it.
func (s *Store) RecordDiscovered(ctx context.Context, files []DiscoveredFile) ([]string, error) {
	keys, md5s, names := make([]string, len(files)), make([]string, len(files)), make([]string, len(files))
	sizes := make([]int64, len(files))
	for i, f := range files {
		keys[i], md5s[i], sizes[i], names[i] = f.SourceKey, f.MD5, f.Size, f.Name
	}
	// The outer query does not see the CTE's inserts (one snapshot): new rows get
	// their status from ins, known ones from discovered_files.
	rows, err := s.Pool.Query(ctx, `
		WITH input AS (
			SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) WITH ORDINALITY AS u(source_key, md5, size, name, ord)),
		ins AS (
			INSERT INTO discovered_files (source_key, md5, size, name)
			SELECT source_key, NULLIF(md5, ''), size, name FROM input ORDER BY ord
			ON CONFLICT (source_key) DO NOTHING RETURNING source_key, status)
		SELECT COALESCE(ins.status, d.status) FROM input i
		LEFT JOIN ins ON ins.source_key = i.source_key
		LEFT JOIN discovered_files d ON d.source_key = i.source_key
		ORDER BY i.ord`, keys, md5s, sizes, names)
	if err != nil {
		return nil, fmt.Errorf("recording %d discoveries: %w", len(files), err)
	}
	statuses, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("recording %d discoveries: %w", len(files), err)
	}
	return statuses, nil
}

// Song is an extracted song.
type Song struct {
	ID              string // content MD5
	Name            string
	SourceKey       string
	Format          int
	Tracks          int
	TicksPerQuarter int
	DurationSeconds float64
	InitialBPM      float64
	InstrumentNotes map[int]int // instruments.id → notes
	DiscoveredSize  int64
}

// Failure is a file that cannot become a song.
type Failure struct {
	SourceKey string
	MD5       string
	Size      int64
	Name      string
	Reason    string
	Attempts  int
}

// SaveOutcomes stores songs (with their instruments) and failures, and marks
// their discovered files done or failed, all in one transaction sent in one
// round trip. It is idempotent: a redelivered file changes nothing but a
// failure's attempts.
func (s *Store) SaveOutcomes(ctx context.Context, songs []Song, failures []Failure) error {
	// One set-based statement per table, whatever the batch size: per-row
	// statements cost Postgres about twice the CPU (docs/benchmarks.md).
	var sg struct {
		ids, names, sources []string
		formats, tracks     []int32
		ticks               []int32
		durations, bpms     []float64
	}
	var si struct {
		songs []string
		ids   []int16
		notes []int32
	}
	// A source key appears once per statement: an upsert may not touch a row twice.
	fin := map[string]int{}
	var df struct {
		sources, md5s, names, statuses, songs []string
		sizes                                 []int64
	}
	finish := func(source, md5 string, size int64, name, status, songID string) {
		if i, dup := fin[source]; dup {
			df.md5s[i], df.sizes[i], df.names[i], df.statuses[i], df.songs[i] = md5, size, name, status, songID
			return
		}
		fin[source] = len(df.sources)
		df.sources, df.md5s, df.sizes = append(df.sources, source), append(df.md5s, md5), append(df.sizes, size)
		df.names, df.statuses, df.songs = append(df.names, name), append(df.statuses, status), append(df.songs, songID)
	}
	for _, song := range songs {
		sg.ids, sg.names, sg.sources = append(sg.ids, song.ID), append(sg.names, song.Name), append(sg.sources, song.SourceKey)
		sg.formats, sg.tracks, sg.ticks = append(sg.formats, int32(song.Format)), append(sg.tracks, int32(song.Tracks)), append(sg.ticks, int32(song.TicksPerQuarter))
		sg.durations, sg.bpms = append(sg.durations, song.DurationSeconds), append(sg.bpms, song.InitialBPM)
		for id, n := range song.InstrumentNotes {
			si.songs, si.ids, si.notes = append(si.songs, song.ID), append(si.ids, int16(id)), append(si.notes, int32(n))
		}
		finish(song.SourceKey, song.ID, song.DiscoveredSize, song.Name, "done", song.ID)
	}
	var fl struct {
		sources, md5s, reasons []string
		attempts               []int32
	}
	failed := map[string]int{} // the same rule as fin: a key once, its last failure
	for _, f := range failures {
		finish(f.SourceKey, f.MD5, f.Size, f.Name, "failed", "")
		if i, dup := failed[f.SourceKey]; dup {
			fl.md5s[i], fl.reasons[i], fl.attempts[i] = f.MD5, f.Reason, int32(f.Attempts)
			continue
		}
		failed[f.SourceKey] = len(fl.sources)
		fl.sources, fl.md5s, fl.reasons, fl.attempts = append(fl.sources, f.SourceKey), append(fl.md5s, f.MD5), append(fl.reasons, f.Reason), append(fl.attempts, int32(f.Attempts))
	}
	var b pgx.Batch
	if len(songs) > 0 {
		b.Queue(`INSERT INTO songs (id, name, source_key, smf_format, tracks, ticks_per_quarter, duration_seconds, initial_bpm)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::int[], $6::int[], $7::float8[], $8::float8[])
			ON CONFLICT (id) DO NOTHING`,
			sg.ids, sg.names, sg.sources, sg.formats, sg.tracks, sg.ticks, sg.durations, sg.bpms)
		b.Queue(`INSERT INTO song_instruments (song_id, instrument, notes)
			SELECT * FROM unnest($1::text[], $2::smallint[], $3::int[]) ON CONFLICT DO NOTHING`, si.songs, si.ids, si.notes)
	}
	// A missing ingest record is inserted, so the accounting holds whatever the order of events.
	b.Queue(`INSERT INTO discovered_files (source_key, md5, size, name, status, song_id, finished_at)
		SELECT source, NULLIF(md5, ''), size, name, status, NULLIF(song, ''), now()
		FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[]) AS u(source, md5, size, name, status, song)
		ON CONFLICT (source_key) DO UPDATE SET status = EXCLUDED.status, song_id = EXCLUDED.song_id,
			md5 = COALESCE(EXCLUDED.md5, discovered_files.md5), finished_at = now()`,
		df.sources, df.md5s, df.sizes, df.names, df.statuses, df.songs)
	if len(fl.sources) > 0 {
		b.Queue(`INSERT INTO failures (source_key, md5, reason, attempts)
			SELECT source, NULLIF(md5, ''), reason, attempts FROM unnest($1::text[], $2::text[], $3::text[], $4::int[]) AS u(source, md5, reason, attempts)
			ON CONFLICT (source_key) DO UPDATE SET reason = EXCLUDED.reason,
				attempts = GREATEST(failures.attempts, EXCLUDED.attempts), md5 = EXCLUDED.md5`,
			fl.sources, fl.md5s, fl.reasons, fl.attempts)
	}
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, &b).Close() })
	if err != nil {
		return fmt.Errorf("saving %d songs and %d failures: %w", len(songs), len(failures), err)
	}
	return nil
}

// Accounting is the pipeline's ledger.
type Accounting struct {
	Discovered, Pending, Done, Failed int64 // discovered files by status
	Songs, Failures                   int64 // rows of songs and failures
}

// Balanced reports whether every discovered file ended as a song or a failure.
func (a Accounting) Balanced() bool {
	return a.Pending == 0 && a.Done+a.Failed == a.Discovered && a.Failures == a.Failed
}

// Finished counts the discovered files that are a song or a failure now
// (the chaos runner's progress probe; cheaper than Account).
func (s *Store) Finished(ctx context.Context) (int, error) {
	var n int
	err := s.Pool.QueryRow(ctx, "SELECT count(*) FROM discovered_files WHERE status <> 'pending'").Scan(&n)
	return n, err
}

// Account reads the ledger in one snapshot.
func (s *Store) Account(ctx context.Context) (Accounting, error) { return account(ctx, s.Pool) }

func account(ctx context.Context, db *pgxpool.Pool) (Accounting, error) {
	var a Accounting
	// One pass over the ledger (it has no index on status: 008).
	err := db.QueryRow(ctx, `SELECT d.*,
		(SELECT count(*) FROM songs),
		(SELECT count(*) FROM failures)
		FROM (SELECT count(*), count(*) FILTER (WHERE status = 'pending'),
			count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'failed')
			FROM discovered_files) d`).Scan(&a.Discovered, &a.Pending, &a.Done, &a.Failed, &a.Songs, &a.Failures)
	if err != nil {
		return a, fmt.Errorf("reading the accounting: %w", err)
	}
	return a, nil
}
