// Package tests holds the end-to-end tests of the pipeline on real parts: the
// shared corpus goes through ingest → NATS JetStream → extract processes →
// Postgres.
package tests

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scale-dev/scale/internal/accounting"
	"github.com/scale-dev/scale/internal/corpus"
	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/midiparse"
	"github.com/scale-dev/scale/internal/objstore"
	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/testenv"
	"github.com/scale-dev/scale/internal/transport"
	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/extract"
	"github.com/scale-dev/scale/services/ingest"
)

// bins are the binaries the tests run as processes, built once by TestMain.
var bins map[string]string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "scale-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins, err = launcher.Build("..", dir, map[string]string{
		"ingest":     "./services/ingest/cmd/ingest",
		"extract":    "./services/extract/cmd/extract",
		"similarity": "./services/similarity/cmd/similarity",
		"scale":      "./cmd/scale",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := testenv.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// copyFiles copies each shared-corpus file rels[i] under root to dst(i, rel)
// (a path), creating folders as needed.
func copyFiles(t *testing.T, root string, rels []string, dst func(i int, rel string) string) {
	t.Helper()
	for i, rel := range rels {
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		to := dst(i, rel)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// expectation is what the corpus must become, computed here with the parser.
type expectation struct {
	files, songs, failures, instrumentRows int
}

func expect(t *testing.T, root string, rels []string) expectation {
	t.Helper()
	e := expectation{files: len(rels)}
	seen := map[string]bool{}
	for _, rel := range rels {
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		p, err := midiparse.Parse(data)
		if err != nil {
			e.failures++
			continue
		}
		sum := md5.Sum(data)
		if id := hex.EncodeToString(sum[:]); !seen[id] {
			seen[id] = true
			e.songs++
			e.instrumentRows += len(p.Instruments)
		}
	}
	return e
}

type pipeline struct {
	t       *testing.T
	pgURL   string
	natsURL string
	store   *store.Store
	js      jetstream.JetStream
	objects *objstore.Client
	log     *slog.Logger
}

func newPipeline(t *testing.T, natsURL string) *pipeline {
	ctx := context.Background()
	p := &pipeline{t: t, pgURL: testenv.PostgresURL(t), natsURL: natsURL, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var err error
	if p.store, err = store.Open(ctx, p.pgURL, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.store.Close)
	conn, err := transport.Connect(natsURL, "test", p.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.NC.Close)
	p.js = conn.JS
	if err := transport.Provision(ctx, p.js, p.log, events.PipelineStreams(events.StreamOptions{Replicas: 1, DuplicateWindow: 10 * time.Minute})...); err != nil {
		t.Fatal(err)
	}
	if p.objects, err = objstore.New(ctx, objstore.S3Config{Region: "us-east-1"}); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *pipeline) ingest(source string) ingest.Result {
	p.t.Helper()
	res, err := ingest.Run(context.Background(), ingest.Deps{JS: p.js, Store: p.store, Objects: p.objects, Log: p.log, Metrics: prometheus.NewRegistry()},
		ingest.Options{Source: source})
	if err != nil {
		p.t.Fatal(err)
	}
	return res
}

// start runs one of the binaries against the pipeline's NATS and Postgres,
// with env added; it is killed (if still running) when the test ends, and
// its log is shown if the test failed.
func (p *pipeline) start(name, bin string, env ...string) *launcher.Process {
	p.t.Helper()
	return startProcess(p.t, launcher.Spec{
		Name: name, Binary: bins[bin],
		Env: append([]string{"SCALE_NATS_URL=" + p.natsURL, "SCALE_POSTGRES_URL=" + p.pgURL, "SCALE_OPS_ADDR=127.0.0.1:0",
			"SCALE_OPS_LOG_LEVEL=warn"}, env...),
	})
}

// startProcess starts a process for the test, its log in the test's folder;
// it is killed (if still running) when the test ends, and its log is shown if
// the test failed.
func startProcess(t *testing.T, spec launcher.Spec) *launcher.Process {
	t.Helper()
	spec.LogPath = filepath.Join(t.TempDir(), spec.Name+".log")
	proc, err := launcher.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		proc.Kill()
		if t.Failed() {
			t.Logf("%s log:\n%s", spec.Name, proc.Log())
		}
	})
	return proc
}

// startExtract starts an extract process.
func (p *pipeline) startExtract(name string) *launcher.Process {
	return p.start(name, "extract", "SCALE_EXTRACT_CONCURRENCY=4", "SCALE_EXTRACT_ACK_WAIT=2s")
}

// background runs fn until the test ends, then cancels it and waits for it
// to return, failing the test on an error.
func (p *pipeline) background(what string, fn func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	p.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			p.t.Errorf("%s: %v", what, err)
		}
	})
}

