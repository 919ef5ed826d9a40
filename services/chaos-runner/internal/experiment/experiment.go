// Package experiment reads chaos experiments: YAML files validated against
// the JSON Schema that ships beside this file (errors name the file's line),
// then checked for what a schema cannot say, and resolved with the
// experiment's seed into a plan: every target and every fault time.
package experiment

import (
	"bytes"
	_ "embed" // the schema
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
	"gopkg.in/yaml.v3"
)

//go:embed schema.json
var schemaJSON []byte

// Schema is the experiment file's JSON Schema.
func Schema() []byte { return schemaJSON }

// Experiment is a validated experiment file.
type Experiment struct {
	Name         string      `json:"name"`
	Description  string      `json:"description,omitempty"`
	Seed         uint64      `json:"seed"`
	Environment  Environment `json:"environment"`
	Workload     Workload    `json:"workload"`
	SLOs         []SLO       `json:"slos,omitempty"`
	Method       []Fault     `json:"method"`
	Allow        []string    `json:"allow,omitempty"` // components the method may attack; empty: every component it names
	RecoveryBand float64     `json:"recoveryBand,omitempty"`
	Settle       Duration    `json:"settle,omitempty"`
}

// Environment is where the experiment runs.
type Environment struct {
	Type string `json:"type"` // local: the runner starts the pipeline; kubernetes: a release already running
	// Namespace and Release locate a kubernetes run's pods: those labelled
	// app.kubernetes.io/instance=<release> in the namespace.
	Namespace          string   `json:"namespace,omitempty"`
	Release            string   `json:"release,omitempty"`
	ExtractWorkers     int      `json:"extractWorkers,omitempty"`
	NATSNodes          int      `json:"natsNodes,omitempty"`
	ExtractConcurrency int      `json:"extractConcurrency,omitempty"`
	ExtractAckWait     Duration `json:"extractAckWait,omitempty"`
	Network            string   `json:"network,omitempty"` // loopback (default), or hosts: each pipeline process on a host of its own
	// PostgresStandby adds a synchronous streaming-replication standby that
	// the driver promotes when the primary is lost (see local.pgServers).
	PostgresStandby bool `json:"postgresStandby,omitempty"`
	APIReplicas     int  `json:"apiReplicas,omitempty"` // API processes, behind the driver's load balancer when more than one
	S3Gateways      int  `json:"s3Gateways,omitempty"`  // versitygw gateways over the corpus, behind the driver's load balancer when more than one
	// TraceSample is the share of files the services trace (OpenTelemetry,
	// exported to the runner), from which the report says where the time
	// went while each fault lasted; 0 traces nothing. Default 0.1.
	TraceSample *float64 `json:"traceSample,omitempty"`
}

// Kubernetes is the environment of a release already running on a cluster:
// the runner drives the workload and kills its pods (pod-kill) through the
// Kubernetes API.
const Kubernetes = "kubernetes"

// Hosts is the network that runs each pipeline process on a host of its own
// (a network namespace), which a network-partition needs.
const Hosts = "hosts"

// Components are everything an experiment can attack: the pipeline's
// processes and what they depend on.
var Components = []string{"ingest", "extract", "similarity", "api", "nats", "postgres", "s3"}

// Workload is what the pipeline works on during the experiment.
type Workload struct {
	Corpus Corpus   `json:"corpus"`
	API    *APILoad `json:"api,omitempty"`
}

// Corpus is a synthetic corpus, a folder, or a prefix of an S3 bucket that
// exists already.
type Corpus struct {
	Synthetic *Synthetic `json:"synthetic,omitempty"`
	Folder    string     `json:"folder,omitempty"`
	S3        *S3Prefix  `json:"s3,omitempty"`
}

// S3Prefix is a workload already in an S3-compatible store. Its credentials
// are not in the file: the runner and the services it starts take them from
// SCALE_STORAGE_ACCESS_KEY and SCALE_STORAGE_SECRET_KEY (or, unset, the AWS
// default chain).
type S3Prefix struct {
	URL       string `json:"url"`                // s3://bucket/prefix
	Endpoint  string `json:"endpoint,omitempty"` // empty: AWS S3
	Region    string `json:"region,omitempty"`
	PathStyle bool   `json:"pathStyle,omitempty"`
}

