package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// LeaseKey names a lease: the key of its Postgres advisory lock.
type LeaseKey int64

// SimilarityWriter is the lease of the one process allowed to write the
// similarity lists: its lists come from an index of every song, and two
// writers sharing the stream would each see half of them.
const SimilarityWriter LeaseKey = 0x5CA1E_0002

// ErrLeaseHeld is returned by TryLease when another session holds the lease.
var ErrLeaseHeld = errors.New("lease held by another process")

// Lease is a session-level advisory lock held on a connection kept out of the
// pool for the holder's life. The holder writes through the lease's own
// session (see Lease.WriteSimilar), so a write can only commit while the lock
// is held: when the session dies (the process is killed, the connection or
// the server is lost), Postgres frees the lock and the next holder can start,
// and the old holder's writes fail instead of racing the new one's.
type Lease struct {
	key  LeaseKey
	mu   sync.Mutex // one user of conn at a time: writes and the keep-alive
	conn *pgxpool.Conn
	lost chan struct{}
	stop chan struct{}
	done chan struct{}
}

// leaseCheck is how often a held lease checks that its session is alive.
const leaseCheck = time.Second

// TryLease takes the lease if it is free, or returns ErrLeaseHeld.
func (s *Store) TryLease(ctx context.Context, key LeaseKey) (*Lease, error) {
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("taking lease %#x: %w", int64(key), err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", int64(key)).Scan(&ok); err != nil {
		conn.Release()
		return nil, fmt.Errorf("taking lease %#x: %w", int64(key), err)
	}
	if !ok {
		conn.Release()
		return nil, ErrLeaseHeld
	}
	l := &Lease{key: key, conn: conn, lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go l.keepAlive()
	return l, nil
}

// WaitLease takes the lease as soon as it is free, trying every poll, until
// ctx ends. waiting is called once if the lease is held when first tried.
func (s *Store) WaitLease(ctx context.Context, key LeaseKey, poll time.Duration, waiting func()) (*Lease, error) {
	told := false
	for {
		l, err := s.TryLease(ctx, key)
		switch {
		case err == nil:
			return l, nil
		case errors.Is(err, ErrLeaseHeld):
			if !told && waiting != nil {
				waiting()
				told = true
			}
		case ctx.Err() != nil:
			return nil, err
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// keepAlive checks the session every leaseCheck and closes lost when it
// fails.
func (l *Lease) keepAlive() {
	defer close(l.done)
	t := time.NewTicker(leaseCheck)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := l.conn.Exec(ctx, "SELECT 1")
		cancel()
		l.mu.Unlock()
		if err != nil {
			close(l.lost)
			return
		}
	}
}

// Lost is closed when the lease's session has failed: the lock is gone.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Release gives the lease up and returns its connection to the pool (or
// closes it when the session failed).
func (l *Lease) Release() {
	close(l.stop)
	<-l.done
	select {
	case <-l.lost:
		l.conn.Conn().Close(context.Background()) //nolint:errcheck // already failed
	default:
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := l.conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", int64(l.key))
		cancel()
		if err != nil {
			l.conn.Conn().Close(context.Background()) //nolint:errcheck // the lock goes with the session
		}
	}
	l.conn.Release()
}

// inTx runs fn in a transaction on the lease's session.
func (l *Lease) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.lost:
		return errors.New("lease lost")
	default:
	}
	return pgx.BeginFunc(ctx, l.conn, fn)
}
