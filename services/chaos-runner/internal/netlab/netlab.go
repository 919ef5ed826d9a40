// Package netlab gives the chaos runner's local driver real hosts on one
// machine: each host a network namespace of its own with one address, all
// joined by a bridge in a switch namespace, so that a partition is what it
// is on a real network: nftables dropping packets between addresses.
//
// Nothing is made in this machine's own namespace. Every namespace is held by
// a process that dies with the runner, and the kernel removes a namespace
// with its links, addresses and nftables rules once the last process in it
// has exited: a killed runner leaves nothing behind. A cut is a set element
// with a timeout, so the kernel itself heals it when its TTL passes, whatever
// becomes of the runner.
package netlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/nsenter"
)

// Subnet is the lab's addresses: the switch is .1, the runner's forwarders
// (the components outside the lab) .2 to .9, hosts from .10.
var Subnet = netip.MustParsePrefix("10.213.0.0/24")

const (
	firstForward = 2
	firstHost    = 10
	tableName    = "scale-chaos"
	cutSet       = "cut"
)

// Lab is a running set of hosts.
type Lab struct {
	dir     string
	sw      *namespace
	bridge  netlink.Link
	mu      sync.Mutex
	hosts   map[string]*Host
	forward map[string]netip.Addr // component outside the lab → its address on the switch
	closers []io.Closer
}

// Host is one namespace with one address.
type Host struct {
	Name string
	Addr netip.Addr
	ns   *namespace
	set  *nftables.Set
}

// NS is the host's namespace as a path, for launcher.Spec.NetNS.
func (h *Host) NS() string { return h.ns.path }

// namespace is a network namespace held open by a process.
type namespace struct {
	holder *launcher.Process
	path   string
	handle netns.NsHandle
	link   *netlink.Handle
}

// newNamespace starts a holder process in a new network namespace, with its
// loopback up.
func newNamespace(dir, name string) (*namespace, error) {
	p, err := launcher.Start(launcher.Spec{Name: "netns-" + name, Binary: "sleep", Args: []string{"infinity"},
		LogPath: filepath.Join(dir, "netns-"+name+".log"), DieWithParent: true, NewNetNS: true})
	if err != nil {
		return nil, err
	}
	n := &namespace{holder: p, path: "/proc/" + strconv.Itoa(p.Pid()) + "/ns/net"}
	if n.handle, err = netns.GetFromPath(n.path); err != nil {
		p.Kill()
		return nil, fmt.Errorf("namespace of %s: %w", name, err)
	}
	if n.link, err = netlink.NewHandleAt(n.handle); err != nil {
		n.close()
		return nil, fmt.Errorf("netlink in %s: %w", name, err)
	}
	lo, err := n.link.LinkByName("lo")
	if err == nil {
		err = n.link.LinkSetUp(lo)
	}
	if err != nil {
		n.close()
		return nil, fmt.Errorf("loopback of %s: %w", name, err)
	}
	return n, nil
}

func (n *namespace) close() {
	if n.link != nil {
		n.link.Close()
	}
	n.handle.Close() //nolint:errcheck // closing a descriptor
	n.holder.Kill()
}

// Pids are the processes that hold the lab's namespaces (the switch first):
// once none of them runs, and nothing was started inside, the lab is gone.
func (l *Lab) Pids() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	pids := []int{l.sw.holder.Pid()}
	for _, h := range l.hosts {
		pids = append(pids, h.ns.holder.Pid())
	}
	return pids
}

// New starts the switch: a namespace with a bridge holding the address .1.
func New(dir string) (_ *Lab, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	sw, err := newNamespace(dir, "switch")
	if err != nil {
		return nil, err
	}
	l := &Lab{dir: dir, sw: sw, hosts: map[string]*Host{}, forward: map[string]netip.Addr{}}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := sw.link.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	if l.bridge, err = sw.link.LinkByName("br0"); err != nil {
		return nil, err
	}
	if err := l.addAddr(1); err != nil {
		return nil, err
	}
	if err := sw.link.LinkSetUp(l.bridge); err != nil {
		return nil, fmt.Errorf("bridge up: %w", err)
	}
	return l, nil
}

