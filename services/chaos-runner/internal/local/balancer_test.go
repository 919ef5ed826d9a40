package local

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestBalancerGoesAroundAFailingBackend: whether a backend refuses
// connections, answers 503 or hangs, every request is answered by the other
// one, and the failing backend is ejected (the next requests do not pay for
// it). The API processes themselves behind it are in
// runner.TestShippedPostgresFailover.
func TestBalancerGoesAroundAFailingBackend(t *testing.T) {
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "good") }))
	defer good.Close()
	refused := httptest.NewServer(http.NotFoundHandler())
	refusedAddr := refused.Listener.Addr().String()
	refused.Close()
	unavailable := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	defer unavailable.Close()
	release := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hanging.Close()
	defer close(release)

	for name, bad := range map[string]string{"refused": refusedAddr, "503": unavailable.Listener.Addr().String(), "hanging": hanging.Listener.Addr().String()} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		b := startBalancer(ln, []string{bad, good.Listener.Addr().String()}, (&net.Dialer{}).DialContext)
		var slow int
		for range 10 {
			start := time.Now()
			resp, err := http.Get("http://" + ln.Addr().String() + "/v1/instruments")
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(body) != "good" {
				t.Errorf("%s: status %d %q, want the good backend's answer", name, resp.StatusCode, body)
			}
			if time.Since(start) > tryTimeout/2 {
				slow++
			}
		}
		if slow > 1 {
			t.Errorf("%s: %d of 10 requests waited for the failing backend; once, then ejected", name, slow)
		}
		b.close()
	}
}
