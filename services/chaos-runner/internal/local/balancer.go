package local

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// balancer spreads requests over several API processes, or several S3
// gateways, as a Kubernetes Service or a cloud load balancer does in
// production, and does what such balancers do about a failing backend
// (Envoy's retry policy and outlier detection): a request that could not be
// delivered, took longer than tryTimeout or got a 5xx is tried on another
// backend, and the failing backend gets no traffic for ejectFor. Only reads
// go through it (the API's GETs; the workers' S3 GETs, HEADs and listings),
// each safe to send twice, so it forwards no request body.
type balancer struct {
	backends []string // host:port of each API process
	client   *http.Client
	srv      *http.Server

	mu      sync.Mutex
	next    int
	ejected []time.Time // until when each backend gets no traffic
}

const (
	tryTimeout = time.Second
	ejectFor   = 2 * time.Second
)

// startBalancer serves on ln and sends requests to backends, dialled with
// dial.
func startBalancer(ln net.Listener, backends []string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *balancer {
	b := &balancer{
		backends: backends,
		ejected:  make([]time.Time, len(backends)),
		client:   &http.Client{Transport: &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 64}},
	}
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 5 * time.Second}
	go b.srv.Serve(ln) //nolint:errcheck // ends with close
	return b
}

// pick returns the next backend in turn that is not ejected (the next in
// turn when every one is).
func (b *balancer) pick(tried map[int]bool) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	first := -1
	for range b.backends {
		i := b.next % len(b.backends)
		b.next++
		if tried[i] {
			continue
		}
		if first < 0 {
			first = i
		}
		if now.After(b.ejected[i]) {
			return i
		}
	}
	return first
}

func (b *balancer) eject(i int) {
	b.mu.Lock()
	b.ejected[i] = time.Now().Add(ejectFor)
	b.mu.Unlock()
}

func (b *balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tried := map[int]bool{}
	var lastErr error
	for len(tried) < len(b.backends) {
		i := b.pick(tried)
		tried[i] = true
		status, header, body, err := b.try(r, b.backends[i])
		last := len(tried) == len(b.backends)
		if err == nil && (status < 500 || last) {
			for k, v := range header {
				w.Header()[k] = v
			}
			w.WriteHeader(status)
			w.Write(body) //nolint:errcheck // client gone
			if status >= 500 {
				b.eject(i)
			}
			return
		}
		b.eject(i)
		if err == nil {
			err = fmt.Errorf("status %d", status)
		}
		lastErr = fmt.Errorf("%s: %w", b.backends[i], err)
		if r.Context().Err() != nil {
			return // the client left
		}
	}
	http.Error(w, "no API backend answered: "+lastErr.Error(), http.StatusBadGateway)
}

// try sends r to one backend and reads its whole answer within tryTimeout.
func (b *balancer) try(r *http.Request, backend string) (int, http.Header, []byte, error) {
	ctx, cancel := context.WithTimeout(r.Context(), tryTimeout)
	defer cancel()
	out, err := http.NewRequestWithContext(ctx, r.Method, "http://"+backend+r.URL.RequestURI(), nil)
	if err != nil {
		return 0, nil, nil, err
	}
	out.Header = r.Header.Clone()
	out.Host = r.Host // an S3 request's signature covers its Host
	resp, err := b.client.Do(out)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := io.Copy(&body, resp.Body); err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, body.Bytes(), nil
}

func (b *balancer) close() {
	b.srv.Close() //nolint:errcheck // teardown
	b.client.CloseIdleConnections()
}
