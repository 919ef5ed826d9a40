// Package api serves songs, instruments and similar songs as JSON over HTTP, an
// OpenAPI document and a web page. It reads Postgres through a pool whose
// sessions run as the read-only scale_reader role; every query is parameterized,
// and bad input gets a 4xx JSON error.
package api

import (
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scale-dev/scale/internal/gm"
	"github.com/scale-dev/scale/internal/ops"
	"github.com/scale-dev/scale/internal/store"
)

//go:embed web/* openapi.json
var assets embed.FS

// Settings are the API flags and SCALE_API_* variables.
type Settings struct {
	Addr       string `conf:"default:127.0.0.1:8080,help:listen address of the HTTP API and web page"`
	CacheSongs int    `conf:"default:200000,help:songs whose similar lists are kept in memory (about 0.4 KB each with 10 per list; 0 turns the cache off)"`
	// The limit counts the requests that need the database, not the ones a
	// cached similar list answers: those cost microseconds of CPU, and a 503
	// would cost nearly as much as the answer. Measured (docs/benchmarks.md,
	// cache off): with 512, a flood queued for the pool's connections until
	// the query timeout and the goodput fell to a quarter of capacity; with 16
	// (4 per connection of a 2-core pod) the API kept answering at capacity
	// and shed the rest with fast 503s. The default stays high so that a slow
	// database makes requests wait rather than fail; lower it where clients
	// retry elsewhere.
	MaxInFlight int `conf:"default:512,help:API requests that need the database at once (a cached similar list does not); beyond it a request gets a fast 503 with Retry-After (load shedding) instead of a growing wait (0: no limit)"`
	// ChaosURL is a chaos-runner schedule server whose runs the web page
	// lists and whose reports it shows (relayed under /chaos-reports/).
	ChaosURL string `conf:"help:address of a chaos-runner schedule server (http://host:9095) whose runs and reports the web page shows; empty: none"`
	// A request the database does not answer in time gets a 503 instead of
	// waiting for TCP to notice a server that is gone or cut off, so that a
	// client (or a load balancer in front of several APIs) can go elsewhere.
	QueryTimeout time.Duration `conf:"default:2s,help:longest wait for the database in one request; past it the request gets a 503 with Retry-After"`
}

const (
	defaultLimit = 20
	maxLimit     = 100
	maxQuery     = 200
)

// API is the HTTP handler set.
type API struct {
	inFlight     chan struct{} // a token per request at the database; nil: no limit
	queryTimeout time.Duration
	shed         prometheus.Counter
	db           *store.Reader
	log          *slog.Logger
	requests     *prometheus.HistogramVec
	cache        *similarCache
	chaos        *chaosRelay // nil without Settings.ChaosURL
}