// ProxiedS3 reports whether the services' connections to S3 go through a
// proxy the runner controls (so that network faults can go on them): the
// run's own versitygw, or a plain-HTTP endpoint. An HTTPS endpoint is reached
// directly, since a TCP proxy in front of it would fail its certificate.
func (c Corpus) ProxiedS3() bool {
	return c.S3 == nil || strings.HasPrefix(c.S3.Endpoint, "http://")
}

// Synthetic is a seeded synthetic corpus (make corpus).
type Synthetic struct {
	Files   int      `json:"files"`
	Seed    uint64   `json:"seed,omitempty"`
	Corrupt *float64 `json:"corrupt,omitempty"`
}

// APILoad is open-loop load on the API: a constant rate, whatever the answers'
// latency (no coordinated omission), spread over the endpoints by weight.
type APILoad struct {
	Rate      int                `json:"rate"`
	Endpoints map[string]float64 `json:"endpoints,omitempty"`
}

// SLO is a threshold on a metric the runner measures, checked in phases.
type SLO struct {
	Name           string   `json:"name,omitempty"`
	Metric         string   `json:"metric"`
	Threshold      string   `json:"threshold"`
	Phases         []string `json:"phases,omitempty"`
	AbortOnFail    bool     `json:"abortOnFail,omitempty"`
	DelayAbortEval Duration `json:"delayAbortEval,omitempty"`
}

// Fault is one attack of the method.
type Fault struct {
	Name     string   `json:"name,omitempty"`
	Type     string   `json:"type"`
	Target   Target   `json:"target"`
	At       Duration `json:"at"`
	Duration Duration `json:"duration,omitempty"` // pause: how long; kill: restart after (0: at once)
	Latency  Duration `json:"latency,omitempty"`  // network-latency: added each way
	Jitter   Duration `json:"jitter,omitempty"`   // network-latency: ± this much
	Rate     int      `json:"rate,omitempty"`     // network-bandwidth: KB/s
	Workers  int      `json:"workers,omitempty"`  // cpu-hog: busy processes; worker-add: extract processes added (default 1)
	CPUs     float64  `json:"cpus,omitempty"`     // cpu-quota: the CPU time the targets may use, in CPUs
	From     []string `json:"from,omitempty"`     // network-partition: the components cut off (default: all others)
	// Queue faults: the consumer's ack wait and ack-pending limit while the
	// fault lasts, and the stream a stream fault acts on.
	AckWait       Duration `json:"ackWait,omitempty"`       // queue-redelivery
	MaxAckPending int      `json:"maxAckPending,omitempty"` // queue-saturation
	Stream        string   `json:"stream,omitempty"`        // queue-stepdown, queue-reject: discovered (default) or outcomes
	How           string   `json:"how,omitempty"`           // pod-kill: delete (default, the pod's grace period), force or evict
	Repeat        *Repeat  `json:"repeat,omitempty"`
}

// Target selects instances of a component.
type Target struct {
	Component string  `json:"component"`
	Mode      string  `json:"mode,omitempty"` // one (default), all, fixed (value instances), percent (value %, rounded up, at least 1), leader (nats: the work queue's stream leader)
	Value     float64 `json:"value,omitempty"`
}

// Repeat injects a fault count times, every apart.
type Repeat struct {
	Count int      `json:"count"`
	Every Duration `json:"every"`
}

// Duration is a time.Duration written as "500ms", "2s", "1.5m".
type Duration time.Duration

