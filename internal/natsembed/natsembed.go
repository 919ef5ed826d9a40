// Package natsembed runs NATS servers with JetStream inside the process: the
// embedded default of the one-command run, and the real NATS of the tests
// (single node, or a 3-node cluster that a test can take nodes out of).
package natsembed

import (
	"errors"
	"fmt"
	"github.com/scale-dev/scale/internal/freeport"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
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
		NoSigs:     true,
		NoLog:      true,
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
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configuring NATS server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded NATS server not ready after 10s")
	}
	return s, nil
}

// Cluster is a set of routed servers with JetStream.
type Cluster struct {
	Servers []*server.Server
	opts    []Options
}

// StartCluster runs n routed servers storing under storeDir(i), and waits until
// JetStream has a meta leader.
func StartCluster(n int, storeDir func(i int) string) (*Cluster, error) {
	ports := make([]int, n)
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
		for j, p := range ports {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
			}
		}
		o := Options{Port: -1, StoreDir: storeDir(i), Name: fmt.Sprintf("n%d", i), ClusterName: "scale", ClusterPort: ports[i], Routes: routes}
		s, err := Start(o)
		if err != nil {
			c.Shutdown()
			return nil, err
		}
		c.Servers = append(c.Servers, s)
		c.opts = append(c.opts, o)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range c.Servers {
			if s.JetStreamIsLeader() {
				return c, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.Shutdown()
	return nil, errors.New("NATS cluster elected no JetStream leader in 20s")
}

// URL lists every running node's client URL, comma-separated, as nats.Connect takes it.
func (c *Cluster) URL() string {
	var urls []string
	for _, s := range c.Servers {
		if s != nil && s.Running() {
			urls = append(urls, s.ClientURL())
		}
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