// New returns the API over a read-only database view. Its similar-list cache
// works only while Run runs.
func New(db *store.Reader, log *slog.Logger, reg prometheus.Registerer, s Settings) *API {
	var inFlight chan struct{}
	if s.MaxInFlight > 0 {
		inFlight = make(chan struct{}, s.MaxInFlight)
	}
	return &API{db: db, log: log, cache: newSimilarCache(s.CacheSongs, reg), inFlight: inFlight, queryTimeout: s.QueryTimeout, chaos: newChaosRelay(s.ChaosURL),
		shed: ops.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scale_api_shed_total", Help: "API requests answered 503 at once because MaxInFlight requests were at the database."})),
		requests: ops.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "scale_api_request_duration_seconds", Help: "API requests by route and status.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"route", "code"}))}
}

// Run keeps the similar-list cache in step with the database until ctx ends.
func (a *API) Run(ctx context.Context) error { return a.cache.run(ctx, a.db, a.log) }

// Handler routes the API, the OpenAPI document and the web page (the
// operations endpoints are served beside it by the service's ops server).
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern string, h func(*http.Request) (any, error)) {
		mux.Handle(pattern, a.json(pattern, a.atDatabase(h)))
	}
	// /similar takes its database slot only when the cache cannot answer.
	mux.Handle("GET /v1/songs/{id}/similar", a.json("GET /v1/songs/{id}/similar", a.similar))
	route("GET /v1/instruments", a.instruments)
	route("GET /v1/instruments/{id}/songs", a.instrumentSongs)
	route("GET /v1/songs", a.songs)
	route("GET /v1/songs/{id}", a.song)
	route("GET /v1/status", a.status)
	route("GET /v1/failures", a.failures)
	route("GET /v1/chaos/runs", a.chaosRuns)
	if a.chaos != nil {
		mux.Handle("GET /chaos-reports/", http.StripPrefix("/chaos-reports", a.chaos))
	}
	route("GET /v1/", func(*http.Request) (any, error) { return nil, errNotFound("no such endpoint") })
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		data, _ := assets.ReadFile("openapi.json")
		w.Write(data) //nolint:errcheck // client gone
	})
	web, _ := fs.Sub(assets, "web")
	mux.Handle("GET /", http.FileServerFS(web))
	// Every view of the web page has an address of its own (History API):
	// each serves the page, which shows the view its address names.
	page, _ := assets.ReadFile("web/index.html")
	for _, view := range webViews {
		mux.HandleFunc("GET "+view, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Write(page) //nolint:errcheck // client gone
		})
	}
	return mux
}

// errOverloaded is the fast 503 of a request shed at the database's door.
var errOverloaded = &apiError{http.StatusServiceUnavailable, "overloaded", "the API is at capacity; retry after a second"}

// admit takes a database slot for a request, or reports (and counts) that
// MaxInFlight requests hold them all: under overload the requests it takes
// keep their latency, and the others learn so in microseconds instead of
// waiting in a queue for the pool that only grows.
func (a *API) admit() (release func(), ok bool) {
	if a.inFlight == nil {
		return func() {}, true
	}
	select {
	case a.inFlight <- struct{}{}:
		return func() { <-a.inFlight }, true
	default:
		a.shed.Inc()
		return nil, false
	}
}

// atDatabase runs h holding a database slot; a request that finds none is
// shed with errOverloaded, which json answers like every other error (a
// 503 with Retry-After, recorded in the request histogram).
func (a *API) atDatabase(h func(*http.Request) (any, error)) func(*http.Request) (any, error) {
	return func(r *http.Request) (any, error) {
		release, ok := a.admit()
		if !ok {
			return nil, errOverloaded
		}
		defer release()
		return h(r)
	}
}

// apiError is an error with its HTTP status.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errBadRequest(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, "bad_request", fmt.Sprintf(format, args...)}
}

func errNotFound(msg string) error { return &apiError{http.StatusNotFound, "not_found", msg} }

// statusClientClosed is the status recorded for a request whose client left.
const statusClientClosed = 499

// json runs h and writes its result or its error as JSON.
func (a *API) json(route string, h func(*http.Request) (any, error)) http.HandlerFunc {
	okDuration := a.requests.WithLabelValues(route, strconv.Itoa(http.StatusOK))
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		status := http.StatusOK
		defer func() {
			if p := recover(); p != nil {
				a.log.Error("handler panic", "route", route, "panic", p)
				status = http.StatusInternalServerError
				writeJSON(w, status, errorBody("internal", "internal error"))
			}
			duration := okDuration
			if status != http.StatusOK {
				duration = a.requests.WithLabelValues(route, strconv.Itoa(status))
			}
			duration.Observe(time.Since(start).Seconds())
		}()
		if msg := checkURL(r); msg != "" {
			status = http.StatusBadRequest
			writeJSON(w, status, errorBody("bad_request", msg))
			return
		}
		client := r.Context()
		if a.queryTimeout > 0 {
			ctx, cancel := context.WithTimeout(client, a.queryTimeout)
			defer cancel()
			r = r.WithContext(ctx)
		}
		body, err := h(r)
		var ae *apiError
		switch {
		case errors.As(err, &ae):
			status = ae.status
			if status == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "1")
			}
			writeJSON(w, status, errorBody(ae.code, ae.msg))
		case err != nil && client.Err() != nil:
			// The client went away (its query was cancelled with it): nobody
			// reads an answer, and it is not the server's failure. 499 is the
			// status proxies record for it.
			status = statusClientClosed
			a.log.Debug("client closed the request", "route", route, "error", err)
		case err != nil:
			status = http.StatusServiceUnavailable
			a.log.Error("request failed", "route", route, "error", err)
			w.Header().Set("Retry-After", "1")
			writeJSON(w, status, errorBody("unavailable", "the database did not answer; try again"))
		default:
			if raw, ok := body.(*rawJSON); ok {
				// With its length known the body goes out unchunked.
				h := w.Header()
				h.Set("Content-Type", "application/json")
				h.Set("Content-Length", strconv.Itoa(len(raw.b)))
				w.Write(raw.b) //nolint:errcheck // client gone
				rawPool.Put(raw)
				return
			}
			writeJSON(w, status, body)
		}
	}
}

