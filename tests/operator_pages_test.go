package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/chromedp"

	"github.com/scale-dev/scale/internal/browsertest"
	"github.com/scale-dev/scale/internal/testenv"
	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/api"
)

// waitPath waits until the page's address is path (with its query).
func waitPath(path string) chromedp.Action {
	return chromedp.Poll(`location.pathname + location.search === `+jsString(path), nil, chromedp.WithPollingTimeout(20*time.Second))
}

// TestBrowserDeepLinks: every view has an address of its own. A song's
// address opens the song; following links changes the address; back
// returns to the view before, reload shows the same view, and a link of the
// page's first version (#/song/ID) still leads to the song.
func TestBrowserDeepLinks(t *testing.T) {
	ctx := browsertest.Context(t, 2*time.Minute)
	_, server := servedCorpus(t)
	var list struct{ Songs []struct{ ID, Name string } }
	getJSON(t, server.URL+"/v1/instruments/0/songs?limit=5", &list)
	if len(list.Songs) < 2 {
		t.Fatalf("%d Acoustic Grand Piano songs", len(list.Songs))
	}
	first, second := list.Songs[0], list.Songs[1]

	var name, title, afterBack, afterReload, legacy string
	var chart []*cdp.Node
	err := chromedp.Run(ctx,
		chromedp.Navigate(server.URL+"/songs/"+first.ID),
		chromedp.WaitVisible(`#notes-chart`, chromedp.ByQuery),
		chromedp.Text(`#song-name`, &name, chromedp.ByQuery),
		chromedp.Nodes(`#notes-chart g.bar`, &chart, chromedp.ByQueryAll),
		chromedp.Navigate(server.URL+"/instruments/0"),
		chromedp.WaitVisible(`#songs`, chromedp.ByQuery),
		chromedp.Text(`#list-title`, &title, chromedp.ByQuery),
		chromedp.Click(`#songs a.song[href="/songs/`+second.ID+`"]`, chromedp.ByQuery),
		waitPath("/songs/"+second.ID),
		chromedp.Poll(`document.querySelector('#song-name') && document.querySelector('#song-name').textContent === `+jsString(second.Name), nil),
		chromedp.NavigateBack(),
		waitPath("/instruments/0"),
		chromedp.WaitVisible(`#songs`, chromedp.ByQuery),
		chromedp.Text(`#list-title`, &afterBack, chromedp.ByQuery),
		chromedp.Reload(),
		chromedp.WaitVisible(`#songs`, chromedp.ByQuery),
		chromedp.Text(`#list-title`, &afterReload, chromedp.ByQuery),
		chromedp.Navigate(server.URL+"/#/song/"+first.ID),
		waitPath("/songs/"+first.ID),
		chromedp.WaitVisible(`#notes-chart`, chromedp.ByQuery),
		chromedp.Text(`#song-name`, &legacy, chromedp.ByQuery),
	)
	if err != nil {
		t.Fatalf("browsing: %v", err)
	}
	var song struct{ Instruments []struct{ Notes int } }
	getJSON(t, server.URL+"/v1/songs/"+first.ID, &song)
	if name != first.Name || len(chart) != len(song.Instruments) {
		t.Errorf("/songs/%s showed %q with %d bars, want %q with one per instrument (%d)", first.ID, name, len(chart), first.Name, len(song.Instruments))
	}
	if title != "Acoustic Grand Piano" || afterBack != title || afterReload != title {
		t.Errorf("instrument view %q, after back %q, after reload %q", title, afterBack, afterReload)
	}
	if legacy != first.Name {
		t.Errorf("#/song/%s showed %q", first.ID, legacy)
	}
}

