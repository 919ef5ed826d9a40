package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/scale-dev/scale/deploy/kubeplane"
	"github.com/scale-dev/scale/pkg/events"
)

// The external metric KEDA's nats-jetstream trigger publishes for our stream,
// which the chart's hpa-external mode reads.
var lagMetric = "s0-nats-jetstream-" + events.StreamDiscovered

// lagAdapter is an external-metrics API server (what KEDA's metrics server
// or any adapter serves) answering the lag of the extract consumer with
// KEDA's formula, read live from the real JetStream consumer: pending plus
// in flight. A missing consumer is an error (as in KEDA since #7668), never a
// number: the HPA then stops scaling instead of scaling to the maximum.
type lagAdapter struct {
	js  jetstream.JetStream
	srv *httptest.Server
}

func startLagAdapter(t *testing.T, js jetstream.JetStream) *lagAdapter {
	a := &lagAdapter{js: js}
	a.srv = httptest.NewTLSServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *lagAdapter) port() string {
	_, port, _ := net.SplitHostPort(a.srv.Listener.Addr().String())
	return port
}

const externalGV = "external.metrics.k8s.io/v1beta1"

func (a *lagAdapter) serve(w http.ResponseWriter, r *http.Request) {
	reply := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v) //nolint:errcheck // the apiserver retries
	}
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case path == "/apis":
		reply(map[string]any{"kind": "APIGroupList", "apiVersion": "v1", "groups": []any{map[string]any{
			"name": "external.metrics.k8s.io", "versions": []any{map[string]any{"groupVersion": externalGV, "version": "v1beta1"}},
			"preferredVersion": map[string]any{"groupVersion": externalGV, "version": "v1beta1"}}}})
	case path == "/apis/"+externalGV:
		reply(map[string]any{"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": externalGV, "resources": []any{
			map[string]any{"name": lagMetric, "singularName": "", "namespaced": true, "kind": "ExternalMetricValueList", "verbs": []string{"get"}}}})
	case strings.HasPrefix(path, "/apis/"+externalGV+"/namespaces/") && strings.EqualFold(path[strings.LastIndex(path, "/")+1:], lagMetric):
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		lag, err := consumerLag(ctx, a.js)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		reply(map[string]any{"kind": "ExternalMetricValueList", "apiVersion": externalGV, "metadata": map[string]any{},
			"items": []any{map[string]any{"metricName": lagMetric, "metricLabels": map[string]string{},
				"timestamp": time.Now().UTC().Format(time.RFC3339), "value": fmt.Sprint(lag)}}})
	default:
		http.NotFound(w, r)
	}
}

// consumerLag is KEDA's nats-jetstream lag: the consumer's pending plus in-flight messages.
func consumerLag(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	cons, err := js.Consumer(ctx, events.StreamDiscovered, events.ConsumerExtract)
	if err != nil {
		return 0, fmt.Errorf("consumer %s: %w", events.ConsumerExtract, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}

// register makes the plane's aggregator serve the adapter as
// external.metrics.k8s.io: an APIService pointing at an ExternalName Service
// whose name is 127.0.0.1 (the way kwokctl registers metrics-server).
func (a *lagAdapter) register(t *testing.T, p *kubeplane.Plane) {
	t.Helper()
	ctx := context.Background()
	if _, err := p.Client.CoreV1().Services("kube-system").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "scale-lag-adapter"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "127.0.0.1"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(p.Config)
	if err != nil {
		t.Fatal(err)
	}
	apiServices := dyn.Resource(schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"})
	var port int64
	fmt.Sscan(a.port(), &port) //nolint:errcheck // a listener's port
	svc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": "v1beta1.external.metrics.k8s.io"},
		"spec": map[string]any{"group": "external.metrics.k8s.io", "version": "v1beta1", "insecureSkipTLSVerify": true,
			"groupPriorityMinimum": int64(100), "versionPriority": int64(100),
			"service": map[string]any{"namespace": "kube-system", "name": "scale-lag-adapter", "port": port}},
	}}
	if _, err := apiServices.Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := apiServices.Get(ctx, "v1beta1.external.metrics.k8s.io", metav1.GetOptions{})
		if err == nil {
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, c := range conds {
				if m, _ := c.(map[string]any); m["type"] == "Available" && m["status"] == "True" {
					return
				}
			}
			err = fmt.Errorf("conditions %v", conds)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the external metrics APIService is not available: %v", errors.Join(err))
		}
		time.Sleep(250 * time.Millisecond)
	}
}
