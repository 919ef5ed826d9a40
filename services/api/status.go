package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/scale-dev/scale/pkg/events"
)

// webViews are the addresses of the web page's views; each serves the
// page, which reads its address to show the view.
var webViews = []string{"/instruments/{id}", "/songs/{id}", "/search", "/status", "/status/failures", "/chaos", "/chaos/{experiment}/{run}"}

// Status is the pipeline's progress for the operators' page.
type Status struct {
	Files struct {
		Discovered int64 `json:"discovered"`
		Pending    int64 `json:"pending"`
		Done       int64 `json:"done"`
		Failed     int64 `json:"failed"`
	} `json:"files"`
	Songs              int64          `json:"songs"`
	Failures           int64          `json:"failures"`
	Balanced           bool           `json:"balanced"` // every discovered file is a song or a failure
	FinishedLastMinute int64          `json:"finished_last_minute"`
	FailureGroups      []FailureGroup `json:"failure_groups"` // the commonest causes first
}

// FailureGroup is a cause of failure (its numbers masked as N) and how many
// files failed of it.
type FailureGroup struct {
	Reason string `json:"reason"`
	Files  int64  `json:"files"`
}

func (a *API) status(r *http.Request) (any, error) {
	ctx := r.Context()
	acc, err := a.db.Account(ctx)
	if err != nil {
		return nil, err
	}
	var s Status
	s.Files.Discovered, s.Files.Pending, s.Files.Done, s.Files.Failed = acc.Discovered, acc.Pending, acc.Done, acc.Failed
	s.Songs, s.Failures, s.Balanced = acc.Songs, acc.Failures, acc.Balanced()
	if s.FinishedLastMinute, err = a.db.FinishedSince(ctx, time.Minute); err != nil {
		return nil, err
	}
	groups, err := a.db.FailureGroups(ctx, 50)
	if err != nil {
		return nil, err
	}
	s.FailureGroups = make([]FailureGroup, len(groups))
	for i, g := range groups {
		s.FailureGroups[i] = FailureGroup(g)
	}
	return s, nil
}

// FailedFile is a file recorded as a failure, with its reason.
type FailedFile struct {
	Source   string    `json:"source"`
	Name     string    `json:"name"`
	Reason   string    `json:"reason"`
	Attempts int       `json:"attempts"`
	FailedAt time.Time `json:"failed_at"`
}

const maxReason = 1000

// failures lists failed files, of one cause (?reason=, as a failure group
// names it) or all, a page at a time by source.
func (a *API) failures(r *http.Request) (any, error) {
	reason := r.URL.Query().Get("reason")
	if len(reason) > maxReason {
		return nil, errBadRequest("reason is longer than %d bytes", maxReason)
	}
	limit, err := limitParam(r)
	if err != nil {
		return nil, err
	}
	cur, err := decodeCursor(r, 1, func(source string) bool { return source != "" })
	if err != nil {
		return nil, err
	}
	after := ""
	if cur != nil {
		after = cur[0]
	}
	files, err := a.db.FailedFiles(r.Context(), reason, after, limit+1)
	if err != nil {
		return nil, err
	}
	body := map[string]any{}
	if len(files) > limit {
		files = files[:limit]
		body["next_cursor"] = encodeCursor(files[limit-1].Source)
	}
	out := make([]FailedFile, len(files))
	for i, f := range files {
		out[i] = FailedFile(f)
	}
	body["failures"] = out
	return body, nil
}

// chaosRelay reaches a chaos-runner schedule server: its runs index, and
// its report pages relayed under this API's origin (so that the web page
// can show them).
type chaosRelay struct {
	base   *url.URL
	err    error // the setting is not a URL
	proxy  *httputil.ReverseProxy
	client *http.Client
}

func newChaosRelay(raw string) *chaosRelay {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err == nil && (u.Scheme != "http" && u.Scheme != "https" || u.Host == "") {
		err = fmt.Errorf("%q is not an http(s) address", raw)
	}
	if err != nil {
		return &chaosRelay{err: fmt.Errorf("SCALE_API_CHAOS_URL: %w", err)}
	}
	return &chaosRelay{base: u, proxy: httputil.NewSingleHostReverseProxy(u), client: &http.Client{Timeout: 5 * time.Second}}
}

// ServeHTTP relays a run's files (paths under /runs/).
func (c *chaosRelay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if c.err != nil || !strings.HasPrefix(r.URL.Path, "/runs/") {
		http.NotFound(w, r)
		return
	}
	c.proxy.ServeHTTP(w, r)
}

// errChaos is the chaos-runner schedule server failing to answer: a 502.
func errChaos(err error) error {
	return &apiError{http.StatusBadGateway, "chaos_runner_unavailable", "reading the chaos runs: " + err.Error()}
}

// ChaosRun is a run as the web page lists it, with its report's address
// here.
type ChaosRun struct {
	events.ChaosRun
	Report string `json:"report"`
}

func (a *API) chaosRuns(r *http.Request) (any, error) {
	c := a.chaos
	switch {
	case c == nil:
		return nil, errNotFound("no chaos-runner schedule is configured (SCALE_API_CHAOS_URL)")
	case c.err != nil:
		return nil, errChaos(c.err)
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, c.base.JoinPath("runs.json").String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, errChaos(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errChaos(fmt.Errorf("%s answered %s", req.URL, resp.Status))
	}
	var idx events.ChaosRuns
	if err := json.NewDecoder(resp.Body).Decode(&idx); err != nil {
		return nil, errChaos(err)
	}
	runs := make([]ChaosRun, len(idx.Runs))
	for i, run := range idx.Runs {
		runs[i] = ChaosRun{ChaosRun: run, Report: "/chaos-reports" + events.ChaosReportPath(run.Experiment, run.Run)}
	}
	return map[string]any{"running": idx.Running, "runs": runs}, nil
}
