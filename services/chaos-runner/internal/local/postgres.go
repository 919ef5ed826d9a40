package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/scale-dev/scale/internal/pglocal"
)

// pgServers are the environment's Postgres servers: one, or a primary and a
// synchronous streaming-replication standby. With a standby the runner plays
// the failover manager (what Patroni or CloudNativePG do in production): it
// checks each server through the same edge the services use, and when the
// primary has failed its checks for promoteAfter it fences it (stops it, so
// that no client writes to it again), promotes the standby, and makes the
// former primary a fresh standby of the new one. The standby is synchronous,
// so a commit the services were told of is on it before it is promoted;
// while no standby is in step (away, or catching up) there is no failover:
// the pipeline waits for its primary, as it does with one server.
type pgServers struct {
	log          *slog.Logger
	names        []string // postgres, or postgres-1 and postgres-2
	nodes        []*pglocal.Cluster
	promoteAfter time.Duration

	mu        sync.Mutex
	checkURLs []string // each server's database through its edge (set once the edges exist)
	primary   int
	down      []bool // crashed by a fault and not healed yet: only its heal starts it again
	inStep    bool   // synchronous replication on, and the standby had every earlier commit
	failovers []string
}

const pgCheckEvery = 250 * time.Millisecond

// startPostgres starts the primary and, when standby, a synchronous standby.
func startPostgres(ctx context.Context, dir string, standby bool, log *slog.Logger) (*pgServers, error) {
	s := &pgServers{log: log, names: []string{"postgres"}, promoteAfter: time.Second}
	opts := pglocal.Options{Durable: true, DieWithParent: true}
	sub := "postgres"
	if standby {
		s.names = []string{"postgres-1", "postgres-2"}
		sub = "postgres-1"
	}
	primary, err := pglocal.Start(ctx, filepath.Join(dir, sub), opts)
	if err != nil {
		return nil, err
	}
	s.nodes = append(s.nodes, primary)
	s.down = append(s.down, false)
	if err := primary.CreateDatabase(ctx, "scale"); err != nil {
		s.stop()
		return nil, err
	}
	if standby {
		st, err := pglocal.StartStandby(ctx, filepath.Join(dir, "postgres-2"), primary, opts)
		if err != nil {
			s.stop()
			return nil, err
		}
		s.nodes = append(s.nodes, st)
		s.down = append(s.down, false)
		if err := s.syncWith(ctx, 0); err != nil {
			s.stop()
			return nil, err
		}
	}
	return s, nil
}

// url is a connection URL naming every server (libpq's multi-host form):
// hosts[i] reaches server i; attrs picks the session (read-write for the
// writers: whichever server is the primary now).
func (s *pgServers) url(hosts []string, attrs string) string {
	u := s.nodes[0].URL("scale")
	u = strings.Replace(u, fmt.Sprintf("127.0.0.1:%d", s.nodes[0].Port), strings.Join(hosts, ","), 1)
	if len(hosts) > 1 {
		u += "&target_session_attrs=" + url.QueryEscape(attrs)
	}
	return u
}

// direct are the servers' own addresses (the runner's probes use them: a
// fault on an edge must not blind the runner).
func (s *pgServers) direct() []string {
	var out []string
	for _, n := range s.nodes {
		out = append(out, fmt.Sprintf("127.0.0.1:%d", n.Port))
	}
	return out
}

// primaryName names the server that is the primary now.
func (s *pgServers) primaryName() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.names[s.primary]
}

// index finds a server by name.
func (s *pgServers) index(name string) (int, error) {
	for i, n := range s.names {
		if n == name {
			return i, nil
		}
	}
	return 0, fmt.Errorf("no Postgres server %s (there are %v)", name, s.names)
}

// crash crashes a server (a fault) and returns how to heal it: a primary
// that is still the primary starts again in place; a server that is not
// (a standby, or a primary that lost its role to a failover meanwhile)
// starts again as a fresh standby of the primary.
func (s *pgServers) crash(name string) (func(context.Context) error, error) {
	i, err := s.index(name)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.nodes[i].Crash(); err != nil {
		return nil, err
	}
	s.down[i] = true
	return func(ctx context.Context) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.down[i] = false
		if i == s.primary {
			return s.nodes[i].Restart(ctx)
		}
		return s.nodes[i].Follow(ctx, s.nodes[s.primary])
	}, nil
}

