package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Replay runs a journal's experiment again with the plan the journal
// recorded (the same targets, order and times, the same seed for the corpus
// and the API load) and returns the new journal.
func Replay(ctx context.Context, old *Journal, o Options) *Journal {
	plan := old.Plan
	o.Plan, o.ReplayOf = &plan, old.Run
	return Run(ctx, old.Experiment, o)
}

// Differences lists where a replay's outcome differs from the run it
// replays: the plan, the verdict, each fault's targets as injected (a leader
// is whichever node led at the time), errors and recoveries, each SLO's
// verdict by phase, and the accounting. Measured values (rates, latencies)
// always differ a little and are not listed; their verdicts are. Empty:
// the same outcome.
func Differences(old, replay *Journal) []string {
	var out []string
	differ := func(what string, a, b any) {
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if string(ja) != string(jb) {
			out = append(out, fmt.Sprintf("%s: %s, now %s", what, ja, jb))
		}
	}
	differ("plan", old.Plan, replay.Plan)
	differ("verdict", old.Verdict, replay.Verdict)
	differ("exit code", old.ExitCode, replay.ExitCode)
	if len(old.Faults) != len(replay.Faults) {
		differ("faults injected", len(old.Faults), len(replay.Faults))
	}
	for i := range min(len(old.Faults), len(replay.Faults)) {
		a, b := old.Faults[i], replay.Faults[i]
		name := fmt.Sprintf("fault %d (%s)", i+1, a.Step.Fault)
		differ(name+" targets", a.Step.Targets, b.Step.Targets)
		differ(name+" error", a.Error, b.Error)
		differ(name+" recovered", a.Recovery != nil, b.Recovery != nil)
	}
	verdicts := func(j *Journal) map[string]bool {
		m := map[string]bool{}
		for _, s := range j.SLOs {
			m[s.Name+" / "+s.Phase] = s.Passed
		}
		return m
	}
	a, b := verdicts(old), verdicts(replay)
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		pa, inA := a[k]
		pb, inB := b[k]
		if inA != inB || pa != pb {
			differ("SLO "+k, passedWord(pa, inA), passedWord(pb, inB))
		}
	}
	if old.Accounting != nil && replay.Accounting != nil {
		differ("accounting exact", old.Accounting.OK(), replay.Accounting.OK())
		differ("songs", old.Accounting.Songs, replay.Accounting.Songs)
		differ("failures", old.Accounting.Failures, replay.Accounting.Failures)
		differ("lost", old.Accounting.Lost, replay.Accounting.Lost)
		differ("duplicated", old.Accounting.Duplicated, replay.Accounting.Duplicated)
	} else {
		differ("accounting taken", old.Accounting != nil, replay.Accounting != nil)
	}
	if old.Similar != nil && replay.Similar != nil {
		differ("similar lists = brute force", old.Similar.OK(), replay.Similar.OK())
	}
	return out
}

func passedWord(passed, present bool) string {
	switch {
	case !present:
		return "not checked"
	case passed:
		return "passed"
	default:
		return "failed"
	}
}

// DifferencesText is Differences as a person reads it.
func DifferencesText(old, replay *Journal) string {
	d := Differences(old, replay)
	if len(d) == 0 {
		return fmt.Sprintf("replay of %s: the same plan and the same outcome\n", old.Run)
	}
	return fmt.Sprintf("replay of %s differs in %d place(s):\n  %s\n", old.Run, len(d), strings.Join(d, "\n  "))
}