// UnmarshalJSON reads "500ms".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes "500ms".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// D is the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Faults that need a duration, and what it means for each.
var faultDurations = map[string]string{
	"process-pause":     "how long the process stays stopped",
	"nats-node-kill":    "how long the node stays down",
	"postgres-restart":  "how long Postgres stays down",
	"network-latency":   "how long the edge stays slow",
	"network-bandwidth": "how long the edge stays narrow",
	"network-reset":     "how long connections are reset",
	"network-blackhole": "how long data is dropped",
	"network-partition": "how long the hosts stay cut apart",
	"queue-redelivery":  "how long the consumer's ack wait stays cut",
	"queue-saturation":  "how long the consumer's ack-pending limit stays cut",
	"queue-reject":      "how long the stream refuses messages",
	"s3-down":           "how long the S3 server stays down",
	"cpu-hog":           "how long the burners run",
	"cpu-quota":         "how long the quota holds",
}

// NetworkEdges are the edges a network fault can be put on: every
// service's connections to that component go through a proxy the driver
// controls.
var NetworkEdges = map[string]bool{"postgres": true, "nats": true, "s3": true}

// pipelineProcess reports whether a component is one of the pipeline's
// own processes (not NATS, Postgres or S3).
func pipelineProcess(c string) bool { return c != "" && !NetworkEdges[c] }

// Components' instance counts in an environment.
func (e Experiment) instances(component string) int {
	switch component {
	case "extract":
		return e.Environment.ExtractWorkers
	case "nats":
		return e.Environment.NATSNodes
	case "api":
		return e.Environment.APIReplicas
	case "s3":
		return e.Environment.S3Gateways
	case "postgres":
		if e.Environment.PostgresStandby {
			return 2
		}
		return 1
	default:
		return 1
	}
}

// checkKubernetes checks what a run on a cluster can do: kill, force-delete
// or evict the release's pods.
func (e Experiment) checkKubernetes(lines map[string]int) Errors {
	var errs Errors
	add := func(path, format string, args ...any) {
		errs = append(errs, Error{Line: lines[path], Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if e.Environment.Namespace == "" {
		add("/environment", "a kubernetes run needs the release's namespace (environment.namespace)")
	}
	if e.Workload.API != nil {
		add("/workload/api", "API load runs only in the local environment")
	}
	if e.Workload.Corpus.Synthetic != nil {
		add("/workload/corpus", "a kubernetes run reads a corpus its pods can read: corpus.s3 (or corpus.folder when the pods run on this machine)")
	}
	for i, f := range e.Method {
		p := fmt.Sprintf("/method/%d", i)
		if len(e.Allow) > 0 && !slices.Contains(e.Allow, f.Target.Component) {
			add(p+"/target/component", "component %q is not in the experiment's allow list %v", f.Target.Component, e.Allow)
		}
		switch {
		case f.Type != "pod-kill":
			add(p+"/type", "a kubernetes run injects pod-kill faults only, not %s", f.Type)
		case !slices.Contains([]string{"extract", "similarity", "api", "ingest"}, f.Target.Component):
			add(p+"/target/component", "a pod-kill kills pods of extract, similarity, api or ingest, not %s", f.Target.Component)
		case f.Target.Mode == Leader || f.Target.Mode == Primary:
			add(p+"/target/mode", "a pod-kill picks pods: one, all, fixed or percent")
		case (f.Target.Mode == "fixed" || f.Target.Mode == "percent") && f.Target.Value == 0:
			add(p+"/target", "mode %s needs a value", f.Target.Mode)
		case f.Target.Mode == "percent" && f.Target.Value > 100:
			add(p+"/target/value", "%v percent", f.Target.Value)
		}
	}
	return errs
}

// Error is one problem in an experiment file, at a line (0 when unknown).
type Error struct {
	Line int
	Path string // JSON pointer into the document
	Msg  string
}

func (e Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", e.Line, e.Path, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Path, e.Msg)
}

// Errors are every problem found in a file.
type Errors []Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// LoadFile reads and validates an experiment file.
func LoadFile(path string) (Experiment, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Experiment{}, err
	}
	e, err := Parse(data)
	if err != nil {
		return e, fmt.Errorf("%s:\n%w", path, err)
	}
	return e, nil
}

// Parse validates an experiment document (YAML or JSON) and returns it with
// its defaults filled in; the error is Errors, with line numbers.
func Parse(data []byte) (Experiment, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return Experiment{}, Errors{{Path: "/", Msg: err.Error()}}
	}
	if len(root.Content) == 0 {
		return Experiment{}, Errors{{Path: "/", Msg: "empty document"}}
	}
	lines := map[string]int{}
	doc, err := toValue(root.Content[0], "", lines)
	if err != nil {
		return Experiment{}, Errors{{Path: "/", Msg: err.Error()}}
	}
	if errs := validateSchema(doc, lines); len(errs) > 0 {
		return Experiment{}, errs
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return Experiment{}, err
	}
	var e Experiment
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return e, Errors{{Path: "/", Msg: err.Error()}}
	}
	e.defaults()
	if errs := e.check(lines); len(errs) > 0 {
		return e, errs
	}
	return e, nil
}