// checkURL rejects query strings that do not parse and any path or parameter
// that is not valid UTF-8 (Postgres would refuse it later, as a 5xx).
func checkURL(r *http.Request) string {
	values, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return "malformed query string"
	}
	if !utf8.ValidString(r.URL.Path) {
		return "the path is not valid UTF-8"
	}
	for k, vs := range values {
		for _, v := range append(vs, k) {
			if !utf8.ValidString(v) {
				return "query parameter " + strconv.Quote(k) + " is not valid UTF-8"
			}
		}
	}
	return ""
}

func errorBody(code, msg string) any {
	return map[string]any{"error": map[string]string{"code": code, "message": msg}}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) //nolint:errcheck // client gone
}

// isSongID reports whether s is a song id: 32 lowercase hex digits.
func isSongID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func pathSongID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !isSongID(id) {
		return "", errBadRequest("song id must be 32 lowercase hex digits")
	}
	return id, nil
}

func limitParam(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxLimit {
		return 0, errBadRequest("limit must be an integer from 1 to %d", maxLimit)
	}
	return n, nil
}

func instrumentParam(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > gm.Drums {
		return 0, errBadRequest("instrument must be an integer from 0 to %d (%d is the drums)", gm.Drums, gm.Drums)
	}
	return n, nil
}

// Cursors are opaque to clients: base64url of the last row's sort key.
func encodeCursor(parts ...string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strings.Join(parts, "\x00")))
}

