// Package events holds Scale's wire contracts: the JetStream streams and
// consumers as code, the typed, versioned events that travel on them, and
// the chaos runs index the schedule serves to the API.
// Nothing here knows about Postgres, S3 or any one service.
package events

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"
)

// SchemaVersion is the version every event is written with; Decode rejects any other.
const SchemaVersion = 1

// Subjects.
const (
	SubjectDiscovered = "midi.discovered" // a MIDI object was found; extract consumes it
	SubjectExtracted  = "midi.extracted"  // a file became a song
	SubjectFailed     = "midi.failed"     // a file became a recorded failure
	SubjectChaos      = "chaos.>"         // the chaos runner's experiment events: chaos.<kind>
)

// ErrInvalid marks an event that cannot be decoded or fails validation.
var ErrInvalid = errors.New("invalid event")

// Discovered announces one MIDI object found by ingest.
type Discovered struct {
	Version int       `json:"v"`
	Source  string    `json:"source"`        // object URL: s3://bucket/key or file:///path
	MD5     string    `json:"md5,omitempty"` // content MD5 when the listing knows it
	Size    int64     `json:"size"`
	Name    string    `json:"name"` // song name
	At      time.Time `json:"at"`
}

// Instrument is one instrument of an extracted song. Program is nil for drums.
type Instrument struct {
	Program *int `json:"program"`
	Drums   bool `json:"drums"`
	Notes   int  `json:"notes"`
}

// Extracted announces that a discovered file is now a song.
type Extracted struct {
	Version     int          `json:"v"`
	Source      string       `json:"source"`
	SongID      string       `json:"song_id"` // content MD5, hex
	Name        string       `json:"name"`
	Instruments []Instrument `json:"instruments"`
	At          time.Time    `json:"at"`
}

// Failed announces that a discovered file is a recorded failure.
type Failed struct {
	Version  int       `json:"v"`
	Source   string    `json:"source"`
	MD5      string    `json:"md5,omitempty"`
	Reason   string    `json:"reason"`
	Attempts int       `json:"attempts"`
	At       time.Time `json:"at"`
}

// Chaos kinds, in the order an experiment emits them.
const (
	ChaosStarted  = "experiment.started"
	ChaosResolved = "targets.resolved"
	ChaosInjected = "fault.injected"
	ChaosHealed   = "fault.healed"
	ChaosBreached = "slo.breached"
	ChaosEnded    = "experiment.ended"
)

var chaosKinds = map[string]bool{ChaosStarted: true, ChaosResolved: true, ChaosInjected: true, ChaosHealed: true, ChaosBreached: true, ChaosEnded: true}

// Chaos is one event of a chaos experiment run, published on chaos.<kind> by
// the chaos runner alone. A subscriber can rebuild the whole run from them:
// its plan, every fault's injection and healing, every SLO breach and the
// verdict.
type Chaos struct {
	Version    int       `json:"v"`
	Run        string    `json:"run"` // the run's id
	Experiment string    `json:"experiment"`
	Seq        int       `json:"seq"` // 1, 2, ... within the run
	Kind       string    `json:"kind"`
	Fault      string    `json:"fault,omitempty"`
	FaultType  string    `json:"fault_type,omitempty"`
	Targets    []string  `json:"targets,omitempty"`
	Detail     string    `json:"detail,omitempty"` // the plan, the SLO and its value, the verdict
	At         time.Time `json:"at"`
}

// Subject is the event's subject: chaos.<kind>.
func (e Chaos) Subject() string { return "chaos." + e.Kind }

// Event is implemented by every event type.
type Event interface {
	Discovered | Extracted | Failed | Chaos
	MsgID() string
	validate() error
}

// MsgID is the Nats-Msg-Id of an event: stable for the same fact, so JetStream
// drops a re-publication inside the stream's duplicate window.
func (e Discovered) MsgID() string { return "discovered:" + e.Source + ":" + e.MD5 }

// MsgID is stable per source: one file has one outcome.
func (e Extracted) MsgID() string { return "extracted:" + e.Source }

