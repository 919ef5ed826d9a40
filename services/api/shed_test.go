package api

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/scale-dev/scale/internal/testenv"
)

// TestShedding: with MaxInFlight requests at the database, the next one gets
// a fast 503 with Retry-After and a JSON error, is counted, and is recorded in
// the request histogram like any other answer; once a request finishes,
// requests are taken again.
func TestShedding(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := New(nil, slog.New(slog.NewTextHandler(io.Discard, nil)), reg, Settings{MaxInFlight: 1})
	entered, release := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(a.json("GET /test", a.atDatabase(func(*http.Request) (any, error) {
		select {
		case entered <- struct{}{}:
			<-release // the first request holds the only slot
		default:
		}
		return map[string]bool{"ok": true}, nil
	})))
	defer srv.Close()

	first := make(chan int, 1)
	go func() {
		resp, err := http.Get(srv.URL)
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-entered
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Error struct{ Code string } `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&body) //nolint:errcheck // checked below
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" || body.Error.Code != "overloaded" {
		t.Errorf("at capacity: %d, Retry-After %q, code %q; want 503, 1, overloaded", resp.StatusCode, resp.Header.Get("Retry-After"), body.Error.Code)
	}
	if n := testutil.ToFloat64(a.shed); n != 1 {
		t.Errorf("scale_api_shed_total %v, want 1", n)
	}
	if n := testenv.MetricValue(t, reg, "scale_api_request_duration_seconds", "code", "503"); n != 1 {
		t.Errorf("%v 503s in the request histogram after the shed request, want 1", n)
	}
	close(release)
	if code := <-first; code != http.StatusOK {
		t.Errorf("the request in flight: %d, want 200", code)
	}
	resp, err = http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("after the slot was freed: %d, want 200", resp.StatusCode)
	}
}

// TestSimilarShedsAtTheDatabase: /similar takes a database slot only when the
// cache cannot answer; with every slot taken, such a request gets the fast 503
// without touching the database.
func TestSimilarShedsAtTheDatabase(t *testing.T) {
	a := New(nil, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry(), Settings{MaxInFlight: 1, CacheSongs: 0})
	release, ok := a.admit()
	if !ok {
		t.Fatal("the first slot was refused")
	}
	defer release()
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/v1/songs/0123456789abcdef0123456789abcdef/similar")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("with the database slots taken: %d, Retry-After %q; want 503, 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if n := testutil.ToFloat64(a.shed); n != 1 {
		t.Errorf("scale_api_shed_total %v, want 1", n)
	}
}
