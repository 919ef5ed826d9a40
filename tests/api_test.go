package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scale-dev/scale/internal/accounting"
	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/ops"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/testenv"
	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/api"
	"github.com/scale-dev/scale/services/extract"
	"github.com/scale-dev/scale/services/similarity"
)

// servedCorpus runs the shared corpus through ingest, extract and similarity in
// this process and returns the pipeline and an API server over its database.
func servedCorpus(t *testing.T) (*pipeline, *httptest.Server) {
	t.Helper()
	root := testenv.SharedCorpus(t)
	rels, err := corpus.Files(root)
	if err != nil {
		t.Fatal(err)
	}
	srv := testenv.NATS(t)
	p := newPipeline(t, srv.ClientURL())
	p.ingest(root)
	w := extract.New(extract.Deps{JS: p.js, Store: p.store, Objects: p.objects, Log: p.log, Metrics: prometheus.NewRegistry()},
		extract.Options{Concurrency: 4, FetchBatch: 32})
	p.background("extract", w.Run)
	p.waitFor("every file finished", time.Minute, func(a store.Accounting) bool { return a.Discovered == int64(len(rels)) && a.Pending == 0 })
	return p, p.serveAPI()
}

// serveAPI serves the API over the pipeline's database beside the operations
// endpoints, until the test ends.
func (p *pipeline) serveAPI() *httptest.Server {
	p.t.Helper()
	return p.serveAPIWith(api.Settings{CacheSongs: 1000})
}

// serveAPIWith is serveAPI with the given settings.
func (p *pipeline) serveAPIWith(settings api.Settings) *httptest.Server {
	p.t.Helper()
	reader, err := store.OpenReader(context.Background(), p.pgURL)
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(reader.Close)
	reg := ops.NewRegistry()
	a := api.New(reader, p.log, reg, settings)
	p.background("api", a.Run)
	health := ops.NewHealth()
	health.SetPhase(ops.Running)
	mux := ops.Handler(reg, health)
	mux.Handle("/", a.Handler())
	server := httptest.NewServer(mux)
	p.t.Cleanup(server.Close)
	return server
}

// similaritySettings are the in-process similarity service's in the tests.
var similaritySettings = similarity.Settings{K: 10, MinInstruments: 3, Batch: 64, AckWait: 10 * time.Second}

// runSimilarity runs a similarity service in this process until stop is
// called (or the test ends), and waits until it has applied every song.
func (p *pipeline) runSimilarity(settings similarity.Settings, reg *prometheus.Registry) (stop func()) {
	p.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	sim := similarity.New(similarity.Deps{JS: p.js, Store: p.store, Log: p.log, Metrics: reg}, settings)
	go func() { done <- sim.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			p.t.Errorf("similarity: %v", err)
		}
	}
	p.t.Cleanup(stop)
	testenv.Poll(p.t, "similarity to load its lists", time.Minute, func() (bool, float64) {
		v := testenv.MetricValue(p.t, reg, "scale_similarity_leader")
		return v == 1, v
	})
	p.waitSimilarity()
	return stop
}

// waitSimilarity waits until extract has published every outcome and the
// similarity consumer has applied them all.
func (p *pipeline) waitSimilarity() {
	p.t.Helper()
	p.settle(events.StreamDiscovered, events.ConsumerExtract)
	p.settle(events.StreamOutcomes, events.ConsumerSimilarity)
}

// bruteForceTop10 is every song's top 10 by accounting.BruteForce, which
// shares no code with the similarity service.
func bruteForceTop10(t *testing.T, p *pipeline) map[string][]string {
	t.Helper()
	want, err := accounting.BruteForce(context.Background(), p.store, 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	return want
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json", url, ct)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("%s: %v in %s", url, err, body)
	}
	return resp.StatusCode
}

