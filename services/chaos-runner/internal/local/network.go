package local

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/scale-dev/scale/internal/freeport"
	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
)

// edges are the TCP proxies (Toxiproxy, in this process) that every
// service's connections to a server go through, so that network faults can
// be put on them: one per server, named for it (postgres, s3, nats-1, ...).
// The faults live in this process: if the runner dies, the proxies die with
// it and the connections break; no fault is left behind.
type edges struct {
	server  *toxiproxy.ApiServer
	proxies map[string]*toxiproxy.Proxy
}

func newEdges() *edges {
	return &edges{
		server:  toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop()),
		proxies: map[string]*toxiproxy.Proxy{},
	}
}

// add starts a proxy on the edge to a server at upstream (host:port) and
// returns the address to connect to instead.
func (e *edges) add(server, upstream string) (string, error) {
	port, err := freeport.Get()
	if err != nil {
		return "", err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	p := toxiproxy.NewProxy(e.server, server, listen, upstream)
	if err := e.server.Collection.Add(p, true); err != nil {
		return "", fmt.Errorf("proxy for %s: %w", server, err)
	}
	e.proxies[server] = p
	return listen, nil
}

// toxic puts a fault on the edge to a server and returns how to take it off.
func (e *edges) toxic(server string, step experiment.Step, name string) (func(context.Context) error, error) {
	p := e.proxies[server]
	if p == nil {
		return nil, fmt.Errorf("no proxy on the edge to %s", server)
	}
	var typ string
	attrs := map[string]any{}
	switch step.Type {
	case "network-latency":
		typ = "latency"
		attrs["latency"] = step.Latency.D().Milliseconds()
		attrs["jitter"] = step.Jitter.D().Milliseconds()
	case "network-bandwidth":
		typ = "bandwidth"
		attrs["rate"] = step.Rate
	case "network-reset":
		typ = "reset_peer"
		attrs["timeout"] = 0
	case "network-blackhole":
		typ = "timeout" // data is held and never delivered; the connection stays open
		attrs["timeout"] = 0
	default:
		return nil, fmt.Errorf("not a network fault: %s", step.Type)
	}
	var added []string
	for _, stream := range []string{"downstream", "upstream"} {
		if typ == "reset_peer" && stream == "upstream" {
			continue
		}
		body, err := json.Marshal(map[string]any{"name": name + "-" + stream, "type": typ, "stream": stream, "toxicity": 1.0, "attributes": attrs})
		if err != nil {
			return nil, err
		}
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(string(body))); err != nil {
			return nil, fmt.Errorf("fault on the edge to %s: %w", server, err)
		}
		added = append(added, name+"-"+stream)
		if typ == "latency" {
			break // latency is added once, on the answers: a round trip pays it once
		}
	}
	return func(ctx context.Context) error {
		var first error
		for _, n := range added {
			if err := p.Toxics.RemoveToxic(ctx, n); err != nil && first == nil {
				first = err
			}
		}
		return first
	}, nil
}

// close stops every proxy.
func (e *edges) close() {
	for _, p := range e.proxies {
		p.Stop()
	}
}
