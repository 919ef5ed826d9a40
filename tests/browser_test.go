package tests

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scale-dev/scale/internal/browsertest"
)

// TestBrowserInstrumentToSimilar clicks through the web page in headless
// Chromium: instrument → song list → song → one of its similar songs.
func TestBrowserInstrumentToSimilar(t *testing.T) {
	ctx := browsertest.Context(t, 2*time.Minute)
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

	var title, songName, similarRows, secondName string
	err := chromedp.Run(ctx,
		chromedp.Navigate(server.URL+"/"),
		chromedp.SendKeys(`#instrument-filter`, "finger", chromedp.ByQuery),
		chromedp.Click(`a.instrument[data-id="33"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#songs`, chromedp.ByQuery),
		chromedp.Text(`#list-title`, &title, chromedp.ByQuery),
		chromedp.Click(`#songs a.song[href="/songs/`+songID+`"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#similar`, chromedp.ByQuery),
		chromedp.Text(`#song-name`, &songName, chromedp.ByQuery),
		chromedp.Text(`#similar`, &similarRows, chromedp.ByQuery),
		chromedp.Click(`#similar a.song[href="/songs/`+firstSimilarID+`"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#notes-chart`, chromedp.ByQuery),
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
