// Package ops serves a service's operations endpoints: Prometheus /metrics,
// /healthz (the process is alive), /readyz (its dependencies answer) and the
// Go profiler under /debug/pprof/ (the ops address is loopback by default).
package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/scale-dev/scale/internal/buildinfo"
)

// Check is a readiness probe: nil when the dependency answers.
type Check func(ctx context.Context) error

// NewRegistry returns a registry with the Go runtime and process collectors
// and scale_build_info.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo())
	return reg
}

// Phase is where a service is in its life.
type Phase int32

// The phases, in order. Only a running service is ready.
const (
	Starting Phase = iota // connecting to its dependencies
	Running               // serving; ready while every check passes
	Draining              // stopping: finishing the work in hand, taking no more
)

func (p Phase) String() string {
	return [...]string{"starting", "running", "draining"}[p]
}

// Health is what /healthz and /readyz report. /healthz answers 200 whenever
// the process can answer at all: it never checks a dependency, so that a
// dependency being away (our own chaos does that) never gets a process
// restarted. /readyz answers 200 only while the service is running and every
// check passes.
type Health struct {
	phase  atomic.Int32
	mu     sync.Mutex
	names  []string
	checks map[string]Check
}

// NewHealth returns a Health in the Starting phase with no checks.
func NewHealth() *Health { return &Health{checks: map[string]Check{}} }

// SetPhase moves to phase p.
func (h *Health) SetPhase(p Phase) { h.phase.Store(int32(p)) }

// Phase is the current phase.
func (h *Health) Phase() Phase { return Phase(h.phase.Load()) }

// AddCheck adds (or replaces) a named readiness check.
func (h *Health) AddCheck(name string, c Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.checks[name]; !ok {
		h.names = append(h.names, name)
	}
	h.checks[name] = c
}

// Ready is nil when the service is running and every check passes.
func (h *Health) Ready(ctx context.Context) error {
	if p := h.Phase(); p != Running {
		return fmt.Errorf("%s", p)
	}
	h.mu.Lock()
	names := append([]string(nil), h.names...)
	checks := maps.Clone(h.checks)
	h.mu.Unlock()
	for _, name := range names {
		if err := checks[name](ctx); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// Handler returns the mux of the operations endpoints.
func Handler(reg *prometheus.Registry, h *Health) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := h.Ready(ctx); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

// Server serves the operations endpoints, and optionally an application
// handler mounted beside them, on one address.
type Server struct {
	ln  net.Listener // nil: serve nothing
	srv *http.Server
	app atomic.Pointer[http.Handler]
	log *slog.Logger
}

// Listen binds addr now, so that a taken address stops the service at once,
// before it connects to anything. An empty addr serves nothing. Requests for
// paths other than the operations endpoints go to the handler given to Mount,
// and get 503 until then.
func Listen(addr string, reg *prometheus.Registry, h *Health, log *slog.Logger) (*Server, error) {
	s := &Server{log: log}
	if addr == "" {
		return s, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	mux := Handler(reg, h)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if app := s.app.Load(); app != nil {
			(*app).ServeHTTP(w, r)
			return
		}
		http.Error(w, "starting", http.StatusServiceUnavailable)
	})
	s.ln = ln
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// Addr is the bound address ("" when serving nothing).
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Mount serves app for every path that is not an operations endpoint.
func (s *Server) Mount(app http.Handler) { s.app.Store(&app) }

// Serve serves until ctx ends, then shuts down gracefully (requests in
// flight get up to 5 s).
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		<-ctx.Done()
		return nil
	}
	s.log.Info("listening", "addr", s.Addr())
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving %s: %w", s.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutting down %s: %w", s.Addr(), err)
	}
	<-errc
	return nil
}

// Register registers c with reg (if reg is not nil) and returns the collector in
// use: c, or the equal one registered before (a service run twice in one process
// keeps counting on the same series).
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(fmt.Sprintf("registering metric: %v", err))
	}
	return c
}

// Zeroed creates a counter vector's series for each label value given, at
// 0, so that they exist before their first event: rate() over them works
// from the start, and a dashboard finds them on a quiet system.
func Zeroed(v *prometheus.CounterVec, values ...string) *prometheus.CounterVec {
	for _, x := range values {
		v.WithLabelValues(x)
	}
	return v
}

// buildInfo is scale_build_info: always 1, labelled with the running build.
func buildInfo() prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "scale_build_info", Help: "The running build: always 1, labelled with its version and Go release.",
	}, []string{"version", "goversion"})
	g.WithLabelValues(buildinfo.Version(), buildinfo.GoVersion()).Set(1)
	return g
}
