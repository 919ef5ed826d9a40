package runner

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scale-dev/scale/internal/accounting"
	"github.com/scale-dev/scale/internal/transport"
	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
)

// phases are the windows SLOs are checked in, in seconds from the workload's
// start: baseline until the first injection, during until the last healing,
// after until the work was done. ok is false for a phase with no time.
func (r *run) phases() map[string][2]float64 {
	samples := r.j.Samples
	end := 0.0
	if len(samples) > 0 {
		end = samples[len(samples)-1].T
	}
	// The work is done when the last outcome arrived.
	for _, s := range samples {
		if s.Finished >= len(r.env.Workload()) {
			end = s.T
			break
		}
	}
	first, last := end, 0.0
	for _, f := range r.j.Faults {
		first = math.Min(first, f.Injected)
		h := f.Injected
		if f.Healed != nil {
			h = *f.Healed
		}
		last = math.Max(last, h)
	}
	if len(r.j.Faults) == 0 {
		first, last = end, end
	}
	return map[string][2]float64{
		"baseline": {0, math.Min(first, end)},
		"during":   {math.Min(first, end), math.Min(last, end)},
		"after":    {math.Min(last, end), end},
	}
}

// metric computes a metric over the samples in [from, to]; ok is false when
// the window holds no data for it.
func (r *run) metric(name string, samples []Sample, from, to float64) (float64, bool) {
	if to-from < sampleEvery.Seconds() {
		return 0, false
	}
	var in []Sample
	var before *Sample
	for i, s := range samples {
		if s.T < from {
			before = &samples[i]
			continue
		}
		if s.T <= to {
			in = append(in, s)
		}
	}
	if len(in) == 0 {
		return 0, false
	}
	switch name {
	case "throughput":
		in = whileWaiting(in, len(r.env.Workload()))
		first := Sample{T: from}
		if before != nil {
			first = *before
		}
		last := in[len(in)-1]
		if last.T-first.T <= 0 {
			return 0, false
		}
		return float64(last.Finished-first.Finished) / (last.T - first.T), true
	case "backlog":
		m := 0.0
		for _, s := range in {
			m = math.Max(m, float64(s.Backlog))
		}
		return m, true
	case "api_p50", "api_p99", "api_error_rate":
		var reqs, errs int
		var p50, p99 []float64
		for _, s := range in {
			if s.API == nil || s.API.Requests == 0 {
				continue
			}
			reqs += s.API.Requests
			errs += s.API.Errors
			p50, p99 = append(p50, s.API.P50), append(p99, s.API.P99)
		}
		if reqs == 0 {
			return 0, false
		}
		switch name {
		case "api_error_rate":
			return float64(errs) / float64(reqs), true
		case "api_p50":
			return median(p50), true
		default:
			return maxOf(p99), true // the worst window's p99
		}
	}
	return 0, false
}

// whileWaiting cuts samples after the first that found the work ran out
// (WorkRanOut): from then on idle workers measure the end of the work, not
// the pipeline's rate. A sweep killed one worker of two once the other had
// nothing left to take, and read the 32 files the killed one held as a
// stopped pipeline (90 % dip).
func whileWaiting(samples []Sample, files int) []Sample {
	if i := ranOutAt(samples, files); i >= 0 {
		return samples[:i+1]
	}
	return samples
}

// WorkRanOut is when the work of files files ran out: the time of the first
// sample that found none waiting for a worker and every one finished or in
// hand. ok is false if no sample did.
func WorkRanOut(samples []Sample, files int) (t float64, ok bool) {
	if i := ranOutAt(samples, files); i >= 0 {
		return samples[i].T, true
	}
	return 0, false
}

func ranOutAt(samples []Sample, files int) int {
	for i, s := range samples {
		if s.Waiting == 0 && s.Finished+int(s.Backlog) >= files {
			return i
		}
	}
	return -1
}

func median(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}

func maxOf(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = math.Max(m, x)
	}
	return m
}

// recoveries fills in each healed fault's recovery time: from its healing
// until the throughput over the trailing second is back within the
// baseline band, or the work is done.
func (r *run) recoveries(baseline float64) {
	samples := r.j.Samples
	for i := range r.j.Faults {
		f := &r.j.Faults[i]
		if f.Healed == nil {
			continue
		}
		// Healed after the work was done (or with no sample since): nothing
		// was left to recover.
		if n := len(samples); n > 0 && samples[n-1].T < *f.Healed && samples[n-1].Finished >= len(r.env.Workload()) {
			zero := 0.0
			f.Recovery = &zero
			continue
		}
		for _, s := range samples {
			if s.T < *f.Healed {
				continue
			}
			rate, ok := r.metric("throughput", samples, s.T-1, s.T)
			if s.Finished >= len(r.env.Workload()) || (ok && rate >= r.exp.RecoveryBand*baseline) {
				d := s.T - *f.Healed
				f.Recovery = &d
				break
			}
		}
	}
}