// TestSimilarEqualsBruteForce: after the shared corpus is in, every song's
// /v1/songs/{id}/similar is exactly the brute-force top-10 over the database,
// and a full rebuild gives the same lists as the incremental updates did.
func TestSimilarEqualsBruteForce(t *testing.T) {
	p, server := servedCorpus(t)
	stopSimilarity := p.runSimilarity(similaritySettings, prometheus.NewRegistry())
	want := bruteForceTop10(t, p)
	if len(want) < 100 {
		t.Fatalf("only %d songs take part; the corpus should give hundreds", len(want))
	}
	check := func(stage string) {
		for id, ids := range want {
			var body struct {
				Similar []struct {
					ID     string
					Score  float64
					Shared []struct{ ID int }
				}
			}
			if code := getJSON(t, server.URL+"/v1/songs/"+id+"/similar?limit=10", &body); code != 200 {
				t.Fatalf("%s: similar of %s: status %d", stage, id, code)
			}
			got := []string{}
			for _, s := range body.Similar {
				got = append(got, s.ID)
				if s.Score <= 0 || s.Score > 1 || len(s.Shared) == 0 {
					t.Errorf("%s: %s → %s: score %v with %d shared", stage, id, s.ID, s.Score, len(s.Shared))
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(ids) {
				t.Fatalf("%s: similar of %s = %v, brute force %v", stage, id, got, ids)
			}
		}
	}
	// The cache starts a new generation when it sees the last write's version;
	// lists read before that would be dropped with the old one.
	reader, err := store.OpenReader(context.Background(), p.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	version, err := reader.SimilarVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	testenv.Poll(t, "the API's cache to reach the last version", 5*time.Second, func() (bool, float64) {
		v := metric(t, server.URL, "scale_api_similar_cache_version")
		return v == float64(version), v
	})
	check("incremental") // from the database, filling the API's cache
	check("cached")
	if hits := metric(t, server.URL, `scale_api_similar_cache_lookups_total{result="hit"}`); hits < float64(len(want)) {
		t.Errorf("%v cache hits after asking for %d lists twice", hits, len(want))
	}
	if songs := metric(t, server.URL, "scale_api_similar_cache_songs"); songs != float64(len(want)) {
		t.Errorf("%v songs in the cache after asking for %d lists", songs, len(want))
	}
	if bytes := metric(t, server.URL, "scale_api_similar_cache_bytes"); bytes <= 0 {
		t.Errorf("the cache reports %v bytes", bytes)
	}

	// A write to similar_lists reaches the API within a version poll.
	var song, other string
	for id, ids := range want {
		if len(ids) > 1 {
			song, other = id, ids[1]
			break
		}
	}
	firstOf := func(id string) (string, float64) {
		var body struct {
			Similar []struct {
				ID    string
				Score float64
			}
		}
		getJSON(t, server.URL+"/v1/songs/"+id+"/similar?limit=1", &body)
		if len(body.Similar) == 0 {
			return "", 0
		}
		return body.Similar[0].ID, body.Similar[0].Score
	}
	stopSimilarity() // the test writes a rank itself, then rebuilds
	err = pgx.BeginFunc(context.Background(), p.store.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(context.Background(), `UPDATE similar_lists SET others[1] = $2, scores[1] = 0.125 WHERE song = $1`, song, other); err != nil {
			return err
		}
		_, err := tx.Exec(context.Background(), "UPDATE similar_songs_version SET version = version + 1")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Poll(t, "the API to show a rewritten rank", 5*time.Second, func() (bool, string) {
		id, score := firstOf(song)
		return id == other && score == 0.125, fmt.Sprintf("first similar %s, score %v", id, score)
	})

	sim := similarity.New(similarity.Deps{Store: p.store, Log: p.log, Metrics: prometheus.NewRegistry()}, similarity.Settings{K: 10, MinInstruments: 3})
	if err := sim.Exclusive(context.Background(), func(ctx context.Context) error { return sim.Rebuild(ctx, io.Discard) }); err != nil {
		t.Fatal(err)
	}
	testenv.Poll(t, "the API to show the rebuilt lists", 5*time.Second, func() (bool, string) {
		id, _ := firstOf(song)
		return id == want[song][0], "first similar " + id
	})
	check("rebuild")
}

// metric reads one series (name and labels) of the API's /metrics.
func metric(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	prefix := series + " "
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	return 0
}

// TestAPIBadInput: bad input gets a 4xx JSON error, never a 500.
func TestAPIBadInput(t *testing.T) {
	p, server := servedCorpus(t)
	p.runSimilarity(similaritySettings, prometheus.NewRegistry())
	var some struct{ Songs []struct{ ID string } }
	getJSON(t, server.URL+"/v1/songs?limit=1", &some)
	if len(some.Songs) != 1 {
		t.Fatal("no song to test with")
	}
	id := some.Songs[0].ID
	tests := []struct {
		path   string
		status int
	}{
		{"/v1/songs/ffffffffffffffffffffffffffffffff", 404},
		{"/v1/songs/ffffffffffffffffffffffffffffffff/similar", 404},
		{"/v1/songs/not-an-id", 400},
		{"/v1/songs/" + url.PathEscape("' OR 1=1 --"), 400},
		{"/v1/songs/" + id + "/similar?limit=0", 400},
		{"/v1/songs/" + id + "/similar?limit=101", 400},
		{"/v1/songs/" + id + "/similar?limit=99999999999999999999", 400},
		{"/v1/songs/" + id + "/similar?limit=ten", 400},
		{"/v1/songs?cursor=%%%", 400},
		{"/v1/songs?cursor=bm90LWEtY3Vyc29y", 400},
		{"/v1/instruments/33/songs?cursor=" + url.QueryEscape("ab$"), 400},
		{"/v1/instruments/33/songs?cursor=bm90LWEtY3Vyc29y", 400},
		{"/v1/instruments/129/songs", 404},
		{"/v1/instruments/-1/songs", 404},
		{"/v1/instruments/drop/songs", 404},
		{"/v1/songs?instrument=300", 400},
		{"/v1/songs?q=%ff%fe", 400},
		{"/v1/songs?q=" + url.QueryEscape(string(make([]byte, 300))), 400},
		{"/v1/nothing-here", 404},
		{"/v1/songs?q=" + url.QueryEscape("%' OR '1'='1"), 200},
		{"/v1/songs/" + id, 200},
	}
	for _, tt := range tests {
		var body map[string]any
		code := getJSON(t, server.URL+tt.path, &body)
		if code != tt.status {
			t.Errorf("GET %s: status %d, want %d (%v)", tt.path, code, tt.status, body)
		}
		if code >= 400 && body["error"] == nil {
			t.Errorf("GET %s: no error object in %v", tt.path, body)
		}
	}
	// A metacharacter search matches literally: nothing here has that name.
	var res struct{ Songs []any }
	getJSON(t, server.URL+"/v1/songs?q="+url.QueryEscape("%' OR '1'='1"), &res)
	if len(res.Songs) != 0 {
		t.Errorf("a literal metacharacter search matched %d songs", len(res.Songs))
	}
	// Paging walks every song exactly once, and every song of an instrument.
	if n, a := len(walkPages(t, server.URL+"/v1/songs?limit=37")), p.account(); int64(n) != a.Songs {
		t.Errorf("paging saw %d songs, the database has %d", n, a.Songs)
	}
	var catalog struct{ Instruments []struct{ Songs int } }
	getJSON(t, server.URL+"/v1/instruments", &catalog)
	if n, want := len(walkPages(t, server.URL+"/v1/instruments/0/songs?limit=7")), catalog.Instruments[0].Songs; n != want || n < 8 {
		t.Errorf("paging instrument 0 saw %d songs, the catalog counts %d (more than a page wanted)", n, want)
	}
}

// walkPages follows a song list's cursors to its end and returns the songs
// seen, failing on a song listed twice.
func walkPages(t *testing.T, first string) map[string]bool {
	t.Helper()
	seen, cursor := map[string]bool{}, ""
	for {
		var pg struct {
			Songs      []struct{ ID string }
			NextCursor string `json:"next_cursor"`
		}
		if code := getJSON(t, first+"&cursor="+url.QueryEscape(cursor), &pg); code != 200 {
			t.Fatalf("GET %s with cursor %q: status %d", first, cursor, code)
		}
		for _, s := range pg.Songs {
			if seen[s.ID] {
				t.Fatalf("%s: song %s listed twice while paging", first, s.ID)
			}
			seen[s.ID] = true
		}
		if pg.NextCursor == "" {
			return seen
		}
		cursor = pg.NextCursor
	}
}

// apiOverEmptyDB is the API's handler over a fresh database, with its log
// and metrics.
func apiOverEmptyDB(t *testing.T, settings api.Settings) (h http.Handler, st *store.Store, logs *bytes.Buffer, reg *prometheus.Registry) {
	ctx := context.Background()
	dbURL := testenv.PostgresURL(t)
	st, err := store.Open(ctx, dbURL, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	reader, err := store.OpenReader(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reader.Close)
	logs, reg = &bytes.Buffer{}, ops.NewRegistry()
	return api.New(reader, slog.New(slog.NewJSONHandler(logs, nil)), reg, settings).Handler(), st, logs, reg
}

// TestAPIClientGone: a request whose client left before the answer is recorded
// as 499 and is not logged as a server error.
func TestAPIClientGone(t *testing.T) {
	h, _, logs, reg := apiOverEmptyDB(t, api.Settings{})
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequest(http.MethodGet, "/v1/songs/0123456789abcdef0123456789abcdef/similar", nil).WithContext(gone)
	h.ServeHTTP(httptest.NewRecorder(), req)
	if strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Errorf("a client that left was logged as an error:\n%s", logs.String())
	}
	if n := testenv.MetricValue(t, reg, "scale_api_request_duration_seconds", "code", "499"); n != 1 {
		t.Errorf("%v requests recorded with status 499, want 1", n)
	}
}

// TestAPIDatabaseTooSlow: a request the database holds past the query
// timeout (here a lock held on the table it reads) gets a 503 with
// Retry-After when the timeout ends, not an answer whenever the lock goes.
func TestAPIDatabaseTooSlow(t *testing.T) {
	h, st, _, reg := apiOverEmptyDB(t, api.Settings{QueryTimeout: 300 * time.Millisecond})
	ctx := context.Background()
	tx, err := st.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // only the lock mattered
	if _, err := tx.Exec(ctx, "LOCK TABLE instruments IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	start := time.Now()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/instruments", nil))
	took := time.Since(start)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("status %d, Retry-After %q; want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	if took > 5*time.Second {
		t.Errorf("the answer took %s with a 300 ms query timeout", took)
	}
	if n := testenv.MetricValue(t, reg, "scale_api_request_duration_seconds", "code", "503"); n != 1 {
		t.Errorf("%v requests recorded with status 503, want 1", n)
	}
}

// storedTop lists every stored similarity list, by rank.
func storedTop(t *testing.T, p *pipeline) map[string][]string {
	t.Helper()
	got := map[string][]string{}
	err := p.store.SimilarLists(context.Background(), func(song string, others []string) error {
		got[song] = others
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestSimilarityRestartLoadsStoredLists: a similarity service stopped after
// half the corpus and started again after the rest loads the stored lists
// instead of recomputing them, applies the songs it missed, and ends with
// every list equal to the brute force; a service with other settings rebuilds.
func TestSimilarityRestartLoadsStoredLists(t *testing.T) {
	root := testenv.SharedCorpus(t)
	rels, err := corpus.Files(root)
	if err != nil {
		t.Fatal(err)
	}
	halves := [2]string{t.TempDir(), t.TempDir()}
	copyFiles(t, root, rels, func(i int, rel string) string { return filepath.Join(halves[i%2], rel) })
	p := newPipeline(t, testenv.NATS(t).ClientURL())
	w := extract.New(extract.Deps{JS: p.js, Store: p.store, Objects: p.objects, Log: p.log, Metrics: prometheus.NewRegistry()},
		extract.Options{Concurrency: 2, FetchBatch: 32})
	p.background("extract", w.Run)
	settings := similaritySettings
	rebuilds := func(reg *prometheus.Registry) float64 {
		return testenv.MetricValue(t, reg, "scale_similarity_rebuilds_total")
	}

	half := int64(p.ingest(halves[0]).Published)
	p.waitFor("the first half finished", time.Minute, func(a store.Accounting) bool { return a.Discovered == half && a.Pending == 0 })
	firstReg := prometheus.NewRegistry()
	p.runSimilarity(settings, firstReg)()
	if n := rebuilds(firstReg); n != 1 {
		t.Errorf("first start over an empty database: %v rebuilds, want 1", n)
	}

	p.ingest(halves[1])
	p.waitFor("every file finished", time.Minute, func(a store.Accounting) bool { return a.Discovered == int64(len(rels)) && a.Pending == 0 })
	secondReg := prometheus.NewRegistry()
	p.runSimilarity(settings, secondReg)()
	if n := rebuilds(secondReg); n != 0 {
		t.Errorf("restart with the same settings: %v rebuilds, want 0 (the stored lists load)", n)
	}
	want := bruteForceTop10(t, p)
	got := storedTop(t, p)
	for id, ids := range want {
		if len(ids) > 0 && fmt.Sprint(got[id]) != fmt.Sprint(ids) {
			t.Fatalf("after the restart, similar of %s = %v, brute force %v", id, got[id], ids)
		}
	}
	if len(got) < len(want)/2 {
		t.Fatalf("%d stored lists for %d songs", len(got), len(want))
	}

	settings.K = 5
	thirdReg := prometheus.NewRegistry()
	p.runSimilarity(settings, thirdReg)()
	if n := rebuilds(thirdReg); n != 1 {
		t.Errorf("start with K changed from 10 to 5: %v rebuilds, want 1", n)
	}
	for id, ids := range storedTop(t, p) {
		if len(ids) > 5 || fmt.Sprint(ids) != fmt.Sprint(want[id][:len(ids)]) {
			t.Fatalf("after the rebuild with K=5, similar of %s = %v, want the first 5 of %v", id, ids, want[id])
		}
	}
}