// decodeCursor reads a cursor of n parts whose last part passes valid.
func decodeCursor(r *http.Request, n int, valid func(last string) bool) ([]string, error) {
	v := r.URL.Query().Get("cursor")
	if v == "" {
		return nil, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(v)
	parts := strings.Split(string(raw), "\x00")
	if err != nil || len(parts) != n || !utf8.Valid(raw) || !valid(parts[n-1]) {
		return nil, errBadRequest("malformed cursor")
	}
	return parts, nil
}

// Instrument is an instrument as the API shows it; Program is null for drums.
type Instrument struct {
	ID      int    `json:"id"`
	Program *int   `json:"program"`
	Drums   bool   `json:"drums"`
	Name    string `json:"name"`
	Family  string `json:"family"`
	Songs   *int64 `json:"songs,omitempty"`
	Notes   *int   `json:"notes,omitempty"`
}

func instrument(id int) Instrument {
	in := Instrument{ID: id, Drums: id == gm.Drums}
	if in.Drums {
		in.Name, in.Family = gm.DrumsName, gm.DrumsFamily
	} else {
		p := id
		in.Program = &p
		in.Name, in.Family = gm.Name(uint8(id), false), gm.Family(uint8(id))
	}
	return in
}

func (a *API) instruments(r *http.Request) (any, error) {
	counts, err := a.db.InstrumentCounts(r.Context())
	if err != nil {
		return nil, err
	}
	out := make([]Instrument, 0, len(counts))
	for _, c := range counts {
		in := instrument(c.ID)
		in.Songs = &c.Songs
		out = append(out, in)
	}
	return map[string]any{"instruments": out}, nil
}

type page struct {
	Songs      []store.SongRef `json:"songs"`
	NextCursor string          `json:"next_cursor,omitempty"`
}

func (a *API) instrumentSongs(r *http.Request) (any, error) {
	inst, err := instrumentParam(r.PathValue("id"))
	if err != nil {
		return nil, errNotFound("no such instrument")
	}
	limit, err := limitParam(r)
	if err != nil {
		return nil, err
	}
	cur, err := decodeCursor(r, 1, isSongID)
	if err != nil {
		return nil, err
	}
	after := ""
	if cur != nil {
		after = cur[0]
	}
	songs, err := a.db.InstrumentSongs(r.Context(), inst, after, limit+1)
	if err != nil {
		return nil, err
	}
	p := pageOf(songs, limit, func(s store.SongRef) string { return encodeCursor(s.ID) })
	body := map[string]any{"instrument": instrument(inst), "songs": p.Songs}
	if p.NextCursor != "" {
		body["next_cursor"] = p.NextCursor
	}
	return body, nil
}

// pageOf cuts songs (up to limit+1, to tell whether there is more) to a page.
func pageOf(songs []store.SongRef, limit int, cursor func(store.SongRef) string) page {
	p := page{Songs: songs}
	if p.Songs == nil {
		p.Songs = []store.SongRef{}
	}
	if len(p.Songs) > limit {
		p.Songs = p.Songs[:limit]
		p.NextCursor = cursor(p.Songs[limit-1])
	}
	return p
}

func (a *API) songs(r *http.Request) (any, error) {
	q := r.URL.Query().Get("q")
	if len(q) > maxQuery {
		return nil, errBadRequest("q is longer than %d bytes", maxQuery)
	}
	inst := -1
	if v := r.URL.Query().Get("instrument"); v != "" {
		var err error
		if inst, err = instrumentParam(v); err != nil {
			return nil, err
		}
	}
	limit, err := limitParam(r)
	if err != nil {
		return nil, err
	}
	cur, err := decodeCursor(r, 2, isSongID)
	if err != nil {
		return nil, err
	}
	sq := store.SongQuery{Name: q, Instrument: inst, Limit: limit + 1}
	if cur != nil {
		sq.AfterName, sq.AfterID = cur[0], cur[1]
	}
	songs, err := a.db.Songs(r.Context(), sq)
	if err != nil {
		return nil, err
	}
	return pageOf(songs, limit, func(s store.SongRef) string { return encodeCursor(s.Name, s.ID) }), nil
}

// Song is a song with its instruments.
type Song struct {
	ID              string       `json:"id"`
	Name            string       `json:"name"`
	Source          string       `json:"source"`
	Format          int          `json:"format"`
	Tracks          int          `json:"tracks"`
	TicksPerQuarter int          `json:"ticks_per_quarter"`
	DurationSeconds float64      `json:"duration_seconds"`
	InitialBPM      float64      `json:"initial_bpm"`
	Instruments     []Instrument `json:"instruments"`
}

func (a *API) song(r *http.Request) (any, error) {
	id, err := pathSongID(r)
	if err != nil {
		return nil, err
	}
	d, err := a.db.Song(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errNotFound("no such song")
	}
	if err != nil {
		return nil, err
	}
	s := Song{ID: d.ID, Name: d.Name, Source: d.Source, Format: d.Format, Tracks: d.Tracks, TicksPerQuarter: d.TPQ,
		DurationSeconds: d.DurationSeconds, InitialBPM: d.BPM, Instruments: make([]Instrument, 0, len(d.InstrumentNotes))}
	for _, in := range d.InstrumentNotes {
		inst := instrument(in.ID)
		inst.Notes = &in.Notes
		s.Instruments = append(s.Instruments, inst)
	}
	return s, nil
}
