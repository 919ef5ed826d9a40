// Package otlprecv is an OTLP/HTTP trace receiver: it takes the spans the
// services export (protobuf POSTs to /v1/traces, as OTEL_EXPORTER_OTLP_ENDPOINT
// points them) and hands each one on, decoded. The tracing tests, pipebench
// and the chaos runner (which explains SLO breaches from the spans) use it.
package otlprecv

import (
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Span is one received span.
type Span struct {
	Service         string // the resource's service.name
	Name            string
	TraceID, SpanID string // hex
	ParentID        string // hex; empty for a root span
	Start, End      time.Time
	Attrs           map[string]string // the string-valued attributes
}

// Receiver is a running endpoint.
type Receiver struct {
	URL string // http://127.0.0.1:port: the OTLP endpoint to give the services

	srv            *http.Server
	fn             func(Span)
	exports, bytes atomic.Int64
}

// Start serves on a free loopback port. fn, unless nil, is called with each
// span (from the server's goroutines: it must be safe for concurrent use);
// with fn nil the exports are only counted, not decoded.
func Start(fn func(Span)) (*Receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Receiver{URL: "http://" + ln.Addr().String(), fn: fn}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go r.srv.Serve(ln) //nolint:errcheck // ends with Close
	return r, nil
}

// Close stops the endpoint.
func (r *Receiver) Close() { r.srv.Close() } //nolint:errcheck // teardown

// Exports are the export requests received and their bytes.
func (r *Receiver) Exports() (requests, bytes int64) { return r.exports.Load(), r.bytes.Load() }

func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want a protobuf POST to /v1/traces", http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	r.exports.Add(1)
	r.bytes.Add(int64(len(body)))
	if r.fn != nil {
		var msg collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &msg); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.decode(&msg)
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Write(out) //nolint:errcheck // the exporter retries
}

func (r *Receiver) decode(msg *collectortrace.ExportTraceServiceRequest) {
	for _, rs := range msg.ResourceSpans {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				sp := Span{Service: service, Name: s.Name, TraceID: hex.EncodeToString(s.TraceId), SpanID: hex.EncodeToString(s.SpanId),
					Start: time.Unix(0, int64(s.StartTimeUnixNano)), End: time.Unix(0, int64(s.EndTimeUnixNano)), Attrs: map[string]string{}}
				if len(s.ParentSpanId) > 0 {
					sp.ParentID = hex.EncodeToString(s.ParentSpanId)
				}
				for _, a := range s.Attributes {
					if v := a.GetValue().GetStringValue(); v != "" {
						sp.Attrs[a.Key] = v
					}
				}
				r.fn(sp)
			}
		}
	}
}
