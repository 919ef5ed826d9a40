package runner

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
)

// apiLoad is open-loop load on the API: requests leave at a constant rate
// whatever the answers' latency, so a slow API shows as latency and errors
// instead of as fewer requests (no coordinated omission).
type apiLoad struct {
	attacker *vegeta.Attacker
	done     chan struct{}

	mu      sync.Mutex
	results []apiResult // not yet taken by window
}

type apiResult struct {
	answered time.Time
	latency  float64
	err      string // "" for a success
}

// startAPILoad attacks the API at load.Rate until stop. Song ids come from
// the database as the songs arrive; the endpoint of each request is drawn by
// weight with a generator seeded from the experiment's seed.
func startAPILoad(ctx context.Context, env Environment, load experiment.APILoad, seed uint64) *apiLoad {
	weights := load.Endpoints
	if len(weights) == 0 {
		weights = map[string]float64{"similar": 0.8, "song": 0.15, "instruments": 0.05}
	}
	names := make([]string, 0, len(weights))
	for n := range weights {
		names = append(names, n)
	}
	sort.Strings(names)
	total := 0.0
	for _, n := range names {
		total += weights[n]
	}
	var idsMu sync.Mutex
	var ids []string
	refresh := func() {
		rows, err := env.DB().Pool.Query(ctx, "SELECT id FROM songs ORDER BY id LIMIT 2000")
		if err != nil {
			return
		}
		var got []string
		for rows.Next() {
			var id string
			if rows.Scan(&id) == nil {
				got = append(got, id)
			}
		}
		rows.Close()
		idsMu.Lock()
		ids = got
		idsMu.Unlock()
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	var rngMu sync.Mutex
	base := "http://" + env.APIBase()
	targeter := func(t *vegeta.Target) error {
		rngMu.Lock()
		x := rng.Float64() * total
		pickID := rng.Int()
		rngMu.Unlock()
		endpoint := names[len(names)-1]
		for _, n := range names {
			if x < weights[n] {
				endpoint = n
				break
			}
			x -= weights[n]
		}
		idsMu.Lock()
		id := ""
		if len(ids) > 0 {
			id = ids[pickID%len(ids)]
		}
		idsMu.Unlock()
		t.Method = http.MethodGet
		switch {
		case id == "" || endpoint == "instruments":
			t.URL = base + "/v1/instruments"
		case endpoint == "song":
			t.URL = base + "/v1/songs/" + id
		default:
			t.URL = base + "/v1/songs/" + id + "/similar"
		}
		return nil
	}
	client := envClient(env, 5*time.Second)
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = vegeta.DefaultConnections
	l := &apiLoad{attacker: vegeta.NewAttacker(vegeta.Client(client)), done: make(chan struct{})}
	results := l.attacker.Attack(targeter, vegeta.Rate{Freq: load.Rate, Per: time.Second}, 0, "api")
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		refresh()
		for {
			select {
			case <-l.done:
				return
			case <-t.C:
				refresh()
			}
		}
	}()
	go func() {
		for res := range results {
			r := apiResult{answered: res.Timestamp.Add(res.Latency), latency: res.Latency.Seconds()}
			if res.Code < 200 || res.Code >= 400 || res.Error != "" {
				r.err = fmt.Sprintf("%d %s", res.Code, res.Error)
			}
			l.mu.Lock()
			l.results = append(l.results, r)
			l.mu.Unlock()
		}
	}()
	return l
}

// window returns the results of the requests answered (or failed) before
// until and not taken yet: a request belongs to the moment its client got
// the answer, so one in flight when a fault hits counts with the fault.
func (l *apiLoad) window(until time.Time) APIWindow {
	l.mu.Lock()
	var taken, kept []apiResult
	for _, r := range l.results {
		if r.answered.Before(until) {
			taken = append(taken, r)
		} else {
			kept = append(kept, r)
		}
	}
	l.results = kept
	l.mu.Unlock()
	w := APIWindow{Requests: len(taken)}
	lat := make([]float64, 0, len(taken))
	for _, r := range taken {
		lat = append(lat, r.latency)
		if r.err != "" {
			w.Errors++
			w.LastError = r.err
		}
	}
	if len(lat) > 0 {
		sort.Float64s(lat)
		w.P50 = lat[len(lat)/2]
		w.P99 = lat[min(len(lat)-1, int(0.99*float64(len(lat))))]
	}
	return w
}

func (l *apiLoad) stop() {
	l.attacker.Stop()
	close(l.done)
}

// envClient is an HTTP client that reaches the environment's services
// (with hosts, from the lab's switch).
func envClient(env Environment, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: env.Dial}}
}

// apiReady reports whether every API process answers /readyz.
func apiReady(env Environment) bool {
	c := envClient(env, time.Second)
	defer c.CloseIdleConnections()
	for _, addr := range env.APIs() {
		resp, err := c.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false
		}
	}
	return true
}