// judge computes the SLO verdicts, the accounting and the similarity check,
// and the run's verdict.
func (r *run) judge(ctx context.Context, aborted string) {
	j := r.j
	phases := r.phases()
	baseline, _ := r.metric("throughput", j.Samples, phases["baseline"][0], phases["baseline"][1])
	r.recoveries(baseline)
	j.Stages = stageWindows(r.env.Spans(), r.t0, j.Faults, phases["baseline"][1])
	// Where the time went while the faults lasted: the explanation of any
	// SLO that fails in that phase.
	var duringWhy string
	if len(j.Stages) > 0 {
		var why []string
		for _, f := range j.Faults {
			why = append(why, explain(j.Stages, f.Step.Fault))
		}
		duringWhy = strings.Join(why, "; ")
	}
	for _, s := range r.exp.SLOs {
		th, _ := experiment.ParseThreshold(s.Threshold)
		for _, ph := range s.Phases {
			res := SLOResult{Name: s.Name, Metric: s.Metric, Threshold: th.Text, Phase: ph, Passed: true}
			var v float64
			ok := false
			if s.Metric == "recovery_time" {
				if ph != "after" {
					continue // recovery is measured once, after each fault
				}
				v, ok = r.slowestRecovery()
			} else {
				w := phases[ph]
				v, ok = r.metric(s.Metric, j.Samples, w[0], w[1])
			}
			switch {
			case ok && math.IsInf(v, 1):
				res.Passed, res.Note = false, "a fault never recovered"
			case ok:
				res.Value = &v
				res.Passed = th.Holds(v)
			default:
				res.Note = "no data in this phase"
			}
			if !res.Passed {
				reason := fmt.Sprintf("SLO %q failed %s: %s", s.Name, ph, formatValue(s.Metric, v))
				if ph == "during" && duringWhy != "" {
					res.Explanation = duringWhy
					reason += " — " + duringWhy
				}
				j.Reasons = append(j.Reasons, reason)
			}
			j.SLOs = append(j.SLOs, res)
		}
	}

	j.Failovers = r.env.Failovers()
	acc, err := accounting.Check(ctx, r.env.DB(), r.env.Stream(), r.env.Workload())
	if err != nil {
		j.Reasons = append(j.Reasons, "accounting could not be read: "+err.Error())
	} else {
		j.Accounting = &acc
		if !acc.OK() {
			j.Reasons = append(j.Reasons, fmt.Sprintf("accounting: %d lost, %d stuck, %d duplicated, %d unexpected",
				len(acc.Lost), len(acc.Stuck), len(acc.Duplicated), len(acc.Unexpected)))
		}
	}
	if aborted == "" {
		sim, err := accounting.Similar(ctx, r.env.DB(), 10, 3)
		if err != nil {
			j.Reasons = append(j.Reasons, "similarity lists could not be checked: "+err.Error())
		} else {
			j.Similar = &sim
			if !sim.OK() {
				j.Reasons = append(j.Reasons, fmt.Sprintf("similarity: %d lists differ from the brute force", len(sim.Mismatched)))
			}
		}
	}

	switch {
	case aborted != "":
		j.Abort = &AbortRecord{Reason: aborted, At: r.since()}
		j.Verdict, j.ExitCode = "aborted", ExitAborted
		j.Reasons = append([]string{aborted}, j.Reasons...)
	case len(j.Reasons) > 0:
		j.Verdict, j.ExitCode = "failed", ExitFailed
	default:
		j.Verdict, j.ExitCode = "passed", ExitPassed
	}
	for _, f := range j.Faults {
		if f.Error != "" {
			j.Reasons = append(j.Reasons, fmt.Sprintf("fault %s on %v: %s", f.Step.Fault, f.Step.Targets, f.Error))
			if j.ExitCode == ExitPassed {
				j.Verdict, j.ExitCode = "error", ExitError
			}
		}
	}
	r.publish(events.Chaos{Kind: events.ChaosEnded, Detail: fmt.Sprintf("%s (exit %d)", j.Verdict, j.ExitCode)})
	evs, err := r.readEvents(ctx)
	if err != nil {
		r.o.Log.Warn("reading the chaos events back", "error", err)
	}
	j.Events = evs
}

// readEvents reads this run's events back from the CHAOS stream.
func (r *run) readEvents(ctx context.Context) ([]events.Chaos, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var out []events.Chaos
	err := transport.ReadStream(ctx, r.env.Stream(), events.StreamChaos, func(msg *jetstream.RawStreamMsg) error {
		ev, err := events.Decode[events.Chaos](msg.Data)
		if err != nil {
			return err
		}
		if ev.Run == r.j.Run {
			out = append(out, ev)
		}
		return nil
	})
	return out, err
}

// slowestRecovery is the longest recovery of any healed fault (+Inf when one
// never recovered); ok is false when no fault was healed.
func (r *run) slowestRecovery() (float64, bool) {
	slowest, any := 0.0, false
	for _, f := range r.j.Faults {
		if f.Healed == nil {
			continue
		}
		any = true
		if f.Recovery == nil {
			return math.Inf(1), true
		}
		slowest = math.Max(slowest, *f.Recovery)
	}
	return slowest, any
}
