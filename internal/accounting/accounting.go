// Package accounting checks, independently of the services, that a workload
// went through the pipeline exactly once: every file one song or one failure
// in Postgres and an outcome event on MIDI_OUTCOMES, none left pending, none
// counted twice; and that the similarity lists equal a brute force over the
// database. The end-to-end tests and the chaos runner's verdict both use it.
package accounting

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scale-dev/scale/internal/store"
	"github.com/scale-dev/scale/internal/transport"
	"github.com/scale-dev/scale/pkg/events"
)

// Report is the accounting of a workload. Files are named by their source
// URL. The lists hold every offending file, so that a person can look each up.
type Report struct {
	Files       int   `json:"files"` // the workload's files (or, without a list, the discovered ones)
	Discovered  int64 `json:"discovered"`
	Songs       int64 `json:"songs"`    // song rows (files with identical bytes share one)
	Failures    int64 `json:"failures"` // failure rows
	Done        int64 `json:"done"`
	Failed      int64 `json:"failed"`
	OutcomeMsgs int   `json:"outcome_events"`
	// Lost: a file of the workload that was never discovered, or that
	// finished in Postgres without an outcome event.
	Lost []string `json:"lost"`
	// Stuck: discovered and still pending when the check ran.
	Stuck []string `json:"stuck"`
	// Duplicated: a file counted twice: outcome events of both kinds, or a
	// file that is done with a failure row too.
	Duplicated []string `json:"duplicated"`
	// Unexpected: an outcome event for a file that was never discovered.
	Unexpected []string `json:"unexpected"`
	// Redelivered: files whose outcome was published more than once, which is
	// correct at-least-once behaviour (a redelivery after the duplicate
	// window), reported and not counted as a second file.
	Redelivered map[string]int `json:"redelivered"`
}

// OK is true when every file is accounted for exactly once.
func (r Report) OK() bool {
	return len(r.Lost) == 0 && len(r.Stuck) == 0 && len(r.Duplicated) == 0 && len(r.Unexpected) == 0 &&
		r.Done+r.Failed == r.Discovered && r.Failed == r.Failures
}

// String is the report in a line.
func (r Report) String() string {
	return fmt.Sprintf("%d files: %d discovered, %d songs + %d failures (%d done, %d failed); %d outcome events; "+
		"lost %d, stuck %d, duplicated %d, unexpected %d, redelivered %d",
		r.Files, r.Discovered, r.Songs, r.Failures, r.Done, r.Failed, r.OutcomeMsgs,
		len(r.Lost), len(r.Stuck), len(r.Duplicated), len(r.Unexpected), len(r.Redelivered))
}

// Check reads the ledger and the whole outcome stream. files lists the
// workload's source URLs; nil takes every discovered file as the workload.
func Check(ctx context.Context, st *store.Store, js jetstream.JetStream, files []string) (Report, error) {
	r := Report{Lost: []string{}, Stuck: []string{}, Duplicated: []string{}, Unexpected: []string{}}
	a, err := st.Account(ctx)
	if err != nil {
		return r, err
	}
	r.Discovered, r.Songs, r.Failures, r.Done, r.Failed = a.Discovered, a.Songs, a.Failures, a.Done, a.Failed

	status := map[string]string{}
	failureRow := map[string]bool{}
	rows, err := st.Pool.Query(ctx, `SELECT d.source_key, d.status, f.source_key IS NOT NULL
		FROM discovered_files d LEFT JOIN failures f ON f.source_key = d.source_key`)
	if err != nil {
		return r, fmt.Errorf("reading the ledger: %w", err)
	}
	var src, s string
	var hasFailure bool
	for rows.Next() {
		if err := rows.Scan(&src, &s, &hasFailure); err != nil {
			rows.Close()
			return r, err
		}
		status[src], failureRow[src] = s, hasFailure
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return r, err
	}

	// Right after a NATS node came back the stream may still be settling its
	// leadership: the read is tried again for up to a minute.
	var kinds map[string]outcomes
	for deadline := time.Now().Add(time.Minute); ; {
		if kinds, err = outcomeKinds(ctx, js); err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return r, err
		}
		time.Sleep(500 * time.Millisecond)
	}
	r.Redelivered = map[string]int{}
	for src, k := range kinds {
		r.OutcomeMsgs += k.extracted + k.failed
		if _, ok := status[src]; !ok {
			r.Unexpected = append(r.Unexpected, src)
		}
		if k.extracted > 0 && k.failed > 0 {
			r.Duplicated = append(r.Duplicated, src)
		}
		if n := k.extracted + k.failed; n > 1 {
			r.Redelivered[src] = n
		}
	}

	if files == nil {
		for src := range status {
			files = append(files, src)
		}
	}
	r.Files = len(files)
	for _, src := range files {
		s, discovered := status[src]
		k := kinds[src]
		switch {
		case !discovered:
			r.Lost = append(r.Lost, src)
		case s == "pending":
			r.Stuck = append(r.Stuck, src)
		case k.extracted+k.failed == 0:
			r.Lost = append(r.Lost, src) // finished, but nothing downstream heard of it
		case s == "done" && failureRow[src]:
			r.Duplicated = append(r.Duplicated, src)
		}
	}
	for _, l := range [][]string{r.Lost, r.Stuck, r.Duplicated, r.Unexpected} {
		sort.Strings(l)
	}
	r.Duplicated = slices.Compact(r.Duplicated)
	return r, nil
}

type outcomes struct{ extracted, failed int }

// outcomeKinds reads every message of MIDI_OUTCOMES and counts, per source
// file, the events of each kind.
func outcomeKinds(ctx context.Context, js jetstream.JetStream) (map[string]outcomes, error) {
	out := map[string]outcomes{}
	err := transport.ReadStream(ctx, js, events.StreamOutcomes, func(msg *jetstream.RawStreamMsg) error {
		var head struct{ Source string }
		if err := json.Unmarshal(msg.Data, &head); err != nil || head.Source == "" {
			return fmt.Errorf("an outcome event without a source: %q", msg.Data)
		}
		k := out[head.Source]
		if msg.Subject == events.SubjectFailed {
			k.failed++
		} else {
			k.extracted++
		}
		out[head.Source] = k
		return nil
	})
	return out, err
}