func (e *Experiment) defaults() {
	if e.Environment.Type == Kubernetes && e.Environment.Release == "" {
		e.Environment.Release = "scale" // as docs/kubernetes.md installs it
	}
	if e.Environment.ExtractWorkers == 0 {
		e.Environment.ExtractWorkers = 2
	}
	if e.Environment.NATSNodes == 0 {
		e.Environment.NATSNodes = 1
	}
	if e.Environment.APIReplicas == 0 {
		e.Environment.APIReplicas = 1
	}
	if e.Environment.S3Gateways == 0 {
		e.Environment.S3Gateways = 1
	}
	if e.Environment.TraceSample == nil {
		tenth := 0.1
		e.Environment.TraceSample = &tenth
	}
	if e.Environment.ExtractConcurrency == 0 {
		e.Environment.ExtractConcurrency = 2
	}
	if e.Environment.Network == "" {
		e.Environment.Network = "loopback"
	}
	if e.Environment.ExtractAckWait == 0 {
		e.Environment.ExtractAckWait = Duration(5 * time.Second)
	}
	if e.RecoveryBand == 0 {
		e.RecoveryBand = 0.5
	}
	if e.Settle == 0 {
		e.Settle = Duration(3 * time.Minute)
	}
	if s := e.Workload.Corpus.Synthetic; s != nil && s.Corrupt == nil {
		c := 0.01
		s.Corrupt = &c
	}
	for i := range e.Method {
		if e.Method[i].Target.Mode == "" {
			e.Method[i].Target.Mode = "one"
		}
		if (e.Method[i].Type == "queue-stepdown" || e.Method[i].Type == "queue-reject") && e.Method[i].Stream == "" {
			e.Method[i].Stream = "discovered"
		}
		if (e.Method[i].Type == "cpu-hog" || e.Method[i].Type == "worker-add") && e.Method[i].Workers == 0 {
			e.Method[i].Workers = 1
		}
		if e.Method[i].Name == "" {
			e.Method[i].Name = fmt.Sprintf("%s-%d", e.Method[i].Type, i+1)
		}
	}
	for i := range e.SLOs {
		if len(e.SLOs[i].Phases) == 0 {
			e.SLOs[i].Phases = []string{"baseline", "during", "after"}
		}
		if e.SLOs[i].Name == "" {
			e.SLOs[i].Name = e.SLOs[i].Metric + " " + strings.TrimSpace(e.SLOs[i].Threshold)
		}
	}
}