func (p *pipeline) account() store.Accounting {
	p.t.Helper()
	a, err := p.store.Account(context.Background())
	if err != nil {
		p.t.Fatal(err)
	}
	return a
}

// waitFor polls the accounting until cond holds or the time is up.
func (p *pipeline) waitFor(what string, timeout time.Duration, cond func(store.Accounting) bool) store.Accounting {
	p.t.Helper()
	return testenv.Poll(p.t, what, timeout, func() (bool, store.Accounting) {
		a := p.account()
		return cond(a), a
	})
}

// settle waits (up to a minute) until a durable consumer exists and has
// nothing left to deliver or to acknowledge. A stage commits its rows before
// it publishes its events and acknowledges its messages, so the next stream is
// complete only when the stage's consumer has settled: a worker killed between
// the two leaves its messages to be redelivered after the ack wait, and they
// publish the events again (de-duplicated by Msg-Id).
func (p *pipeline) settle(stream, consumer string) {
	p.t.Helper()
	testenv.Poll(p.t, "consumer "+consumer+" to settle", time.Minute, func() (bool, *jetstream.ConsumerInfo) {
		settled, info, err := transport.Settled(context.Background(), p.js, stream, consumer)
		if err != nil {
			p.t.Fatal(err)
		}
		return settled, info
	})
}

