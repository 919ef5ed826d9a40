package freeport

import (
	"fmt"
	"net"
	"testing"
)

func TestGet(t *testing.T) {
	lo, hi, ranged := outsideEphemeral()
	t.Logf("drawing from [%d, %d): %v", lo, hi, ranged)
	seen := map[int]bool{}
	for range 50 {
		port, err := Get()
		if err != nil {
			t.Fatal(err)
		}
		if ranged && (port < lo || port >= hi) {
			t.Errorf("port %d is outside [%d, %d), where the kernel hands out no ports", port, lo, hi)
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Errorf("port %d is not free: %v", port, err)
			continue
		}
		l.Close()
		seen[port] = true
	}
	if len(seen) < 40 {
		t.Errorf("%d distinct ports in 50 draws; want them spread", len(seen))
	}
}
