package config_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scale-dev/scale/internal/config"
	"github.com/scale-dev/scale/internal/ops"
)

// TestProbe asks a real ops endpoint, as a container's health check does.
func TestProbe(t *testing.T) {
	health := ops.NewHealth()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: ops.Handler(prometheus.NewRegistry(), health)}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	var dbDown bool
	health.AddCheck("postgres", func(context.Context) error {
		if dbDown {
			return errors.New("connection refused")
		}
		return nil
	})
	tests := []struct {
		name    string
		addr    string
		path    string
		phase   ops.Phase
		dbDown  bool
		wantErr string
	}{
		{name: "ready", addr: "127.0.0.1:" + port, path: "/readyz", phase: ops.Running},
		{name: "wildcard host asked on loopback", addr: "0.0.0.0:" + port, path: "/readyz", phase: ops.Running},
		{name: "empty host", addr: ":" + port, path: "/readyz", phase: ops.Running},
		{name: "starting", addr: "127.0.0.1:" + port, path: "/readyz", phase: ops.Starting, wantErr: "503"},
		{name: "dependency down", addr: "127.0.0.1:" + port, path: "/readyz", phase: ops.Running, dbDown: true, wantErr: "503"},
		{name: "alive while a dependency is down", addr: "127.0.0.1:" + port, path: "/healthz", phase: ops.Running, dbDown: true},
		{name: "nothing listening", addr: "127.0.0.1:1", path: "/readyz", wantErr: "refused"},
		{name: "bad address", addr: "no-port", path: "/readyz", wantErr: "ops address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			health.SetPhase(tt.phase)
			dbDown = tt.dbDown
			var out bytes.Buffer
			err := config.Probe(tt.addr, tt.path, &out)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("probe: %v (%s)", err, out.String())
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("probe = %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
}

// TestGCPercent: the target applies when GOGC is unset, and GOGC wins when set.
func TestGCPercent(t *testing.T) {
	original := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(original) })
	for _, tc := range []struct {
		name string
		gogc string // "" leaves GOGC unset
		want int
	}{
		{"unset", "", 250},
		{"set", "100", 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOGC", tc.gogc)
			if tc.gogc == "" {
				os.Unsetenv("GOGC") // t.Setenv restores it afterwards
			}
			debug.SetGCPercent(100)
			config.GCPercent(250)
			if got := debug.SetGCPercent(100); got != tc.want {
				t.Errorf("GC percent = %d, want %d", got, tc.want)
			}
		})
	}
}
