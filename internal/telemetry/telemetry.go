// Package telemetry sets up OpenTelemetry tracing from the standard OTEL_*
// variables, carries the W3C trace context across NATS messages, and puts
// trace ids into log lines. With no exporter configured the global tracer
// provider stays OpenTelemetry's no-op one: a span costs a few nanoseconds
// and nothing is recorded.
package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Tracer is the pipeline's tracer, from the global provider.
func Tracer() trace.Tracer { return otel.Tracer("github.com/scale-dev/scale") }

var enabled atomic.Bool

// Enabled reports whether Setup installed an exporting provider.
// Instrumentation that costs something even when it records nothing (the
// HTTP and pgx wrappers) is added only then.
func Enabled() bool { return enabled.Load() }

// configured reports whether the environment asks for traces: an OTLP
// endpoint is set, or OTEL_TRACES_EXPORTER=otlp; OTEL_SDK_DISABLED=true or
// OTEL_TRACES_EXPORTER=none turns them off.
func configured() bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	if v := os.Getenv("OTEL_TRACES_EXPORTER"); v != "" {
		return v == "otlp"
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup installs the W3C trace-context propagator and, when the environment
// asks for traces (configured), a tracer provider exporting spans over
// OTLP/HTTP (endpoint, headers, timeout from OTEL_EXPORTER_OTLP_*), sampled
// as OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG say (default: every
// trace), its resource named service unless OTEL_SERVICE_NAME says
// otherwise. The returned function flushes and stops it.
func Setup(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	if !configured() {
		return func(context.Context) error { return nil }, nil
	}
	for _, v := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := os.Getenv(v); p != "" && p != "http/protobuf" {
			return nil, fmt.Errorf("%s=%s: Scale exports traces over OTLP/HTTP (http/protobuf) only", v, p)
		}
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("creating the OTLP trace exporter: %w", err)
	}
	res, err := resource.New(ctx, resource.WithAttributes(attribute.String("service.name", service)), resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil {
		return nil, fmt.Errorf("describing the service for traces: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	restore := Use(tp)
	return func(ctx context.Context) error {
		restore()
		return tp.Shutdown(ctx)
	}, nil
}

// Use makes tp the global tracer provider (with the W3C propagator) until
// the returned function puts back the one before: what Setup does with the
// OTLP exporter, and what a test does with an in-memory one.
func Use(tp trace.TracerProvider) (restore func()) {
	before := otel.GetTracerProvider()
	otel.SetTextMapPropagator(propagation.TraceContext{})
	otel.SetTracerProvider(tp)
	enabled.Store(true)
	return func() {
		enabled.Store(false)
		otel.SetTracerProvider(before)
	}
}

// StartBatch starts the span of work done once for a batch of messages (a
// transaction, a publication), linked to the span of each message's own
// trace. Its parent is the first of those spans that is sampled (the first
// one when none is), so that the batch is recorded whenever a file in it
// is traced, and shows in that file's trace; the others reach it by their
// link.
func StartBatch(ctx context.Context, name string, traces []context.Context, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	tracer := Tracer()
	if !Enabled() || len(traces) == 0 {
		return tracer.Start(ctx, name) // no links to build: nothing records them
	}
	parent := trace.SpanContextFromContext(traces[0])
	links := make([]trace.Link, 0, len(traces))
	for _, t := range traces {
		sc := trace.SpanContextFromContext(t)
		if sc.IsSampled() && !parent.IsSampled() {
			parent = sc
		}
		links = append(links, trace.Link{SpanContext: sc})
	}
	return tracer.Start(trace.ContextWithSpanContext(ctx, parent), name, trace.WithLinks(links...), trace.WithAttributes(attrs...))
}

// End ends a span, marking it failed when err is not nil.
func End(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Inject writes ctx's trace context into a NATS message's headers.
func Inject(ctx context.Context, h nats.Header) {
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(h))
}

// Extract returns ctx carrying the remote span context of a NATS message's
// headers (ctx itself when they carry none).
func Extract(ctx context.Context, h nats.Header) context.Context {
	return otel.GetTextMapPropagator().Extract(ctx, propagation.HeaderCarrier(h))
}

// LogHandler adds the trace and span ids of a record's context (when it has
// a recording span) to every log line written with one (log.InfoContext and
// the like), so that a line leads to its trace.
func LogHandler(h slog.Handler) slog.Handler { return traceIDs{h} }

type traceIDs struct{ slog.Handler }

func (t traceIDs) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return t.Handler.Handle(ctx, r)
}

func (t traceIDs) WithAttrs(as []slog.Attr) slog.Handler { return traceIDs{t.Handler.WithAttrs(as)} }
func (t traceIDs) WithGroup(name string) slog.Handler    { return traceIDs{t.Handler.WithGroup(name)} }