// watch is the failover manager: it runs until ctx ends.
func (s *pgServers) watch(ctx context.Context) {
	if len(s.nodes) < 2 {
		return
	}
	failing := make([]time.Time, len(s.nodes)) // when each server's checks began to fail; zero while it passes
	t := time.NewTicker(pgCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		urls := s.checkURLs
		s.mu.Unlock()
		if urls == nil {
			continue
		}
		healthy := make([]bool, len(s.nodes))
		var wg sync.WaitGroup
		for i, u := range urls {
			wg.Go(func() { healthy[i] = check(ctx, u) })
		}
		wg.Wait()
		for i := range urls {
			switch {
			case healthy[i]:
				failing[i] = time.Time{}
			case failing[i].IsZero():
				failing[i] = time.Now()
			}
		}
		if err := s.step(ctx, healthy, failing); err != nil && ctx.Err() == nil {
			s.log.Warn("Postgres failover manager", "error", err)
		}
	}
}

// step acts on one round of checks.
func (s *pgServers) step(ctx context.Context, healthy []bool, failing []time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, sb := s.primary, 1-s.primary
	lost := func(i int) bool { return !healthy[i] && time.Since(failing[i]) >= s.promoteAfter }
	switch {
	case lost(p) && s.inStep && healthy[sb]:
		return s.failover(ctx, p, sb)
	case lost(sb) && s.inStep:
		// Every commit would wait for a standby that is away.
		s.inStep = false
		s.log.Warn("Postgres standby lost: the primary commits alone until it is back", "standby", s.names[sb])
		return s.nodes[p].Synchronous(ctx, false)
	case !s.inStep && healthy[p] && healthy[sb] && !s.down[sb]:
		if _, streaming, err := s.nodes[p].Role(ctx); err != nil || streaming == 0 {
			return err // not streaming yet
		}
		return s.syncWith(ctx, p)
	}
	return nil
}

// syncWith turns synchronous replication on at primary p and waits until
// its standby has every commit made before; s.mu is held (or, at start,
// nothing else runs yet).
func (s *pgServers) syncWith(ctx context.Context, p int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.nodes[p].Synchronous(ctx, true); err != nil {
		return err
	}
	if err := s.nodes[p].WaitStandbyFlushed(ctx); err != nil {
		return err
	}
	s.inStep = true
	s.log.Info("Postgres standby in step (synchronous replication)", "primary", s.names[p], "standby", s.names[1-p])
	return nil
}

// failover fences the lost primary p, promotes standby sb and makes p a
// fresh standby of it (at once if p was only cut off; at its heal if a
// fault crashed it); s.mu is held.
func (s *pgServers) failover(ctx context.Context, p, sb int) error {
	start := time.Now()
	if !s.down[p] {
		if err := s.nodes[p].Crash(); err != nil { // fencing: it must take no write again
			return fmt.Errorf("fencing %s: %w", s.names[p], err)
		}
	}
	if err := s.nodes[sb].Promote(ctx); err != nil {
		return fmt.Errorf("promoting %s: %w", s.names[sb], err)
	}
	s.primary, s.inStep = sb, false
	msg := fmt.Sprintf("%s promoted to primary in %s, %s fenced", s.names[sb], time.Since(start).Round(time.Millisecond), s.names[p])
	s.failovers = append(s.failovers, msg)
	s.log.Warn("Postgres failover", "primary", s.names[sb], "former", s.names[p], "took", time.Since(start))
	if s.down[p] {
		return nil // its heal makes it a standby
	}
	return s.nodes[p].Follow(ctx, s.nodes[sb])
}

// check reports whether the database at u answers within a second (100 ms
// of latency on the edge is slowness, not loss: it passes).
func check(ctx context.Context, u string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return false
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx) == nil
}

// Failovers are the failovers the manager carried out, in order.
func (s *pgServers) Failovers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.failovers...)
}

// pids are the running servers' postmasters by name.
func (s *pgServers) pids() map[string]int {
	out := map[string]int{}
	for i, n := range s.nodes {
		if pid := n.Pid(); pid != 0 {
			out[s.names[i]] = pid
		}
	}
	return out
}

// stop stops every server; a failover step in progress finishes first (its
// context is ended by then), so that none starts a server after this.
func (s *pgServers) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, n := range s.nodes {
		errs = append(errs, n.Stop())
	}
	return errors.Join(errs...)
}
