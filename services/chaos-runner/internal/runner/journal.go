package runner

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/scale-dev/scale/internal/accounting"
	"github.com/scale-dev/scale/pkg/events"
	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
)

// Exit codes of a run.
const (
	ExitPassed  = 0 // every SLO held and every file was accounted for exactly once
	ExitFailed  = 1 // an SLO or the accounting failed
	ExitAborted = 2 // an abort condition fired, or the run was interrupted; every fault was healed
	ExitError   = 3 // the runner itself failed
)

// Journal is everything a run did and found, written as JSON.
type Journal struct {
	Run        string                `json:"run"`
	ReplayOf   string                `json:"replay_of,omitempty"` // the run this one replays
	Experiment experiment.Experiment `json:"experiment"`
	Plan       experiment.Plan       `json:"plan"`
	Started    time.Time             `json:"started"`
	Ended      time.Time             `json:"ended"`
	// WorkloadStarted is t = 0 of the samples and fault times.
	WorkloadStarted time.Time                 `json:"workload_started"`
	Faults          []FaultRecord             `json:"faults"`
	Samples         []Sample                  `json:"samples"`
	SLOs            []SLOResult               `json:"slos"`
	Accounting      *accounting.Report        `json:"accounting,omitempty"`
	Similar         *accounting.SimilarReport `json:"similar,omitempty"`
	Abort           *AbortRecord              `json:"abort,omitempty"`
	Verdict         string                    `json:"verdict"` // passed, failed, aborted, error
	ExitCode        int                       `json:"exit_code"`
	Error           string                    `json:"error,omitempty"`
	Reasons         []string                  `json:"reasons,omitempty"` // why it did not pass
	// Stages are where the traced files' time went, before the faults and
	// in each fault's window (empty when the run traced nothing).
	Stages []StageWindow `json:"stages,omitempty"`
	// Failovers are the Postgres failovers the environment's failover
	// manager carried out during the run.
	Failovers []string `json:"postgres_failovers,omitempty"`
	// Events are the run's chaos.* events as read back from the CHAOS stream
	// at the end: what any subscriber saw.
	Events []events.Chaos `json:"events,omitempty"`
}

// FaultRecord is one injection and its healing.
type FaultRecord struct {
	Step     experiment.Step `json:"step"`
	Injected float64         `json:"injected_s"` // seconds from the workload's start
	Healed   *float64        `json:"healed_s,omitempty"`
	// Recovery is the time from healing until the throughput was back within
	// the baseline band (or the work was done); nil if it never was.
	Recovery *float64 `json:"recovery_s,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// Sample is what the probes saw at one moment.
type Sample struct {
	T        float64    `json:"t"`        // seconds from the workload's start
	Finished int        `json:"finished"` // files finished so far: a song or a failure row
	Backlog  uint64     `json:"backlog"`  // extract consumer: pending + unacknowledged
	Waiting  uint64     `json:"waiting"`  // extract consumer: pending, not handed to a worker yet
	API      *APIWindow `json:"api,omitempty"`
}

// APIWindow is the API load's results since the previous sample.
type APIWindow struct {
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	P50      float64 `json:"p50_s"`
	P99      float64 `json:"p99_s"`
	// LastError is the last failed request's status and error, if any.
	LastError string `json:"last_error,omitempty"`
}

// SLOResult is one SLO in one phase.
type SLOResult struct {
	Name      string   `json:"name"`
	Metric    string   `json:"metric"`
	Threshold string   `json:"threshold"`
	Phase     string   `json:"phase"`
	Value     *float64 `json:"value"` // nil: no data in that phase
	Passed    bool     `json:"passed"`
	Note      string   `json:"note,omitempty"`
	// Explanation says, for a breach while faults lasted, where the traced
	// files spent the added time (see StageWindow).
	Explanation string `json:"explanation,omitempty"`
}

// AbortRecord says why and when a run was stopped early.
type AbortRecord struct {
	Reason string  `json:"reason"`
	At     float64 `json:"at_s"`
}

// Write writes the journal as indented JSON.
func (j *Journal) Write(path string) error {
	data, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// ReadJournal reads a journal file.
func ReadJournal(path string) (*Journal, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var j Journal
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &j, nil
}

// Summary is the run's result as a person reads it at the end of a run.
func (j *Journal) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "experiment %s (run %s, seed %d): %s (exit %d)\n", j.Experiment.Name, j.Run, j.Plan.Seed, strings.ToUpper(j.Verdict), j.ExitCode)
	for _, r := range j.Reasons {
		fmt.Fprintf(&b, "  - %s\n", r)
	}
	for _, s := range j.SLOs {
		v := "no data"
		if s.Value != nil {
			v = formatValue(s.Metric, *s.Value)
		}
		mark := "ok  "
		if !s.Passed {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "  %s %-32s %-8s %s (threshold %s)%s\n", mark, s.Name, s.Phase, v, s.Threshold, note(s.Note))
	}
	injected, recovered, slowest := 0, 0, 0.0
	for _, f := range j.Faults {
		if f.Error == "" {
			injected++
		}
		if f.Recovery != nil {
			recovered++
			slowest = math.Max(slowest, *f.Recovery)
		}
	}
	fmt.Fprintf(&b, "  faults: %d of %d injected, %d recovered (slowest recovery %.2f s)\n", injected, len(j.Faults), recovered, slowest)
	for _, f := range j.Failovers {
		fmt.Fprintf(&b, "  Postgres failover: %s\n", f)
	}
	if j.Accounting != nil {
		fmt.Fprintf(&b, "  accounting: %s\n", j.Accounting)
	}
	if j.Similar != nil {
		fmt.Fprintf(&b, "  similarity: %s\n", j.Similar)
	}
	if j.Error != "" {
		fmt.Fprintf(&b, "  error: %s\n", j.Error)
	}
	return b.String()
}

func note(n string) string {
	if n == "" {
		return ""
	}
	return " — " + n
}

func formatValue(metric string, v float64) string {
	switch metric {
	case "throughput":
		return fmt.Sprintf("%.0f files/s", v)
	case "backlog":
		return fmt.Sprintf("%.0f messages", v)
	case "api_error_rate":
		return fmt.Sprintf("%.2f %%", 100*v)
	default:
		if math.IsInf(v, 1) {
			return "never"
		}
		return fmt.Sprintf("%.3f s", v)
	}
}
