package experiment

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Threshold is a parsed SLO threshold such as "< 50ms" or ">= 100": a
// comparison against a value in the metric's unit (seconds for times, a
// fraction for "%").
type Threshold struct {
	Op    string
	Value float64
	Text  string
}

var thresholdRE = regexp.MustCompile(`^\s*(<=|>=|==|<|>)\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|%)?\s*$`)

// ParseThreshold reads a threshold.
func ParseThreshold(s string) (Threshold, error) {
	m := thresholdRE.FindStringSubmatch(s)
	if m == nil {
		return Threshold{}, fmt.Errorf("threshold %q is not <op> <number>[ms|s|%%]", s)
	}
	v, err := strconv.ParseFloat(m[2], 64)
	if err != nil {
		return Threshold{}, err
	}
	switch m[3] {
	case "ms":
		v /= 1000
	case "%":
		v /= 100
	}
	return Threshold{Op: m[1], Value: v, Text: strings.TrimSpace(s)}, nil
}

// Holds reports whether a measured value meets the threshold.
func (t Threshold) Holds(v float64) bool {
	switch t.Op {
	case "<":
		return v < t.Value
	case "<=":
		return v <= t.Value
	case ">":
		return v > t.Value
	case ">=":
		return v >= t.Value
	default:
		return v == t.Value
	}
}

// Step is one injection of the resolved plan.
type Step struct {
	Fault         string   `json:"fault"` // the fault's name
	Type          string   `json:"type"`
	Targets       []string `json:"targets"` // instance names: extract-2, nats-1, postgres; "leader" and "primary" are resolved when injected
	At            Duration `json:"at"`      // from the start of the workload (locally: its first file in the work queue)
	Duration      Duration `json:"duration"`
	Latency       Duration `json:"latency,omitempty"`
	Jitter        Duration `json:"jitter,omitempty"`
	Rate          int      `json:"rate,omitempty"`
	Workers       int      `json:"workers,omitempty"`
	CPUs          float64  `json:"cpus,omitempty"`
	From          []string `json:"from,omitempty"`
	AckWait       Duration `json:"ackWait,omitempty"`
	MaxAckPending int      `json:"maxAckPending,omitempty"`
	// A pod-kill's pods are picked when it is injected (a cluster's pods
	// come and go): the component's, by mode and value, killed how.
	Component string  `json:"component,omitempty"`
	Mode      string  `json:"mode,omitempty"`
	Value     float64 `json:"value,omitempty"`
	How       string  `json:"how,omitempty"`
}

// Plan is every injection of an experiment, in time order.
type Plan struct {
	Seed  uint64 `json:"seed"`
	Steps []Step `json:"steps"`
}

// Instances names the instances of a component in the environment.
func (e Experiment) Instances(component string) []string {
	n := e.instances(component)
	if n == 1 && component != "extract" && component != "nats" {
		return []string{component}
	}
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", component, i+1)
	}
	return out
}

// Resolve turns the method into a plan. The experiment's seed alone decides
// every pick: the same file gives the same plan, every time.
func (e Experiment) Resolve() Plan {
	r := rand.New(rand.NewPCG(e.Seed, 0x5CA1E))
	p := Plan{Seed: e.Seed}
	added := 0 // extract workers added so far, numbered after the environment's
	for _, f := range e.Method {
		count, every := 1, time.Duration(0)
		if f.Repeat != nil {
			count, every = f.Repeat.Count, f.Repeat.Every.D()
		}
		instances := e.Instances(f.Target.Component)
		for k := range count {
			targets := pick(r, instances, f.Target)
			switch f.Type {
			case "queue-redelivery", "queue-saturation": // the component's consumer
				targets = []string{f.Target.Component}
			case "queue-stepdown", "queue-reject":
				targets = []string{f.Stream}
			}
			if f.Type == "worker-add" {
				targets = nil
				for range f.Workers {
					added++
					targets = append(targets, fmt.Sprintf("extract-%d", e.Environment.ExtractWorkers+added))
				}
			}
			step := Step{
				Fault: f.Name, Type: f.Type, Targets: targets,
				At: Duration(f.At.D() + time.Duration(k)*every), Duration: f.Duration,
				Latency: f.Latency, Jitter: f.Jitter, Rate: f.Rate, Workers: f.Workers, CPUs: f.CPUs, From: f.From,
				AckWait: f.AckWait, MaxAckPending: f.MaxAckPending,
			}
			if f.Type == "pod-kill" {
				step.Targets, step.Component, step.Mode, step.Value, step.How = nil, f.Target.Component, f.Target.Mode, f.Target.Value, f.How
			}
			p.Steps = append(p.Steps, step)
		}
	}
	sort.SliceStable(p.Steps, func(i, j int) bool { return p.Steps[i].At < p.Steps[j].At })
	return p
}

// Leader is the target of a fault on whichever NATS node leads the work
// queue's stream when the fault is injected.
const Leader = "leader"

// Primary is the target of a fault on whichever Postgres server is the
// primary when the fault is injected (with a standby, a failover changes it).
const Primary = "primary"

// pick chooses targets without replacement.
func pick(r *rand.Rand, instances []string, t Target) []string {
	if t.Mode == Leader || t.Mode == Primary {
		return []string{t.Mode}
	}
	n := 1
	switch t.Mode {
	case "all":
		n = len(instances)
	case "fixed":
		n = int(t.Value)
	case "percent":
		n = max(1, int(math.Ceil(t.Value/100*float64(len(instances)))))
	}
	n = min(n, len(instances))
	order := r.Perm(len(instances))[:n]
	sort.Ints(order)
	out := make([]string, n)
	for i, j := range order {
		out[i] = instances[j]
	}
	return out
}

// String is the plan as a person reads it (chaos-runner run --dry-run).
func (p Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, %d injections\n", p.Seed, len(p.Steps))
	for _, s := range p.Steps {
		heal := "at once"
		if s.Duration > 0 {
			heal = "after " + s.Duration.D().String()
		}
		on := strings.Join(s.Targets, ", ")
		if s.Type == "pod-kill" {
			on = fmt.Sprintf("%s pods (%s %g), picked when injected", s.Component, cmp.Or(s.Mode, "one"), s.Value)
		}
		fmt.Fprintf(&b, "  at %8s  %-16s %-18s on %s, healed %s\n", s.At.D(), s.Type, s.Fault, on, heal)
	}
	return b.String()
}
