// Package freeport finds unused TCP ports on the loopback interface.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
)

// Get returns a TCP port on 127.0.0.1 that was free a moment ago.
//
// It is drawn at random from below the kernel's ephemeral range: a port the
// kernel hands out itself (to a listener on port 0, as this package used to
// take, or to any outgoing connection) can be handed out again before the
// process it was found for binds it, and busy test machines hit that race
// ("address already in use" for a chaos run's API). Below the range only
// another caller that names the port can take it.
func Get() (int, error) {
	if lo, hi, ok := outsideEphemeral(); ok {
		for range 64 {
			port := lo + rand.IntN(hi-lo)
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				continue // taken: draw again
			}
			l.Close()
			return port, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// minPort is the lowest port Get draws: above the well-known and most
// registered services' ports.
const minPort = 10000

// outsideEphemeral is the range [lo, hi) Get draws from: minPort up to the
// first ephemeral port (Linux's ip_local_port_range; 32768 by default).
func outsideEphemeral() (lo, hi int, ok bool) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, false
	}
	var first, last int
	if _, err := fmt.Sscan(string(b), &first, &last); err != nil || first-minPort < 1000 {
		return 0, 0, false
	}
	return minPort, first, true
}
