// Package pglocal runs a PostgreSQL cluster from the installed server binaries
// (initdb, pg_ctl) under a data folder: the throwaway cluster of the test harness,
// and the local database of the embedded one-command run.
package pglocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/scale-dev/scale/internal/freeport"
)

// Cluster is a running local PostgreSQL server.
type Cluster struct {
	Dir  string // the cluster's folder (data, socket and log live inside)
	Port int
	User string // the superuser role, trusted on loopback
	bin  string
	cred *syscall.Credential
	opts string // the server's options, kept for Restart
	// child is the postmaster when it runs as this process's child
	// (Options.DieWithParent); nil when pg_ctl started it as a daemon.
	child       *exec.Cmd
	childExited chan struct{}
	dieWithUs   bool
}

// Options tune Start.
type Options struct {
	Port    int  // 0 picks a free port
	Durable bool // false turns off fsync: fast, for throwaway clusters
	// DieWithParent runs the postmaster as a child of this process that the
	// kernel kills when this process dies, however it dies (the chaos
	// runner's environment must not outlive it); otherwise pg_ctl starts it
	// as a daemon that outlives this process (the one-command run takes such
	// a server over at its next start).
	DieWithParent bool
	// Settings are more server settings, each name=value (no spaces), such
	// as shared_buffers=1GB.
	Settings []string
}