// address is the lab address ending in n.
func address(n int) netip.Addr {
	a := Subnet.Addr().As4()
	a[3] = byte(n)
	return netip.AddrFrom4(a)
}

// addAddr puts address n on the switch's bridge.
func (l *Lab) addAddr(n int) error {
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: address(n).AsSlice(), Mask: net.CIDRMask(Subnet.Bits(), 32)}}
	if err := l.sw.link.AddrAdd(l.bridge, addr); err != nil {
		return fmt.Errorf("address %s on the switch: %w", address(n), err)
	}
	return nil
}

// AddHost makes a host: a namespace with a veth into the switch, its own
// address, and an nftables table whose set of cut addresses it drops.
func (l *Lab) AddHost(name string) (*Host, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.hosts[name]; ok {
		return nil, fmt.Errorf("host %s exists", name)
	}
	n := firstHost + len(l.hosts)
	if n > 254 {
		return nil, errors.New("the lab is full")
	}
	ns, err := newNamespace(l.dir, name)
	if err != nil {
		return nil, err
	}
	h := &Host{Name: name, Addr: address(n), ns: ns}
	if err := l.wire(h, n); err != nil {
		ns.close()
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	l.hosts[name] = h
	return h, nil
}

// wire joins a host's namespace to the switch and sets up its firewall.
func (l *Lab) wire(h *Host, n int) error {
	outside := "veth" + strconv.Itoa(n)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: outside, MasterIndex: l.bridge.Attrs().Index},
		PeerName: "eth0", PeerNamespace: netlink.NsFd(h.ns.handle)}
	if err := l.sw.link.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth: %w", err)
	}
	sw, err := l.sw.link.LinkByName(outside)
	if err != nil {
		return err
	}
	if err := l.sw.link.LinkSetUp(sw); err != nil {
		return err
	}
	eth, err := h.ns.link.LinkByName("eth0")
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: h.Addr.AsSlice(), Mask: net.CIDRMask(Subnet.Bits(), 32)}}
	if err := h.ns.link.AddrAdd(eth, addr); err != nil {
		return err
	}
	if err := h.ns.link.LinkSetUp(eth); err != nil {
		return err
	}
	return h.firewall()
}

// firewall adds the host's table: packets to or from an address in the
// "cut" set are dropped, and the set's elements expire by themselves.
func (h *Host) firewall() error {
	c, err := h.nft()
	if err != nil {
		return err
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: tableName})
	h.set = &nftables.Set{Table: t, Name: cutSet, KeyType: nftables.TypeIPAddr, HasTimeout: true}
	if err := c.AddSet(h.set, nil); err != nil {
		return fmt.Errorf("nftables set: %w", err)
	}
	for _, hook := range []struct {
		hook   *nftables.ChainHook
		offset uint32 // of the address to look up: the destination going out, the source coming in
	}{{nftables.ChainHookOutput, 16}, {nftables.ChainHookInput, 12}} {
		ch := c.AddChain(&nftables.Chain{Name: fmt.Sprint("hook", hook.offset), Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: hook.hook, Priority: nftables.ChainPriorityFilter})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: hook.offset, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: h.set.Name, SetID: h.set.ID},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables in %s: %w", h.Name, err)
	}
	return nil
}

func (h *Host) nft() (*nftables.Conn, error) {
	return nftables.New(nftables.WithNetNSFd(int(h.ns.handle)))
}

// Host is a host by name (nil if none).
func (l *Lab) Host(name string) *Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hosts[name]
}

// Hosts are the lab's hosts.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*Host, 0, len(l.hosts))
	for _, h := range l.hosts {
		out = append(out, h)
	}
	return out
}

// Addr is the lab address of a host or of a component the runner forwards
// to, by name.
func (l *Lab) Addr(name string) (netip.Addr, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h, ok := l.hosts[name]; ok {
		return h.Addr, true
	}
	a, ok := l.forward[name]
	return a, ok
}

