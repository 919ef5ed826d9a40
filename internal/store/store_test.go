package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/scale-dev/scale/internal/gm"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const songID = "0123456789abcdef0123456789abcdef"

func TestMigrateIsIdempotentAndWritesCatalog(t *testing.T) {
	s := testenv.Store(t)
	ctx := context.Background()
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("second migration: %v", err)
	}
	var n int
	var drums string
	if err := s.Pool.QueryRow(ctx, "SELECT count(*), (SELECT name FROM instruments WHERE id = $1) FROM instruments", gm.Drums).Scan(&n, &drums); err != nil {
		t.Fatal(err)
	}
	if n != 129 || drums != "Drums" {
		t.Errorf("catalog has %d instruments, drums %q; want 129 and Drums", n, drums)
	}
}

// A service that does not migrate (the chart's services, whose login cannot
// create roles or extensions) waits for the migration Job, and starts once it
// has run.
func TestWaitMigratedWaitsForTheMigrationJob(t *testing.T) {
	ctx := context.Background()
	url := testenv.PostgresURL(t)
	svc, err := store.Connect(ctx, url, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	if err := svc.WaitMigrated(ctx, 300*time.Millisecond); err == nil {
		t.Fatal("WaitMigrated passed on an empty database")
	}
	done := make(chan error, 1)
	go func() { done <- svc.WaitMigrated(ctx, 20*time.Second) }()
	job, err := store.Open(ctx, url, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer job.Close()
	if err := <-done; err != nil {
		t.Fatalf("WaitMigrated after the migrations ran: %v", err)
	}
	var n int
	if err := svc.Pool.QueryRow(ctx, "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil || n == 0 {
		t.Fatalf("schema_migrations: %d rows, %v", n, err)
	}
}

func TestLedgerIsIdempotent(t *testing.T) {
	s := testenv.Store(t)
	ctx := context.Background()
	files := []store.DiscoveredFile{
		{SourceKey: "s3://b/good.mid", Size: 10, Name: "good"},
		{SourceKey: "s3://b/copy.mid", Size: 10, Name: "copy"},
		{SourceKey: "s3://b/bad.mid", Size: 3, Name: "bad"},
	}
	for range 2 {
		statuses, err := s.RecordDiscovered(ctx, files)
		if err != nil || len(statuses) != len(files) {
			t.Fatalf("RecordDiscovered = %v, %v", statuses, err)
		}
		for i, st := range statuses {
			if st != "pending" {
				t.Errorf("%s: status %q, want pending", files[i].SourceKey, st)
			}
		}
	}
	song := store.Song{ID: songID, Name: "good", SourceKey: "s3://b/good.mid", Format: 1, Tracks: 2, TicksPerQuarter: 96,
		DurationSeconds: 1.5, InitialBPM: 120, InstrumentNotes: map[int]int{0: 4, gm.Drums: 2}}
	copied := song
	copied.SourceKey = "s3://b/copy.mid"        // same content under another key: same song
	for attempt := 1; attempt <= 2; attempt++ { // a redelivery repeats the save
		bad := store.Failure{SourceKey: "s3://b/bad.mid", Reason: "truncated", Attempts: attempt}
		// The same file twice in one batch (a redelivery fetched beside the first) is one row.
		if err := s.SaveOutcomes(ctx, []store.Song{song, copied}, []store.Failure{bad, bad}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := s.Account(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := store.Accounting{Discovered: 3, Done: 2, Failed: 1, Songs: 1, Failures: 1}
	if a != want || !a.Balanced() {
		t.Errorf("accounting %+v, want %+v", a, want)
	}
	newFile := store.DiscoveredFile{SourceKey: "s3://b/new.mid", Size: 1, Name: "new"}
	statuses, err := s.RecordDiscovered(ctx, []store.DiscoveredFile{files[2], newFile, files[0]})
	if err != nil || fmt.Sprint(statuses) != "[failed pending done]" {
		t.Errorf("mixed batch statuses %v (%v), want [failed pending done]", statuses, err)
	}
	var instruments, attempts int
	s.Pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM song_instruments), (SELECT attempts FROM failures)").Scan(&instruments, &attempts) //nolint:errcheck
	if instruments != 2 || attempts != 2 {
		t.Errorf("%d instrument rows and %d attempts, want 2 and 2", instruments, attempts)
	}
}

func TestOpenGivesUpOnAbsentServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := store.Open(ctx, "postgres://scale@127.0.0.1:1/scale?sslmode=disable&connect_timeout=1", 500*time.Millisecond); err == nil {
		t.Fatal("Open succeeded without a server")
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("Open took %v to give up", time.Since(start))
	}
}

// TestWriteAndRebuildSimilar: WriteSimilar replaces the lists it is given,
// whole, and keeps the others; RebuildSimilar replaces every list and records
// the settings; SimilarLists reads the lists back by rank.
func TestWriteAndRebuildSimilar(t *testing.T) {
	s := testenv.Store(t)
	ctx := context.Background()
	read := func() map[string][]store.Similar { return readLists(t, s) }
	lease, err := s.TryLease(ctx, store.SimilarityWriter)
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	a1 := store.Similar{Other: "b", Score: 1, Shared: []int16{0, 40, 128}}
	a2 := store.Similar{Other: "c", Score: 0.5, Shared: []int16{0}}
	b1 := store.Similar{Other: "a", Score: 1, Shared: []int16{0, 40, 128}}
	if err := lease.WriteSimilar(ctx, map[string][]store.Similar{"a": {a1, a2}, "b": {b1}, "e": {}}); err != nil {
		t.Fatal(err)
	}
	a2new := store.Similar{Other: "d", Score: 0.75, Shared: []int16{40, 128, 3}}
	a3 := store.Similar{Other: "c", Score: 0.5, Shared: []int16{}}
	if err := lease.WriteSimilar(ctx, map[string][]store.Similar{"a": {a1, a2new, a3}}); err != nil {
		t.Fatal(err)
	}
	want := map[string][]store.Similar{"a": {a1, a2new, a3}, "b": {b1}, "e": {}}
	if got := read(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after two writes:\n got %v\nwant %v", got, want)
	}
	version := func() int64 {
		var v int64
		if err := s.Pool.QueryRow(ctx, "SELECT version FROM similar_songs_version").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := version(); v != 2 {
		t.Errorf("version %d after two writes, want 2", v)
	}
	if _, ok, err := s.StoredSimilarityParams(ctx); ok || err != nil {
		t.Fatalf("settings recorded before any rebuild (%v)", err)
	}
	for _, p := range []store.SimilarityParams{{K: 10, MinInstruments: 3}, {K: 5, MinInstruments: 4}} {
		if err := lease.RebuildSimilar(ctx, map[string][]store.Similar{"c": {a3}, "d": {b1, a2new}}, p); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := s.StoredSimilarityParams(ctx); !ok || err != nil || got != p {
			t.Errorf("settings %+v (%v, %v), want %+v", got, ok, err, p)
		}
	}
	if got := read(); fmt.Sprint(got) != fmt.Sprint(map[string][]store.Similar{"c": {a3}, "d": {b1, a2new}}) {
		t.Errorf("after rebuild: %v", got)
	}
	if v := version(); v != 4 {
		t.Errorf("version %d after two writes and two rebuilds, want 4", v)
	}
	lists := map[string][]string{}
	if err := s.SimilarLists(ctx, func(song string, others []string) error {
		lists[song] = others
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(lists) != "map[c:[c] d:[a d]]" {
		t.Errorf("SimilarLists gave %v", lists)
	}
}

// TestRebuildCopiesManyLists: a rebuild streams its lists to Postgres in
// pieces (COPY's binary format, encoded as it is sent); every list arrives
// whole, across the pieces' boundaries.
func TestRebuildCopiesManyLists(t *testing.T) {
	s := testenv.Store(t)
	ctx := context.Background()
	lease, err := s.TryLease(ctx, store.SimilarityWriter)
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	lists := map[string][]store.Similar{}
	for i := range 3000 { // about 400 KB: several pieces of 64 KB
		song := fmt.Sprintf("%032x", i)
		for k := range i % 11 {
			lists[song] = append(lists[song], store.Similar{Other: fmt.Sprintf("%032x", i+k+1), Score: 1 / float64(k+2), Shared: []int16{int16(k), int16(k + 100)}[:k%3]})
		}
		if i%11 == 0 {
			lists[song] = []store.Similar{}
		}
	}
	if err := lease.RebuildSimilar(ctx, lists, store.SimilarityParams{K: 10, MinInstruments: 1}); err != nil {
		t.Fatal(err)
	}
	got := readLists(t, s)
	if fmt.Sprint(got) != fmt.Sprint(lists) {
		t.Errorf("%d lists read back, %d written, or their contents differ", len(got), len(lists))
	}
}

// TestLeaseIsExclusiveAndFencesWrites: a second taker is refused while the
// lease is held and gets it once it is released; when the holder's session
// dies the lease is free at once, Lost fires, and the old holder's writes
// fail instead of racing the new holder's.
func TestLeaseIsExclusiveAndFencesWrites(t *testing.T) {
	s := testenv.Store(t)
	ctx := context.Background()
	first, err := s.TryLease(ctx, store.SimilarityWriter)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.TryLease(ctx, store.SimilarityWriter); !errors.Is(err, store.ErrLeaseHeld) {
		t.Fatalf("second TryLease while held: %v, want ErrLeaseHeld", err)
	}
	first.Release()
	second, err := s.TryLease(ctx, store.SimilarityWriter)
	if err != nil {
		t.Fatalf("TryLease after release: %v", err)
	}
	// Kill the holder's session from outside, as a crash or a lost
	// connection would end it.
	if _, err := s.Pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND objid = $1::bigint % 4294967296`, int64(store.SimilarityWriter)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-second.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("Lost did not fire within 10 s of the session's end")
	}
	if err := second.WriteSimilar(ctx, map[string][]store.Similar{"a": {{Other: "b", Score: 1}}}); err == nil {
		t.Error("a write through a lost lease succeeded")
	}
	second.Release()
	third, err := s.WaitLease(ctx, store.SimilarityWriter, 50*time.Millisecond, nil)
	if err != nil {
		t.Fatalf("WaitLease after the holder's session died: %v", err)
	}
	third.Release()
}

// TestListsMigrateFromEntryRows: migration 006 turns the entry rows of a
// database from before it (similar_songs: one row per rank) into one row per
// list, in rank order, with each entry's shared instruments.
func TestListsMigrateFromEntryRows(t *testing.T) {
	s := testenv.Store(t)
	ctx := context.Background()
	// The schema as migration 005 left it, with two lists stored.
	_, err := s.Pool.Exec(ctx, `DROP TABLE similar_lists;
		CREATE TABLE similar_songs (song text NOT NULL, rank smallint NOT NULL CHECK (rank >= 1), other text NOT NULL,
			score double precision NOT NULL, shared smallint[] NOT NULL, PRIMARY KEY (song, rank));
		INSERT INTO similar_songs VALUES ('a', 2, 'c', 0.5, '{0}'), ('a', 1, 'b', 1, '{0,40,128}'), ('a', 3, 'd', 0.25, '{}'),
			('b', 1, 'a', 1, '{0,40,128}');
		DELETE FROM schema_migrations WHERE version = 6`)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	if err := s.SimilarLists(ctx, func(song string, others []string) error { got[song] = others; return nil }); err != nil {
		t.Fatal(err)
	}
	if want := map[string][]string{"a": {"b", "c", "d"}, "b": {"a"}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("lists after the migration: %v, want %v", got, want)
	}
	var shared, counts []int16
	var scores []float64
	if err := s.Pool.QueryRow(ctx, "SELECT scores, shared, shared_counts FROM similar_lists WHERE song = 'a'").Scan(&scores, &shared, &counts); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(scores, shared, counts) != "[1 0.5 0.25] [0 40 128 0] [3 1 0]" {
		t.Errorf("list a after the migration: scores %v, shared %v, counts %v", scores, shared, counts)
	}
}

// readLists reads every stored similarity list back as entries (an empty
// list as no entries).
func readLists(t *testing.T, s *store.Store) map[string][]store.Similar {
	t.Helper()
	rows, err := s.Pool.Query(context.Background(), "SELECT song, others, scores, shared, shared_counts FROM similar_lists")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string][]store.Similar{}
	for rows.Next() {
		var song string
		var others []string
		var scores []float64
		var shared, counts []int16
		if err := rows.Scan(&song, &others, &scores, &shared, &counts); err != nil {
			t.Fatal(err)
		}
		got[song] = []store.Similar{}
		for i := range others {
			got[song] = append(got[song], store.Similar{Other: others[i], Score: scores[i], Shared: shared[:counts[i]]})
			shared = shared[counts[i]:]
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}