// BinDir finds the folder holding initdb and pg_ctl: on PATH, or the newest
// /usr/lib/postgresql/*/bin (Debian's layout).
func BinDir() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(p), "initdb")); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's postgresql package")
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// Start initialises dir (if it holds no cluster yet) and starts the server on
// 127.0.0.1. PostgreSQL refuses to run as root, so as root the cluster belongs
// to the "postgres" or "nobody" user.
func Start(ctx context.Context, dir string, o Options) (*Cluster, error) {
	c, err := newCluster(dir, o)
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err != nil {
		if err := c.run(ctx, "initdb", "-D", data, "-U", c.User, "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"); err != nil {
			return nil, err
		}
	}
	// A server left running on this folder by a process that was killed
	// (its owner never stopped it) is taken over: stopped, then started
	// again with this start's options.
	if c.run(ctx, "pg_ctl", "status", "-D", data) == nil {
		if err := c.run(ctx, "pg_ctl", "stop", "-m", "fast", "-w", "-D", data); err != nil {
			return nil, fmt.Errorf("stopping the server left running in %s: %w", data, err)
		}
	}
	if err := c.start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// StartStandby starts a streaming-replication standby of primary in dir:
// a base backup of the primary, then a server that replays its WAL as it
// comes and answers read-only queries (hot standby).
func StartStandby(ctx context.Context, dir string, primary *Cluster, o Options) (*Cluster, error) {
	c, err := newCluster(dir, o)
	if err != nil {
		return nil, err
	}
	if err := c.Follow(ctx, primary); err != nil {
		return nil, err
	}
	return c, nil
}

func newCluster(dir string, o Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, Port: o.Port, User: "scale", bin: bin, dieWithUs: o.DieWithParent}
	if c.Port == 0 {
		if c.Port, err = freeport.Get(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	if os.Geteuid() == 0 {
		if c.cred, err = unprivileged(); err != nil {
			return nil, err
		}
		if err := chownTree(dir, c.cred); err != nil {
			return nil, err
		}
	}
	c.setOptions(o)
	return c, nil
}

// Follow makes this server, which must not be running, a fresh standby of
// primary on its own port: its data is replaced by a base backup of the
// primary (WAL streamed during the backup, standby.signal and
// primary_conninfo written), and it starts. A former primary rejoins this
// way after a failover: its own WAL may hold commits the new primary never
// had, so it starts over from the new primary's state.
func (c *Cluster) Follow(ctx context.Context, primary *Cluster) error {
	data := filepath.Join(c.Dir, "data")
	if err := os.RemoveAll(data); err != nil {
		return fmt.Errorf("clearing %s for a base backup: %w", data, err)
	}
	if err := c.run(ctx, "pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port), "-U", primary.User,
		"-D", data, "-X", "stream", "-R", "-c", "fast", "--no-sync"); err != nil {
		return fmt.Errorf("base backup from the primary: %w", err)
	}
	return c.start(ctx)
}

// Promote ends a standby's recovery: it becomes a primary that accepts
// writes, on the timeline after its last replayed WAL.
func (c *Cluster) Promote(ctx context.Context) error {
	return c.run(ctx, "pg_ctl", "promote", "-w", "-t", "60", "-D", filepath.Join(c.Dir, "data"))
}

// Synchronous turns synchronous replication on or off on a primary: on, a
// commit returns only once a standby has flushed it, so that a standby
// promoted after the primary is lost has every commit a client was told of.
// Off, the primary commits alone (what it must do while its standby is away,
// or every commit would wait for it).
func (c *Cluster) Synchronous(ctx context.Context, on bool) error {
	q := "ALTER SYSTEM RESET synchronous_standby_names"
	if on {
		q = "ALTER SYSTEM SET synchronous_standby_names = '*'"
	}
	return c.exec(ctx, q, "SELECT pg_reload_conf()")
}

// WaitStandbyFlushed waits until a streaming standby has flushed all the WAL
// this primary has written so far: from then on it holds every commit made
// before the call.
func (c *Cluster) WaitStandbyFlushed(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres")+"&connect_timeout=2")
	if err != nil {
		return fmt.Errorf("connecting to local Postgres: %w", err)
	}
	defer conn.Close(ctx)
	var lsn string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		return err
	}
	for {
		var flushed bool
		err := conn.QueryRow(ctx, "SELECT coalesce(bool_or(flush_lsn >= $1::pg_lsn), false) FROM pg_stat_replication WHERE state = 'streaming'", lsn).Scan(&flushed)
		if err != nil || flushed {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for a standby to flush %s: %w", lsn, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Role tells a primary from a standby: the answer of pg_is_in_recovery, and
// how many standbys stream from this server.
func (c *Cluster) Role(ctx context.Context) (standby bool, streaming int, err error) {
	conn, err := pgx.Connect(ctx, c.URL("postgres")+"&connect_timeout=2")
	if err != nil {
		return false, 0, err
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, "SELECT pg_is_in_recovery(), (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming')").Scan(&standby, &streaming)
	return standby, streaming, err
}

func (c *Cluster) exec(ctx context.Context, statements ...string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres")+"&connect_timeout=2")
	if err != nil {
		return fmt.Errorf("connecting to local Postgres: %w", err)
	}
	defer conn.Close(ctx)
	for _, q := range statements {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// setOptions fixes the server's options. wal_keep_size lets a standby that
// was away for a while catch up from the primary's WAL instead of needing a
// new base backup.
func (c *Cluster) setOptions(o Options) {
	c.opts = fmt.Sprintf("-h 127.0.0.1 -p %d -k %s -c max_connections=200 -c wal_keep_size=512MB", c.Port, c.Dir)
	if !o.Durable {
		c.opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
	}
	for _, setting := range o.Settings {
		c.opts += " -c " + setting
	}
}

func (c *Cluster) start(ctx context.Context) error {
	data := filepath.Join(c.Dir, "data")
	if c.dieWithUs {
		return c.startChild(ctx, data)
	}
	if err := c.run(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", data, "-l", filepath.Join(c.Dir, "server.log"), "-o", c.opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.Dir, "server.log"))
		return fmt.Errorf("%w\nserver log:\n%s", err, tail(log, 2000))
	}
	return nil
}

// startChild runs the postmaster as a child and waits until it accepts
// connections.
func (c *Cluster) startChild(ctx context.Context, data string) error {
	logf, err := os.OpenFile(filepath.Join(c.Dir, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(c.bin, "postgres"), append([]string{"-D", data}, strings.Fields(c.opts)...)...)
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: c.cred}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait() //nolint:errcheck // how it ended is in server.log
		close(exited)
	}()
	c.child, c.childExited = cmd, exited
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(c.Dir, "server.log"))
			return fmt.Errorf("postgres exited at start\nserver log:\n%s", tail(log, 2000))
		default:
		}
		if c.run(ctx, "pg_isready", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(c.Port)) == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.signalChild(syscall.SIGKILL)
			return errors.New("postgres did not accept connections within 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// signalChild signals the child postmaster and waits for it to exit.
func (c *Cluster) signalChild(sig syscall.Signal) {
	if c.child == nil {
		return
	}
	c.child.Process.Signal(sig) //nolint:errcheck // it may be gone already
	select {
	case <-c.childExited:
	case <-time.After(time.Minute):
		c.child.Process.Kill() //nolint:errcheck // last resort
		<-c.childExited
	}
	c.child = nil
}

// Pid is the postmaster's process id (0 when it is not this process's child).
func (c *Cluster) Pid() int {
	if c.child == nil {
		return 0
	}
	return c.child.Process.Pid
}

// CreateDatabase creates database name unless it exists.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connecting to local Postgres: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			return fmt.Errorf("creating database %s: %w", name, err)
		}
	}
	return nil
}

// Crash stops the server the way a crash would (immediate mode: no
// checkpoint; the next start recovers from the WAL), for chaos experiments.
func (c *Cluster) Crash() error {
	if c.dieWithUs {
		c.signalChild(syscall.SIGQUIT) // immediate shutdown
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return c.run(ctx, "pg_ctl", "stop", "-m", "immediate", "-w", "-D", filepath.Join(c.Dir, "data"))
}

// Restart starts a stopped (or crashed) server again on the same port.
func (c *Cluster) Restart(ctx context.Context) error { return c.start(ctx) }

// URL is the connection string of database db.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", c.User, c.Port, db)
}

// Stop shuts the server down (fast mode: open sessions are ended).
func (c *Cluster) Stop() error {
	if c.dieWithUs {
		c.signalChild(syscall.SIGINT) // fast shutdown
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return c.run(ctx, "pg_ctl", "stop", "-m", "fast", "-w", "-D", filepath.Join(c.Dir, "data"))
}

func (c *Cluster) run(ctx context.Context, tool string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, tool), args...)
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %v: %w\n%s", tool, args, err, tail(out.Bytes(), 2000))
	}
	return nil
}

func unprivileged() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("running as root and neither a postgres nor a nobody user exists to own the cluster")
}

// chownTree gives dir to the cluster's user and makes every parent traversable.
func chownTree(dir string, cred *syscall.Credential) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := filepath.Dir(abs); p != "/"; p = filepath.Dir(p) {
		if st, err := os.Stat(p); err == nil && st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(p, st.Mode().Perm()|0o011); err != nil {
				return fmt.Errorf("making %s traversable for the cluster user: %w", p, err)
			}
		}
	}
	return filepath.Walk(abs, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(cred.Uid), int(cred.Gid))
	})
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
