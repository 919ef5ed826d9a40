package tests

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scale-dev/scale/internal/testenv"
)

// chromium finds Debian's Chromium; outside CI a missing browser skips the test.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if testenv.InCI() {
		t.Fatal("no Chromium found: apt-get install chromium")
	}
	t.Skip("no Chromium found: apt-get install chromium")
	return ""
}

// TestBrowserInstrumentToSimilar clicks through the web page in headless
// Chromium: instrument → song list → song → one of its similar songs.
func TestBrowserInstrumentToSimilar(t *testing.T) {
	exe := chromium(t)
	p, server := servedCorpus(t)
	p.runSimilarity(similaritySettings, prometheus.NewRegistry())

	// A song on the first page of an instrument's list that has similar songs.
	var list struct{ Songs []struct{ ID, Name string } }
	getJSON(t, server.URL+"/v1/instruments/33/songs?limit=50", &list)
	var songID, firstSimilarID, firstSimilarName string
	for _, s := range list.Songs {
		var sim struct{ Similar []struct{ ID, Name string } }
		getJSON(t, server.URL+"/v1/songs/"+s.ID+"/similar?limit=10", &sim)
		if len(sim.Similar) > 0 {
			songID, firstSimilarID, firstSimilarName = s.ID, sim.Similar[0].ID, sim.Similar[0].Name
			break
		}
	}
	if songID == "" {
		t.Fatal("no song with similar songs among the first 50 Electric Bass (finger) songs")
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	defer cancelTimeout()

	var title, songName, similarRows, secondName string
	err := chromedp.Run(ctx,
		chromedp.Navigate(server.URL+"/"),
		chromedp.SendKeys(`#instrument-filter`, "finger", chromedp.ByQuery),
		chromedp.Click(`a.instrument[data-id="33"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#songs`, chromedp.ByQuery),
		chromedp.Text(`#list-title`, &title, chromedp.ByQuery),
		chromedp.Click(`#songs a.song[href="#/song/`+songID+`"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#similar`, chromedp.ByQuery),
		chromedp.Text(`#song-name`, &songName, chromedp.ByQuery),
		chromedp.Text(`#similar`, &similarRows, chromedp.ByQuery),
		chromedp.Click(`#similar a.song[href="#/song/`+firstSimilarID+`"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#instruments`, chromedp.ByQuery),
		chromedp.Poll(`document.querySelector('#song-name') && document.querySelector('#song-name').textContent === `+jsString(firstSimilarName), nil),
		chromedp.Text(`#song-name`, &secondName, chromedp.ByQuery),
	)
	if err != nil {
		t.Fatalf("browsing: %v", err)
	}
	if title != "Electric Bass (finger)" || songName == "" || !strings.Contains(similarRows, firstSimilarName) || secondName != firstSimilarName {
		t.Errorf("title %q, song %q, similar rows %q, second song %q (want %q)", title, songName, similarRows, secondName, firstSimilarName)
	}
}

func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`)
	return "'" + r.Replace(s) + "'"
}
