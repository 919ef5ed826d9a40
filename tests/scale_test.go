package tests

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/dashboard"
	"github.com/scale-dev/scale/internal/freeport"
	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/testenv"
)

// TestScaleOneCommand runs the one-command binary as a user would (its own
// local Postgres and embedded NATS under a data folder) over a few shared
// files: health answers, every file is accounted for, the API serves songs,
// and SIGTERM stops it cleanly with its Postgres.
func TestScaleOneCommand(t *testing.T) {
	root := testenv.SharedCorpus(t)
	rels, err := corpus.Files(root)
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	copyFiles(t, root, rels[:40], func(_ int, rel string) string { return filepath.Join(src, filepath.Base(rel)) })
	files, err := corpus.Files(src)
	if err != nil {
		t.Fatal(err)
	}
	addr := func() string {
		port, err := freeport.Get()
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("127.0.0.1:%d", port)
	}
	opsAddr, apiAddr, data := addr(), addr(), t.TempDir()
	proc, err := launcher.Start(launcher.Spec{
		Name: "scale", Binary: bins["scale"], LogPath: filepath.Join(t.TempDir(), "scale.log"),
		Env: []string{"SCALE_DATA=" + data, "SCALE_INGEST_SOURCE=" + src, "SCALE_OPS_ADDR=" + opsAddr, "SCALE_API_ADDR=" + apiAddr,
			"SCALE_OPS_LOG_LEVEL=warn"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		proc.Kill()
		if t.Failed() {
			t.Logf("scale log:\n%s", proc.Log())
		}
	})
	testenv.Poll(t, "/healthz", time.Minute, func() (bool, int) {
		code := statusOf("http://" + opsAddr + "/healthz")
		return code == 200, code
	})
	done := fmt.Sprintf("scale: all %d files finished", len(files))
	testenv.Poll(t, "every file finished", 2*time.Minute, func() (bool, string) {
		return strings.Contains(proc.Log(), done), proc.Log()
	})
	if !strings.Contains(proc.Log(), "(balanced: true)") {
		t.Errorf("the accounting is not balanced:\n%s", proc.Log())
	}
	testenv.Poll(t, "/readyz", 10*time.Second, func() (bool, int) {
		code := statusOf("http://" + apiAddr + "/readyz")
		return code == 200, code
	})
	var songs struct{ Songs []struct{ ID string } }
	if code := getJSON(t, "http://"+apiAddr+"/v1/songs?limit=5", &songs); code != 200 || len(songs.Songs) == 0 {
		t.Errorf("GET /v1/songs: %d with %d songs", code, len(songs.Songs))
	}
	t.Run("every metric the dashboard reads is exported", func(t *testing.T) {
		checkDashboardMetrics(t, "http://"+opsAddr+"/metrics")
	})
	if err := proc.Stop(30 * time.Second); err != nil {
		t.Errorf("scale after SIGTERM: %v, want exit status 0", err)
	}
	if _, err := os.Stat(filepath.Join(data, "postgres", "data", "postmaster.pid")); !os.IsNotExist(err) {
		t.Errorf("the local Postgres is still running after scale stopped (postmaster.pid: %v)", err)
	}
}

// statusOf is the status of GET url, 0 when nothing answers.
func statusOf(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestScaleKilledMidRunStartsAgain: the one-command run SIGKILLed while it
// works leaves its local Postgres running; started again on the same data
// folder it takes that server over, and finishes with every file accounted
// for exactly once.
func TestScaleKilledMidRunStartsAgain(t *testing.T) {
	root := testenv.SharedCorpus(t)
	rels, err := corpus.Files(root)
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	start := func(name string) *launcher.Process {
		port, err := freeport.Get()
		if err != nil {
			t.Fatal(err)
		}
		return startProcess(t, launcher.Spec{
			Name: name, Binary: bins["scale"],
			Env: []string{"SCALE_DATA=" + data, "SCALE_INGEST_SOURCE=" + root, "SCALE_OPS_ADDR=127.0.0.1:0",
				fmt.Sprintf("SCALE_API_ADDR=127.0.0.1:%d", port), "SCALE_OPS_LOG_LEVEL=warn", "SCALE_EXTRACT_ACK_WAIT=2s",
				"SCALE_EXTRACT_CONCURRENCY=1", "SCALE_EXTRACT_FETCH_BATCH=4"},
		})
	}
	first := start("scale-1")
	testenv.Poll(t, "the first run to be under way", 2*time.Minute, func() (bool, string) {
		return strings.Contains(first.Log(), "extract: "), first.Log()
	})
	first.Kill()
	if strings.Contains(first.Log(), "scale: all ") {
		t.Fatal("the first run finished before the kill")
	}
	pid := filepath.Join(data, "postgres", "data", "postmaster.pid")
	if _, err := os.Stat(pid); err != nil {
		t.Fatalf("the killed run's Postgres is not running (%v): nothing to take over", err)
	}

	second := start("scale-2")
	want := expect(t, root, rels)
	done := fmt.Sprintf("scale: all %d files finished: %d songs, %d failures (balanced: true)", want.files, want.songs, want.failures)
	testenv.Poll(t, "the second run to finish", 3*time.Minute, func() (bool, string) {
		return strings.Contains(second.Log(), done), second.Log()
	})
	if err := second.Stop(30 * time.Second); err != nil {
		t.Errorf("scale after SIGTERM: %v", err)
	}
	if _, err := os.Stat(pid); !os.IsNotExist(err) {
		t.Errorf("Postgres still running after the second run stopped (%v)", err)
	}
}

// checkDashboardMetrics fails the test unless every metric the Grafana
// dashboard queries (but the chaos runner's, checked in its own module) is
// among those the service at url exports.
func checkDashboardMetrics(t *testing.T, url string) {
	want, err := dashboard.Metrics("..")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, name := range want {
		if strings.HasPrefix(name, "scale_chaos_") {
			continue
		}
		checked++
		if families[name] == nil {
			t.Errorf("the dashboard queries %s, which scale does not export", name)
		}
	}
	if checked < 10 {
		t.Errorf("only %d of the dashboard's metrics checked: %v", checked, want)
	}
}
