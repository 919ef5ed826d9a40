package deploy_test

import (
	"os"
	"sync"
	"testing"

	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/testenv"
)

var (
	binsOnce sync.Once
	binsDir  string
	bins     map[string]string
	binsErr  error
)

func TestMain(m *testing.M) {
	code := testenv.Main(m)
	if binsDir != "" {
		os.RemoveAll(binsDir)
	}
	os.Exit(code)
}

// binaries builds the services' binaries once for the package's tests.
func binaries(t *testing.T) map[string]string {
	t.Helper()
	binsOnce.Do(func() {
		var root string
		if root, binsErr = launcher.RepoRoot(); binsErr != nil {
			return
		}
		if binsDir, binsErr = os.MkdirTemp("", "scale-deploy-bins-"); binsErr != nil {
			return
		}
		bins, binsErr = launcher.Build(root, binsDir, map[string]string{
			"ingest": "./services/ingest/cmd/ingest", "extract": "./services/extract/cmd/extract",
			"similarity": "./services/similarity/cmd/similarity", "api": "./services/api/cmd/api",
			"chaos-runner": "./services/chaos-runner",
		})
	})
	if binsErr != nil {
		t.Fatal(binsErr)
	}
	return bins
}
