package netlab

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/scale-dev/scale/internal/nsenter"
	"github.com/scale-dev/scale/internal/testenv"
)

// echo serves one line back on every connection until ln is closed.
func echo(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c) //nolint:errcheck // the client closes
		}()
	}
}

// reach dials addr from inside a host and reports whether a byte makes the
// round trip within 400 ms.
func reach(t *testing.T, h *Host, addr string) bool {
	t.Helper()
	var c net.Conn
	err := nsenter.Net(h.NS(), func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 400*time.Millisecond)
		return err
	})
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return false
		}
		t.Fatalf("dialing %s from %s: %v", addr, h.Name, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(400 * time.Millisecond)) //nolint:errcheck // a plain conn
	if _, err := c.Write([]byte{42}); err != nil {
		return false
	}
	b := make([]byte, 1)
	_, err = io.ReadFull(c, b)
	return err == nil && b[0] == 42
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// TestPartitionsHealInTheKernel: hosts reach each other and a forwarded
// component; a cut drops both; the kernel ends a cut at its TTL with no
// heal called; heal ends one sooner; Close leaves no holder running.
func TestPartitionsHealInTheKernel(t *testing.T) {
	testenv.Root(t)
	lab, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			lab.Close()
		}
	})
	a, err := lab.AddHost("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := lab.AddHost("b")
	if err != nil {
		t.Fatal(err)
	}

	upstream, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer upstream.Close()
	go echo(upstream)
	svc, err := lab.Forward("svc", upstream.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	var onB net.Listener
	if err := nsenter.Net(b.NS(), func() (err error) {
		onB, err = net.Listen("tcp", netip.AddrPortFrom(b.Addr, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer onB.Close()
	go echo(onB)
	svcAddr, _ := lab.Addr("svc")

	if !reach(t, a, svc) || !reach(t, a, onB.Addr().String()) || !reach(t, b, svc) {
		t.Fatal("before any cut, a host cannot reach the forwarded component or the other host")
	}
	c, err := lab.DialContext(context.Background(), "tcp", onB.Addr().String())
	if err != nil {
		t.Fatalf("the runner cannot reach a host from the switch: %v", err)
	}
	c.Close()

	const ttl = 2 * time.Second
	cutAt := time.Now()
	if _, err := a.Cut([]netip.Addr{svcAddr, b.Addr}, ttl); err != nil {
		t.Fatal(err)
	}
	if cuts, err := a.Cuts(); err != nil || len(cuts) != 2 {
		t.Fatalf("the kernel has cuts %v (%v), want 2", cuts, err)
	}
	if reach(t, a, svc) || reach(t, a, onB.Addr().String()) {
		t.Fatal("a cut host still reaches what it is cut off from")
	}
	if !reach(t, b, svc) {
		t.Fatal("a cut of a took b off the forwarded component too")
	}
	// Nobody heals this cut: the kernel must.
	testenv.Poll(t, "the kernel to end the cut at its TTL", 10*time.Second, func() (bool, string) {
		return reach(t, a, svc) && reach(t, a, onB.Addr().String()), time.Since(cutAt).String()
	})
	if healed := time.Since(cutAt); healed < ttl-200*time.Millisecond {
		t.Errorf("the cut ended after %v, before its TTL %v", healed, ttl)
	}
	if cuts, err := a.Cuts(); err != nil || len(cuts) != 0 {
		t.Errorf("after the TTL the kernel still has cuts %v (%v)", cuts, err)
	}

	heal, err := a.Cut([]netip.Addr{svcAddr}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if reach(t, a, svc) {
		t.Fatal("a cut host still reaches the forwarded component")
	}
	if err := heal(); err != nil {
		t.Fatal(err)
	}
	if !reach(t, a, svc) {
		t.Fatal("a healed cut still drops packets")
	}
	if err := heal(); err != nil {
		t.Errorf("healing a cut that is gone: %v", err)
	}

	pids := lab.Pids()
	lab.Close()
	closed = true
	for _, pid := range pids {
		if alive(pid) {
			if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
				t.Errorf("holder %d still runs after Close", pid)
			}
		}
	}
}
