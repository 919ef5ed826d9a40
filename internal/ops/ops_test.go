package ops

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestHandlerThroughThePhases(t *testing.T) {
	var dbErr error
	h := NewHealth()
	h.AddCheck("postgres", func(context.Context) error { return dbErr })
	mux := Handler(NewRegistry(), h)
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	for _, tc := range []struct {
		phase      Phase
		path, body string
		down       error
		code       int
	}{
		{Starting, "/healthz", "ok", nil, http.StatusOK}, // alive while still connecting
		{Starting, "/readyz", "starting", nil, http.StatusServiceUnavailable},
		{Running, "/healthz", "ok", errors.New("down"), http.StatusOK}, // alive even when a dependency is not
		{Running, "/readyz", "ready", nil, http.StatusOK},
		{Running, "/readyz", "postgres: refused", errors.New("refused"), http.StatusServiceUnavailable},
		{Draining, "/readyz", "draining", nil, http.StatusServiceUnavailable},
		{Draining, "/healthz", "ok", nil, http.StatusOK},
		{Running, "/metrics", "scale_build_info{", nil, http.StatusOK},
		{Running, "/debug/pprof/", "goroutine", nil, http.StatusOK},
	} {
		h.SetPhase(tc.phase)
		dbErr = tc.down
		code, body := get(tc.path)
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("%s: GET %s with dependency error %v: %d %q, want %d containing %q", tc.phase, tc.path, tc.down, code, body, tc.code, tc.body)
		}
	}
}

func TestListenFailsAtOnceOnATakenAddress(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if _, err := Listen(taken.Addr().String(), NewRegistry(), NewHealth(), slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("Listen on a taken address succeeded")
	}
}

func TestMountedAppBesideOpsEndpoints(t *testing.T) {
	reg := NewRegistry()
	srv, err := Listen("127.0.0.1:0", reg, NewHealth(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	// A client of its own, whose spare connections are closed before the
	// server shuts down: one dialled while another came free stays new (no
	// request on it), and Shutdown waits 5 s for such a connection.
	client := &http.Client{Transport: &http.Transport{}}
	defer func() {
		client.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	get := func(path string) int {
		resp, err := client.Get("http://" + srv.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("/v1/x"); code != http.StatusServiceUnavailable {
		t.Errorf("before Mount: %d, want 503", code)
	}
	srv.Mount(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	if code := get("/v1/x"); code != http.StatusTeapot {
		t.Errorf("after Mount: %d, want the app's 418", code)
	}
	if code := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz beside the app: %d", code)
	}
	if n := testutil.CollectAndCount(reg, "scale_build_info"); n != 1 {
		t.Errorf("scale_build_info series: %d, want 1", n)
	}
}