// check waits for the extract consumer to settle, then asserts the exact
// accounting and that no outcome was counted twice.
func (p *pipeline) check(want expectation) {
	p.t.Helper()
	p.settle(events.StreamDiscovered, events.ConsumerExtract)
	a := p.account()
	if !a.Balanced() || a.Discovered != int64(want.files) || a.Songs != int64(want.songs) || a.Failures != int64(want.failures) ||
		a.Done+a.Failed != int64(want.files) {
		p.t.Errorf("accounting %+v, want %d files = %d songs + %d failures", a, want.files, want.songs, want.failures)
	}
	ctx := context.Background()
	var rows, doneWithoutSong, failedWithoutReason int
	err := p.store.Pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM song_instruments),
		(SELECT count(*) FROM discovered_files d WHERE status = 'done' AND NOT EXISTS (SELECT 1 FROM songs s WHERE s.id = d.song_id)),
		(SELECT count(*) FROM discovered_files d WHERE status = 'failed' AND NOT EXISTS (SELECT 1 FROM failures f WHERE f.source_key = d.source_key AND f.reason <> ''))`).
		Scan(&rows, &doneWithoutSong, &failedWithoutReason)
	if err != nil {
		p.t.Fatal(err)
	}
	if rows != want.instrumentRows || doneWithoutSong != 0 || failedWithoutReason != 0 {
		p.t.Errorf("instrument rows %d (want %d), done files without song %d, failed files without reason %d",
			rows, want.instrumentRows, doneWithoutSong, failedWithoutReason)
	}
	// An outcome event for every file, and only for discovered files,
	// counted by source (a redelivery is reported, not counted twice).
	r, err := accounting.Check(ctx, p.store, p.js, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	if !r.OK() || r.Files != want.files {
		p.t.Errorf("accounting: %s; lost %v, stuck %v, duplicated %v, unexpected %v", r, r.Lost, r.Stuck, r.Duplicated, r.Unexpected)
	}
	if len(r.Redelivered) > 0 {
		p.t.Logf("%d files had their outcome published again by a redelivery after the duplicate window: %v", len(r.Redelivered), r.Redelivered)
	}
}

// TestSharedCorpusTwoExtractProcesses pushes the whole shared corpus through
// ingest and two extract processes, SIGKILLs one mid-run and restarts it, and
// then ingests again: every file ends as exactly one song or one failure each
// time, and the second ingest changes nothing.
func TestSharedCorpusTwoExtractProcesses(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("uses SIGKILL on child processes")
	}
	root := testenv.SharedCorpus(t)
	rels, err := corpus.Files(root)
	if err != nil {
		t.Fatal(err)
	}
	want := expect(t, root, rels)
	srv := testenv.NATS(t)
	p := newPipeline(t, srv.ClientURL())

	res := p.ingest(root)
	if res.Listed != want.files || res.Published != want.files {
		t.Fatalf("first ingest %+v, want %d listed and published", res, want.files)
	}
	// One worker alone first, SIGKILLed once it has done a fifth of the work:
	// the rest is surely still pending, so the kill interrupts work.
	a := p.startExtract("extract-a")
	p.waitFor("some progress", time.Minute, func(a store.Accounting) bool { return a.Done+a.Failed >= int64(want.files)/5 })
	a.Kill()
	mid := p.account()
	t.Logf("killed extract-a with %d of %d files finished", mid.Done+mid.Failed, want.files)
	if mid.Pending == 0 {
		t.Fatal("the run finished before the kill landed; the kill interrupted nothing")
	}
	p.startExtract("extract-a-restarted")
	b := p.startExtract("extract-b")

	p.waitFor("every file finished", 2*time.Minute, func(a store.Accounting) bool { return a.Pending == 0 })
	p.check(want)

	res = p.ingest(root)
	if res.Listed != want.files || res.Published != 0 || res.Finished != want.files {
		t.Errorf("second ingest %+v, want %d listed, none published", res, want.files)
	}
	if n := p.streamMessages(events.StreamDiscovered); n != 0 {
		t.Errorf("%d discoveries queued after the second ingest, want none", n)
	}
	p.check(want)

	// SIGTERM drains and exits cleanly.
	if err := b.Stop(15 * time.Second); err != nil {
		t.Errorf("extract-b after SIGTERM: %v, want exit status 0 within 15 s", err)
	}
}

// streamMessages is the number of messages a stream holds.
func (p *pipeline) streamMessages(stream string) uint64 {
	p.t.Helper()
	st, err := p.js.Stream(context.Background(), stream)
	if err != nil {
		p.t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		p.t.Fatal(err)
	}
	return info.State.Msgs
}

// TestTransientErrorsAreRetried runs a worker whose database is unreachable:
// every file is put back for later (Nak), none becomes a failure; a healthy
// worker then finishes them all.
func TestTransientErrorsAreRetried(t *testing.T) {
	root := testenv.SharedCorpus(t)
	rels, err := corpus.Files(root)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rels = rels[:20]
	copyFiles(t, root, rels, func(i int, _ string) string { return filepath.Join(dir, fmt.Sprintf("%02d.mid", i)) })
	want := expect(t, root, rels)
	srv := testenv.NATS(t)
	p := newPipeline(t, srv.ClientURL())
	p.ingest(dir)

	broken, err := store.Open(context.Background(), p.pgURL, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	broken.Close() // every query now fails, as with Postgres away
	reg := prometheus.NewRegistry()
	runWorker := func(st *store.Store, reg *prometheus.Registry, until func() bool) {
		ctx, cancel := context.WithCancel(context.Background())
		w := extract.New(extract.Deps{JS: p.js, Store: st, Objects: p.objects, Log: p.log, Metrics: reg},
			extract.Options{Concurrency: 2, FetchBatch: 4, AckWait: 2 * time.Second})
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		testenv.Poll(t, "the worker's goal", time.Minute, func() (bool, struct{}) { return until(), struct{}{} })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	retries := func() float64 { return testenv.MetricValue(t, reg, "scale_extract_messages_total", "outcome", "retry") }
	runWorker(broken, reg, func() bool { return retries() >= float64(len(rels)) })
	if a := p.account(); a.Pending != int64(len(rels)) || a.Failures != 0 {
		t.Fatalf("after transient errors: %+v, want all %d pending and no failures", a, len(rels))
	}
	runWorker(p.store, prometheus.NewRegistry(), func() bool { return p.account().Pending == 0 })
	p.check(want)
}

// TestS3SourceInProcess ingests from the S3-compatible server and extracts with
// an in-process worker.
func TestS3SourceInProcess(t *testing.T) {
	root := testenv.SharedCorpus(t)
	rels, err := corpus.Files(root)
	if err != nil {
		t.Fatal(err)
	}
	rels = rels[:min(len(rels), 60)]
	s3srv := testenv.S3(t)
	s3srv.CreateBucket(t, "lmd")
	for _, rel := range rels {
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		s3srv.Put(t, "lmd", "midi/"+rel, data)
	}
	want := expect(t, root, rels)
	srv := testenv.NATS(t)
	p := newPipeline(t, srv.ClientURL())
	p.objects = s3srv.Client
	if res := p.ingest("s3://lmd/midi/"); res.Published != want.files {
		t.Fatalf("ingest %+v, want %d published", res, want.files)
	}
	w := extract.New(extract.Deps{JS: p.js, Store: p.store, Objects: p.objects, Log: p.log, Metrics: prometheus.NewRegistry()},
		extract.Options{Concurrency: 4, FetchBatch: 16})
	p.background("extract", w.Run)
	p.waitFor("every file finished", time.Minute, func(a store.Accounting) bool { return a.Discovered > 0 && a.Pending == 0 })
	p.check(want)
}
