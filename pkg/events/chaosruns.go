package events

import "time"

// ChaosRuns is the index of the runs `chaos-runner schedule` keeps, served
// as JSON at /runs.json on its listen address; the API relays it to the
// web page's chaos view. The one HTTP contract between the two.
type ChaosRuns struct {
	Running string     `json:"running,omitempty"` // the experiment running now, if any
	Runs    []ChaosRun `json:"runs"`              // newest first
}

// ChaosRun is one kept run.
type ChaosRun struct {
	Experiment string    `json:"experiment"`
	Run        string    `json:"run"`
	Verdict    string    `json:"verdict"` // passed, failed, aborted, error
	ExitCode   int       `json:"exit_code"`
	Started    time.Time `json:"started"`
}

// ChaosReportPath is where the schedule server serves a run's report.
func ChaosReportPath(experiment, run string) string {
	return "/runs/" + experiment + "/" + run + "/report.html"
}