// TestBrowserStatusPage: the status view shows the ledger of the shared
// corpus (934 files: 539 songs, 395 failures) with the failures grouped by
// cause; a cause opens the list of its files.
func TestBrowserStatusPage(t *testing.T) {
	ctx := browsertest.Context(t, 2*time.Minute)
	_, server := servedCorpus(t)
	var status api.Status
	getJSON(t, server.URL+"/v1/status", &status)
	if status.Files.Discovered != 934 || status.Files.Done != 539 || status.Files.Failed != 395 || !status.Balanced {
		t.Fatalf("/v1/status: %+v", status)
	}
	// The corpus went through in seconds, just now: every file finished in
	// the last minute.
	if status.FinishedLastMinute != 934 {
		t.Errorf("%d files finished in the last minute, want 934", status.FinishedLastMinute)
	}
	grouped := int64(0)
	for _, g := range status.FailureGroups {
		grouped += g.Files
	}
	if len(status.FailureGroups) == 0 || len(status.FailureGroups) >= 395 || status.FailureGroups[0].Files < status.FailureGroups[len(status.FailureGroups)-1].Files {
		t.Errorf("failure groups: %+v", status.FailureGroups)
	}
	top := status.FailureGroups[0]
	t.Logf("%d causes of failure; the commonest: %+v", len(status.FailureGroups), status.FailureGroups[:min(5, len(status.FailureGroups))])

	var discovered, failed, failuresTitle string
	var groupRows, fileRows []*cdp.Node
	err := chromedp.Run(ctx,
		chromedp.Navigate(server.URL+"/status"),
		chromedp.WaitVisible(`#failure-groups`, chromedp.ByQuery),
		chromedp.Text(`#st-discovered b`, &discovered, chromedp.ByQuery),
		chromedp.Text(`#st-failed b`, &failed, chromedp.ByQuery),
		chromedp.Nodes(`#failure-groups a.failure-group`, &groupRows, chromedp.ByQueryAll),
		chromedp.Click(`#failure-groups a.failure-group`, chromedp.ByQuery), // the commonest cause
		chromedp.Poll(`location.pathname === '/status/failures' && new URLSearchParams(location.search).get('reason') === `+jsString(top.Reason), nil,
			chromedp.WithPollingTimeout(20*time.Second)),
		chromedp.WaitVisible(`#failures`, chromedp.ByQuery),
		chromedp.Text(`#failures-title`, &failuresTitle, chromedp.ByQuery),
		chromedp.Nodes(`#failures tr`, &fileRows, chromedp.ByQueryAll),
	)
	if err != nil {
		t.Fatalf("browsing: %v", err)
	}
	if discovered != "934" || failed != "395" || len(groupRows) != len(status.FailureGroups) {
		t.Errorf("status view: %s discovered, %s failed, %d causes; want 934, 395, %d", discovered, failed, len(groupRows), len(status.FailureGroups))
	}
	if want := min(top.Files, 50); int64(len(fileRows)-1) != want || !strings.Contains(failuresTitle, top.Reason) {
		t.Errorf("the cause %q (%d files) listed %d files under %q", top.Reason, top.Files, len(fileRows)-1, failuresTitle)
	}
	if grouped != 395 && len(status.FailureGroups) < 50 {
		t.Errorf("the groups hold %d failures, want all 395", grouped)
	}
}

// TestBrowserChaosReports: the chaos view lists the runs a chaos-runner
// schedule server keeps, with their verdicts, and shows a run's report
// relayed by the API. The server here serves the events.ChaosRuns contract
// as the real one does (its /runs.json is tested in the chaos-runner
// module, TestScheduledRunIsServed).
func TestBrowserChaosReports(t *testing.T) {
	ctx := browsertest.Context(t, 2*time.Minute)
	started := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	idx := events.ChaosRuns{Runs: []events.ChaosRun{
		{Experiment: "postgres-failover", Run: "postgres-failover-20261126T030000.000", Verdict: "passed", Started: started},
		{Experiment: "api-kill", Run: "api-kill-20261126T020000.000", Verdict: "failed", ExitCode: 1, Started: started.Add(-time.Hour)},
	}}
	schedule := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/runs.json":
			json.NewEncoder(w).Encode(idx) //nolint:errcheck // test server
		case events.ChaosReportPath("postgres-failover", idx.Runs[0].Run):
			fmt.Fprintf(w, `<!doctype html><html><body><h1 id="verdict">PASSED</h1></body></html>`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer schedule.Close()
	p := newPipeline(t, testenv.NATS(t).ClientURL())
	server := p.serveAPIWith(api.Settings{CacheSongs: 1000, ChaosURL: schedule.URL})

	var rows []*cdp.Node
	var verdicts, reportTitle, inFrame string
	err := chromedp.Run(ctx,
		chromedp.Navigate(server.URL+"/chaos"),
		chromedp.WaitVisible(`#chaos-runs`, chromedp.ByQuery),
		chromedp.Nodes(`#chaos-runs a.chaos-run`, &rows, chromedp.ByQueryAll),
		chromedp.Text(`#chaos-runs`, &verdicts, chromedp.ByQuery),
		chromedp.Click(`#chaos-runs a.chaos-run`, chromedp.ByQuery),
		waitPath("/chaos/postgres-failover/"+idx.Runs[0].Run),
		chromedp.Text(`#report-title`, &reportTitle, chromedp.ByQuery),
		chromedp.Poll(`(() => { const d = document.querySelector('#report').contentDocument; return d && d.querySelector('#verdict') ? d.querySelector('#verdict').textContent : false })()`, &inFrame),
	)
	if err != nil {
		t.Fatalf("browsing: %v", err)
	}
	if len(rows) != 2 || !strings.Contains(verdicts, "passed") || !strings.Contains(verdicts, "failed (exit 1)") {
		t.Errorf("chaos view: %d runs, text %q", len(rows), verdicts)
	}
	if !strings.Contains(reportTitle, idx.Runs[0].Run) || inFrame != "PASSED" {
		t.Errorf("report view %q showing %q", reportTitle, inFrame)
	}
	// Without a schedule server the API says so.
	resp, err := http.Get(p.serveAPI().URL + "/v1/chaos/runs")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/v1/chaos/runs with no schedule server: %d, want 404", resp.StatusCode)
	}
}