// check finds what the schema cannot say.
func (e Experiment) check(lines map[string]int) Errors {
	var errs Errors
	add := func(path, format string, args ...any) {
		errs = append(errs, Error{Line: lines[path], Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	allowed := map[string]bool{}
	for _, c := range e.Allow {
		allowed[c] = true
	}
	kube := e.Environment.Type == Kubernetes
	if kube {
		errs = append(errs, e.checkKubernetes(lines)...)
	}
	for i, f := range e.Method {
		p := fmt.Sprintf("/method/%d", i)
		c := f.Target.Component
		if f.Type == "pod-kill" && !kube {
			add(p+"/type", "a pod-kill kills pods of a release on Kubernetes (environment.type: kubernetes); here use process-kill")
		}
		if f.Type == "pod-kill" || kube {
			continue // checkKubernetes
		}
		if len(e.Allow) > 0 && !allowed[c] {
			add(p+"/target/component", "component %q is not in the experiment's allow list %v", c, e.Allow)
		}
		partition := f.Type == "network-partition"
		edge := strings.HasPrefix(f.Type, "network-") && !partition
		want := map[string]string{"nats-node-kill": "nats", "postgres-restart": "postgres", "s3-down": "s3", "worker-add": "extract",
			"queue-stepdown": "nats", "queue-reject": "nats"}[f.Type]
		consumerFault := f.Type == "queue-redelivery" || f.Type == "queue-saturation"
		switch {
		case edge && !NetworkEdges[c]:
			add(p+"/target/component", "network faults go on the edges to %v, not to %s", keys(NetworkEdges), c)
		case edge:
		case want != "" && c != want:
			add(p+"/target/component", "a %s fault targets %s, not %s", f.Type, want, c)
		case consumerFault && c != "extract" && c != "similarity":
			add(p+"/target/component", "a %s fault targets a consumer: extract or similarity, not %s", f.Type, c)
		case want == "" && !pipelineProcess(c):
			add(p+"/target/component", "%s is not a process of the pipeline; use a %s fault", c, map[string]string{"nats": "nats-node-kill", "postgres": "postgres-restart", "s3": "s3-down"}[c])
		}
		if f.Type == "queue-redelivery" && f.AckWait <= 0 {
			add(p, "a queue-redelivery fault needs an ackWait (shorter than the work takes)")
		}
		if f.Type == "queue-saturation" && f.MaxAckPending <= 0 {
			add(p, "a queue-saturation fault needs a maxAckPending")
		}
		if f.Stream != "" && want != "nats" {
			add(p+"/stream", "only queue-stepdown and queue-reject act on a stream")
		}
		if f.Type == "queue-stepdown" && e.Environment.NATSNodes < 3 {
			add(p, "a stream leader can only step down in a cluster (environment.natsNodes: 3)")
		}
		if f.Type == "s3-down" && e.Workload.Corpus.S3 != nil {
			add(p, "s3-down stops the run's own S3 server; this workload's bucket is somebody else's")
		}
		if i == 0 && e.Environment.S3Gateways > 1 && e.Workload.Corpus.S3 != nil {
			add("/environment/s3Gateways", "gateways are the run's own; this workload's bucket is somebody else's")
		}
		if c == "s3" && edge && !e.Workload.Corpus.ProxiedS3() {
			add(p, "the edge to an HTTPS S3 endpoint is not proxied, so no network fault can go on it")
		}
		if partition && e.Environment.Network != Hosts {
			add(p, "a network-partition needs the pipeline on hosts (environment.network: hosts)")
		}
		if len(f.From) > 0 && !partition {
			add(p+"/from", "only a network-partition cuts a target off from components")
		}
		for k, from := range f.From {
			if from == c && e.instances(c) == 1 {
				add(fmt.Sprintf("%s/from/%d", p, k), "%s cannot be cut off from itself", c)
			}
		}
		if f.Type == "network-latency" && f.Latency <= 0 {
			add(p, "a network-latency fault needs a latency")
		}
		if f.Type == "network-bandwidth" && f.Rate <= 0 {
			add(p, "a network-bandwidth fault needs a rate (KB/s)")
		}
		if f.Type == "cpu-quota" && f.CPUs <= 0 {
			add(p, "a cpu-quota fault needs cpus (the CPU time its targets may use)")
		}
		if what, ok := faultDurations[f.Type]; ok && f.Duration <= 0 {
			add(p, "a %s fault needs a duration (%s)", f.Type, what)
		}
		if f.Target.Mode == Leader && c != "nats" {
			add(p+"/target/mode", "only a nats target has a leader")
		}
		if f.Target.Mode == Primary && c != "postgres" {
			add(p+"/target/mode", "only a postgres target has a primary")
		}
		if (f.Target.Mode == "fixed" || f.Target.Mode == "percent") && f.Target.Value == 0 {
			add(p+"/target", "mode %s needs a value", f.Target.Mode)
		}
		if f.Target.Mode == "fixed" && (f.Target.Value != math.Trunc(f.Target.Value) || int(f.Target.Value) > e.instances(c)) {
			add(p+"/target/value", "fixed %v instances of %s, which has %d", f.Target.Value, c, e.instances(c))
		}
		if f.Target.Mode == "percent" && f.Target.Value > 100 {
			add(p+"/target/value", "%v percent", f.Target.Value)
		}
	}
	for i, s := range e.SLOs {
		if _, err := ParseThreshold(s.Threshold); err != nil {
			add(fmt.Sprintf("/slos/%d/threshold", i), "%v", err)
		}
		if strings.HasPrefix(s.Metric, "api_") && e.Workload.API == nil {
			add(fmt.Sprintf("/slos/%d/metric", i), "%s needs API load (workload.api)", s.Metric)
		}
	}
	return errs
}

// toValue converts a YAML node to plain values (map[string]any, []any,
// strings, numbers, booleans) as JSON has them, recording each value's line
// by its JSON pointer.
func toValue(n *yaml.Node, path string, lines map[string]int) (any, error) {
	lines[path] = n.Line
	if path == "" {
		lines["/"] = n.Line
	}
	switch n.Kind {
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if _, dup := m[k]; dup {
				return nil, fmt.Errorf("line %d: key %q given twice", n.Content[i].Line, k)
			}
			v, err := toValue(n.Content[i+1], path+"/"+escape(k), lines)
			if err != nil {
				return nil, err
			}
			lines[path+"/"+escape(k)] = n.Content[i].Line
			m[k] = v
		}
		return m, nil
	case yaml.SequenceNode:
		s := make([]any, len(n.Content))
		for i, c := range n.Content {
			v, err := toValue(c, path+"/"+strconv.Itoa(i), lines)
			if err != nil {
				return nil, err
			}
			s[i] = v
		}
		return s, nil
	case yaml.AliasNode:
		return toValue(n.Alias, path, lines)
	case yaml.ScalarNode:
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
		switch x := v.(type) {
		case int:
			return json.Number(strconv.Itoa(x)), nil
		case float64:
			return json.Number(strconv.FormatFloat(x, 'g', -1, 64)), nil
		case nil, string, bool:
			return x, nil
		default:
			return fmt.Sprint(x), nil // timestamps and the like: text
		}
	}
	return nil, fmt.Errorf("line %d: unsupported YAML", n.Line)
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func escape(k string) string { return strings.NewReplacer("~", "~0", "/", "~1").Replace(k) }

func validateSchema(doc any, lines map[string]int) Errors {
	c := jsonschema.NewCompiler()
	schema, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemaJSON))
	if err != nil {
		return Errors{{Path: "schema", Msg: err.Error()}}
	}
	if err := c.AddResource("experiment.json", schema); err != nil {
		return Errors{{Path: "schema", Msg: err.Error()}}
	}
	sch, err := c.Compile("experiment.json")
	if err != nil {
		return Errors{{Path: "schema", Msg: err.Error()}}
	}
	err = sch.Validate(doc)
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		if err != nil {
			return Errors{{Path: "/", Msg: err.Error()}}
		}
		return nil
	}
	printer := message.NewPrinter(language.English)
	var errs Errors
	var leaves func(*jsonschema.ValidationError)
	leaves = func(v *jsonschema.ValidationError) {
		if len(v.Causes) > 0 {
			for _, c := range v.Causes {
				leaves(c)
			}
			return
		}
		path := ""
		for _, p := range v.InstanceLocation {
			path += "/" + escape(p)
		}
		line := lines[path]
		if ap, ok := v.ErrorKind.(*kind.AdditionalProperties); ok && len(ap.Properties) > 0 {
			line = lines[path+"/"+escape(ap.Properties[0])] // the unknown key's own line
		}
		if path == "" {
			path = "/"
		}
		errs = append(errs, Error{Line: line, Path: path, Msg: v.ErrorKind.LocalizedString(printer)})
	}
	leaves(ve)
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
	if len(errs) == 0 {
		errs = Errors{{Path: "/", Msg: err.Error()}}
	}
	return errs
}
