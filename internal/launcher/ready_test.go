package launcher

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWaitReady: ready as soon as the check passes; an error naming the exit
// when the process ends first; an error and a killed process at the timeout.
func TestWaitReady(t *testing.T) {
	notYet := func() error { return errors.New("not yet") }
	for _, tc := range []struct {
		name, binary string
		args         []string
		ready        func() error
		want         string // in the error; empty: no error
	}{
		{"ready", "sleep", []string{"10"}, func() error { return nil }, ""},
		{"exits first", "false", nil, notYet, "exits first exited: exit status 1"},
		{"timeout", "sleep", []string{"10"}, notYet, "timeout not ready within 200ms: not yet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Start(Spec{Name: tc.name, Binary: tc.binary, Args: tc.args, LogPath: filepath.Join(t.TempDir(), "log")})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Kill()
			err = p.WaitReady(200*time.Millisecond, tc.ready)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("WaitReady: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("WaitReady: %v, want an error with %q", err, tc.want)
			}
			select {
			case <-p.Done():
			default:
				t.Error("the process still runs after WaitReady failed")
			}
		})
	}
}