// Cut drops every packet between the host and the peer addresses for ttl,
// in both directions; the kernel ends the cut when ttl passes, and heal ends
// it sooner.
func (h *Host) Cut(peers []netip.Addr, ttl time.Duration) (heal func() error, err error) {
	c, err := h.nft()
	if err != nil {
		return nil, err
	}
	elems := make([]nftables.SetElement, len(peers))
	for i, p := range peers {
		elems[i] = nftables.SetElement{Key: p.AsSlice(), Timeout: ttl}
	}
	if err := c.SetAddElements(h.set, elems); err != nil {
		return nil, err
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("cutting %s off: %w", h.Name, err)
	}
	return func() error {
		c, err := h.nft()
		if err != nil {
			return err
		}
		// One element at a time: an element that has expired already
		// fails its own delete, not the others'.
		var errs []error
		for _, e := range elems {
			if err := c.SetDeleteElements(h.set, []nftables.SetElement{{Key: e.Key}}); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := c.Flush(); err != nil {
				if still, _ := h.Cuts(); containsAddr(still, e.Key) {
					errs = append(errs, fmt.Errorf("healing %s: %w", h.Name, err))
				}
			}
		}
		return errors.Join(errs...)
	}, nil
}

func containsAddr(addrs []netip.Addr, key []byte) bool {
	k, _ := netip.AddrFromSlice(key)
	for _, a := range addrs {
		if a == k {
			return true
		}
	}
	return false
}

// Cuts are the addresses the host is cut off from now, as the kernel has them.
func (h *Host) Cuts() ([]netip.Addr, error) {
	c, err := h.nft()
	if err != nil {
		return nil, err
	}
	elems, err := c.GetSetElements(h.set)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(elems))
	for _, e := range elems {
		if a, ok := netip.AddrFromSlice(e.Key); ok {
			out = append(out, a)
		}
	}
	return out, nil
}

// Forward gives a component outside the lab (listening at upstream on this
// machine's loopback) an address on the switch: connections to the returned
// address are carried to upstream by this process. Hosts reach the
// component only this way, so a cut of its address is a partition from it.
func (l *Lab) Forward(component, upstream string) (string, error) {
	ln, err := l.Listen(component)
	if err != nil {
		return "", err
	}
	go serveForward(ln, upstream)
	return ln.Addr().String(), nil
}

// Listen listens on the switch at a component's address (given it on first
// use), on a port of the kernel's choice, for a component this process
// serves itself (a forwarder, the API's load balancer). Close closes it.
func (l *Lab) Listen(component string) (net.Listener, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	addr, ok := l.forward[component]
	if !ok {
		n := firstForward + len(l.forward)
		if n >= firstHost {
			return nil, errors.New("no address left for another forwarded component")
		}
		if err := l.addAddr(n); err != nil {
			return nil, err
		}
		addr = address(n)
		l.forward[component] = addr
	}
	var ln net.Listener
	err := nsenter.Net(l.sw.path, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listening for %s on the switch: %w", component, err)
	}
	l.closers = append(l.closers, ln)
	return ln, nil
}

// serveForward carries every connection accepted on ln to upstream until ln
// is closed.
func serveForward(ln net.Listener, upstream string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			u, err := net.DialTimeout("tcp", upstream, 5*time.Second)
			if err != nil {
				return
			}
			defer u.Close()
			done := make(chan struct{}, 2)
			pipe := func(dst, src net.Conn) {
				io.Copy(dst, src) //nolint:errcheck // a closed connection ends the copy
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite() //nolint:errcheck // passing the end of the stream on
				}
				done <- struct{}{}
			}
			go pipe(u, c)
			go pipe(c, u)
			<-done
			<-done
		}()
	}
}

// DialContext connects from the switch to an address in the lab (a host's
// listener): how the runner itself reaches a service inside.
func (l *Lab) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := nsenter.Net(l.sw.path, func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// Close stops the forwarders and every holder process; the kernel removes
// each namespace once the processes started inside it have exited too.
func (l *Lab) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.closers {
		c.Close()
	}
	for _, h := range l.hosts {
		h.ns.close()
	}
	l.hosts = map[string]*Host{}
	l.sw.close()
}