// MsgID is stable per source: one file has one outcome.
func (e Failed) MsgID() string { return "failed:" + e.Source }

// MsgID is stable per run and sequence number.
func (e Chaos) MsgID() string { return fmt.Sprintf("chaos:%s:%d", e.Run, e.Seq) }

func (e Chaos) validate() error {
	switch {
	case e.Run == "" || e.Experiment == "":
		return errors.New("chaos event without a run or experiment")
	case !chaosKinds[e.Kind]:
		return fmt.Errorf("unknown chaos event kind %q", e.Kind)
	case e.Seq < 1:
		return fmt.Errorf("sequence %d is below 1", e.Seq)
	}
	return nil
}

func (e Discovered) validate() error {
	if err := validSource(e.Source); err != nil {
		return err
	}
	if e.MD5 != "" {
		if err := validMD5(e.MD5); err != nil {
			return err
		}
	}
	if e.Size < 0 {
		return fmt.Errorf("size %d is negative", e.Size)
	}
	return nil
}

func (e Extracted) validate() error {
	if err := validSource(e.Source); err != nil {
		return err
	}
	if err := validMD5(e.SongID); err != nil {
		return err
	}
	for _, in := range e.Instruments {
		switch {
		case in.Drums && in.Program != nil:
			return errors.New("drums instrument with a program")
		case !in.Drums && (in.Program == nil || *in.Program < 0 || *in.Program > 127):
			return errors.New("melodic instrument without a program in 0..127")
		case in.Notes <= 0:
			return fmt.Errorf("instrument with %d notes", in.Notes)
		}
	}
	return nil
}

func (e Failed) validate() error {
	if err := validSource(e.Source); err != nil {
		return err
	}
	if e.Reason == "" {
		return errors.New("failure without a reason")
	}
	if e.Attempts < 1 {
		return fmt.Errorf("attempts %d is below 1", e.Attempts)
	}
	return nil
}

func validSource(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "s3" && u.Scheme != "file") || u.Path == "" {
		return fmt.Errorf("source %q is not an s3:// or file:// object URL", s)
	}
	return nil
}

func validMD5(s string) error {
	if b, err := hex.DecodeString(s); err != nil || len(b) != 16 {
		return fmt.Errorf("md5 %q is not 32 hex digits", s)
	}
	return nil
}

// Encode stamps the schema version on e, validates it and marshals it.
func Encode[E Event](e E) ([]byte, error) {
	*versionOf(&e) = SchemaVersion
	if err := e.validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return json.Marshal(e)
}

// Decode unmarshals data into an event, rejecting other schema versions and
// invalid fields with an error that wraps ErrInvalid. The document is read
// once; only when that fails or finds another version is the version read on
// its own, so that the error names it (an event of another version may not
// even fit this one's fields).
func Decode[E Event](data []byte) (E, error) {
	var e E
	err := json.Unmarshal(data, &e)
	if err != nil || *versionOf(&e) != SchemaVersion {
		if verr := checkVersion(data); verr != nil {
			return e, verr
		}
		if err != nil {
			return e, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	if err := e.validate(); err != nil {
		return e, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return e, nil
}

// versionOf is an event's schema version field.
func versionOf[E Event](e *E) *int {
	switch v := any(e).(type) {
	case *Discovered:
		return &v.Version
	case *Extracted:
		return &v.Version
	case *Failed:
		return &v.Version
	case *Chaos:
		return &v.Version
	}
	panic("events: not an event type") // unreachable: Event admits only the four
}

// checkVersion reads a document's schema version alone: an error that wraps
// ErrInvalid unless it is SchemaVersion.
func checkVersion(data []byte) error {
	var head struct {
		Version *int `json:"v"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if head.Version == nil || *head.Version != SchemaVersion {
		v := "none"
		if head.Version != nil {
			v = fmt.Sprint(*head.Version)
		}
		return fmt.Errorf("%w: schema version %s, want %d", ErrInvalid, v, SchemaVersion)
	}
	return nil
}
