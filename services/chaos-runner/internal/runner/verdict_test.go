package runner

import "testing"

// TestWhileWaiting: throughput is measured until every file has been handed
// to a worker, and not after (the samples of a sweep cell whose work ran out
// while one of two workers was killed, holding 32 files).
func TestWhileWaiting(t *testing.T) {
	ranOut := []Sample{
		{T: 1.50, Finished: 1792, Backlog: 208, Waiting: 144},
		{T: 1.75, Finished: 1952, Backlog: 48, Waiting: 16},
		{T: 2.00, Finished: 1968, Backlog: 32, Waiting: 0},
		{T: 2.25, Finished: 1968, Backlog: 32, Waiting: 0},
		{T: 6.73, Finished: 2000, Backlog: 0, Waiting: 0},
	}
	for _, tc := range []struct {
		name    string
		samples []Sample
		files   int
		want    int // samples kept
	}{
		{"the work ran out", ranOut, 2000, 3},
		{"files still to come from ingest", ranOut, 5000, 5},
		{"not started: nothing discovered yet", []Sample{{T: 0.25}, {T: 0.5, Backlog: 100, Waiting: 100}}, 100, 2},
		{"done at once", []Sample{{T: 0.25, Finished: 100}}, 100, 1},
		{"no samples", nil, 100, 0},
	} {
		if got := whileWaiting(tc.samples, tc.files); len(got) != tc.want {
			t.Errorf("%s: kept %d samples, want %d", tc.name, len(got), tc.want)
		}
	}
}
