package ops

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	var dbErr error
	h := Handler(NewRegistry(), map[string]Check{"postgres": func(context.Context) error { return dbErr }})
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	for _, tc := range []struct {
		path, body string
		down       error
		code       int
	}{
		{"/healthz", "ok", errors.New("down"), http.StatusOK}, // alive even when a dependency is not
		{"/readyz", "ready", nil, http.StatusOK},
		{"/readyz", "postgres: refused", errors.New("refused"), http.StatusServiceUnavailable},
		{"/metrics", "go_goroutines", nil, http.StatusOK},
		{"/debug/pprof/", "goroutine", nil, http.StatusOK},
	} {
		dbErr = tc.down
		code, body := get(tc.path)
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("GET %s with dependency error %v: %d %q, want %d containing %q", tc.path, tc.down, code, body, tc.code, tc.body)
		}
	}
}
