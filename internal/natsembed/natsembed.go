// Package natsembed runs NATS servers with JetStream inside the process: the
// embedded default of the one-command run, and the real NATS of the tests
// (single node, or a 3-node cluster that a test can take nodes out of).
package natsembed

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/scale-dev/scale/internal/freeport"
)

// Options for one embedded server.
type Options struct {
	Host     string // default 127.0.0.1
	Port     int    // -1 picks a free port
	StoreDir string // JetStream file storage
	Name     string
	// Cluster: a route listener and the routes to the other nodes.
	ClusterName string
	ClusterPort int
	Routes      []string
}

// Start runs one server and waits until it accepts connections.
func Start(o Options) (*server.Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	opts := &server.Options{
		ServerName: o.Name,
		Host:       o.Host,
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
	}
	if o.ClusterName != "" {
		opts.Cluster = server.ClusterOpts{Name: o.ClusterName, Host: o.Host, Port: o.ClusterPort}
		for _, r := range o.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	return Serve(opts)
}

// Serve runs a server with any options (a configuration file's, monitoring,
// accounts: what Options does not offer), without signal handlers or logs,
// and waits until it accepts connections.
func Serve(opts *server.Options) (*server.Server, error) {
	opts.NoSigs, opts.NoLog = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configuring NATS server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded NATS server not ready after 30s")
	}
	return s, nil
}

// Cluster is a set of routed servers with JetStream. Each node keeps its
// client port, route port and store across a restart, as a real node would.
type Cluster struct {
	Servers []*server.Server // nil while a node is stopped
	opts    []Options
}

// StartCluster runs n routed servers storing under storeDir(i), and waits until
// JetStream has a meta leader. With n = 1 the one server runs standalone.
// The ports are picked free beforehand (the routes must name them), so
// another process may take one in between: then the cluster is started
// again on new ports, up to three times.
func StartCluster(n int, storeDir func(i int) string) (*Cluster, error) {
	var err error
	for range 3 {
		var c *Cluster
		if c, err = startCluster(n, storeDir); err == nil {
			return c, nil
		}
	}
	return nil, err
}

func startCluster(n int, storeDir func(i int) string) (*Cluster, error) {
	ports := make([]int, 2*n) // client ports, then route ports
	for i := range ports {
		p, err := freeport.Get()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	c := &Cluster{}
	for i := 0; i < n; i++ {
		var routes []string
		for j := 0; j < n; j++ {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[n+j]))
			}
		}
		o := Options{Port: ports[i], StoreDir: storeDir(i), Name: fmt.Sprintf("n%d", i), ClusterName: "scale", ClusterPort: ports[n+i], Routes: routes}
		if n == 1 {
			o = Options{Port: ports[i], StoreDir: storeDir(i), Name: "n0"}
		}
		s, err := Start(o)
		if err != nil {
			c.Shutdown()
			return nil, err
		}
		c.Servers = append(c.Servers, s)
		c.opts = append(c.opts, o)
	}
	if err := c.waitMetaLeader(20 * time.Second); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// waitMetaLeader waits until the cluster has a JetStream meta leader that
// sees every other running node online and caught up: before that, a
// replicated stream can be refused ("no suitable peers for placement").
func (c *Cluster) waitMetaLeader(timeout time.Duration) error {
	if len(c.opts) == 1 {
		return nil // standalone: no election
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		running := 0
		for _, s := range c.Servers {
			if s != nil {
				running++
			}
		}
		for _, s := range c.Servers {
			if s != nil && s.JetStreamIsLeader() && peersCurrent(s) == running-1 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("NATS cluster had no JetStream meta leader seeing every running node in %v", timeout)
}

// peersCurrent counts the meta leader's peers that are online and caught up.
func peersCurrent(leader *server.Server) int {
	jsz, err := leader.Jsz(nil)
	if err != nil || jsz.Meta == nil {
		return 0
	}
	n := 0
	for _, p := range jsz.Meta.Replicas {
		if p.Current && !p.Offline {
			n++
		}
	}
	return n
}

// Stop shuts node i down (a lost node); Restart brings it back.
func (c *Cluster) Stop(i int) {
	if s := c.Servers[i]; s != nil {
		s.Shutdown()
		s.WaitForShutdown()
		c.Servers[i] = nil
	}
}

// Restart starts node i again on the same ports and store, and waits until
// the cluster has a meta leader and the node's JetStream has caught up with
// it (a client that reconnects to a node still starting JetStream gets "no
// responders" to its API requests).
func (c *Cluster) Restart(i int) error {
	c.Stop(i)
	s, err := Start(c.opts[i])
	if err != nil {
		return fmt.Errorf("restarting NATS node %d: %w", i, err)
	}
	c.Servers[i] = s
	if err := c.waitMetaLeader(20 * time.Second); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for !(s.JetStreamEnabled() && (!s.JetStreamIsClustered() || s.JetStreamIsCurrent())) {
		if time.Now().After(deadline) {
			return fmt.Errorf("NATS node %d: JetStream not current 30 s after its restart", i)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// ClientURL is node i's client URL, whether it runs or not.
func (c *Cluster) ClientURL(i int) string {
	return fmt.Sprintf("nats://127.0.0.1:%d", c.opts[i].Port)
}

// URL lists every node's client URL, comma-separated, as nats.Connect takes
// it: a client given all of them reconnects to whichever nodes run.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.opts))
	for i := range c.opts {
		urls[i] = c.ClientURL(i)
	}
	return strings.Join(urls, ",")
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	for _, s := range c.Servers {
		if s != nil {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
}
