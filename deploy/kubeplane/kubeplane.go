// Package kubeplane runs a real Kubernetes control plane on loopback for
// tests: etcd, kube-apiserver, kube-controller-manager
// (the ReplicaSet, HPA, disruption and garbage-collection controllers),
// kube-scheduler, and kwok, which plays the kubelet of fake nodes (pods on
// them become Running and Ready; nothing runs in them). The binaries come from
// deploy/kube/binaries.sh. Everything it starts is stopped, and its folder
// removed, when the test ends.
package kubeplane

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/scale-dev/scale/internal/freeport"
	"github.com/scale-dev/scale/internal/testenv"
)

// Version is the Kubernetes release deploy/kube/binaries.sh builds.
const Version = "v1.37.2"

// FakeNodeAnnotation marks the nodes kwok manages.
const FakeNodeAnnotation = "kwok.x-k8s.io/node"

// BinDir is where deploy/kube/binaries.sh caches the binaries.
func BinDir() string {
	if d := os.Getenv("SCALE_K8S_BIN"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "scale-k8s", Version, "bin")
}

// Plane is a running control plane.
type Plane struct {
	Dir    string
	Host   string // https://127.0.0.1:PORT
	Token  string // the admin's bearer token (system:masters)
	Config *rest.Config
	Client kubernetes.Interface
	// Kubeconfig is a kubeconfig file for the admin.
	Kubeconfig string
	procs      []*exec.Cmd
}

// Options size the plane.
type Options struct {
	Nodes int // fake nodes (default 3)
	// ControllerArgs are added to kube-controller-manager's flags.
	ControllerArgs []string
}

// Start starts a plane for t (a missing binary stops the test through
// testenv.Missing: a skip locally, a failure in CI).
func Start(t testing.TB, o Options) *Plane {
	t.Helper()
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	bin := BinDir()
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kwok-stages.yaml"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			testenv.Missing(t, "kubeplane: %s is not built (make kube-binaries): %v", b, err)
		}
	}
	etcd := filepath.Join(bin, "etcd")
	dir, err := os.MkdirTemp("", "kubeplane-")
	if err != nil {
		t.Fatal(err)
	}
	p := &Plane{Dir: dir}
	t.Cleanup(p.stop)
	if err := p.start(etcd, bin, o); err != nil {
		t.Fatalf("kubeplane: %v\n%s", err, p.Logs())
	}
	if err := p.addNodes(o.Nodes); err != nil {
		t.Fatalf("kubeplane: %v\n%s", err, p.Logs())
	}
	return p
}

func (p *Plane) start(etcd, bin string, o Options) error {
	ports := make([]int, 6)
	for i := range ports {
		port, err := freeport.Get()
		if err != nil {
			return err
		}
		ports[i] = port
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	if err := p.run("etcd", etcd, "--data-dir", filepath.Join(p.Dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		"--initial-cluster", fmt.Sprintf("default=http://127.0.0.1:%d", ports[1])); err != nil {
		return err
	}

	token := make([]byte, 16)
	if _, err := rand.Read(token); err != nil {
		return err
	}
	p.Token = hex.EncodeToString(token)
	tokens := filepath.Join(p.Dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(p.Token+",admin,admin-uid,system:masters\n"), 0o600); err != nil {
		return err
	}
	saKey := filepath.Join(p.Dir, "sa.key")
	if err := writeRSAKey(saKey); err != nil {
		return err
	}
	p.Host = fmt.Sprintf("https://127.0.0.1:%d", ports[2])
	if err := p.run("kube-apiserver", filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers", etcdURL, "--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(ports[2]),
		"--cert-dir", filepath.Join(p.Dir, "apiserver-certs"), "--token-auth-file", tokens,
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc", "--service-account-key-file", saKey,
		"--service-account-signing-key-file", saKey, "--service-cluster-ip-range", "10.96.0.0/16",
		"--endpoint-reconciler-type", "none",
		// Fake nodes that stop reporting lose their pods in seconds, not minutes.
		"--default-not-ready-toleration-seconds", "10", "--default-unreachable-toleration-seconds", "10"); err != nil {
		return err
	}
	p.Config = &rest.Config{Host: p.Host, BearerToken: p.Token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 100, Burst: 200}
	if err := p.waitReady(90 * time.Second); err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(p.Config)
	if err != nil {
		return err
	}
	p.Client = client
	p.Kubeconfig = filepath.Join(p.Dir, "admin.kubeconfig")
	if err := p.WriteKubeconfig(p.Kubeconfig, p.Token); err != nil {
		return err
	}
	controllerArgs := append([]string{"--kubeconfig", p.Kubeconfig, "--leader-elect=false", "--bind-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(ports[3]), "--authentication-skip-lookup",
		"--service-account-private-key-file", saKey, "--use-service-account-credentials=false",
		"--root-ca-file", filepath.Join(p.Dir, "apiserver-certs", "apiserver.crt")}, o.ControllerArgs...)
	if err := p.run("kube-controller-manager", filepath.Join(bin, "kube-controller-manager"), controllerArgs...); err != nil {
		return err
	}
	if err := p.run("kube-scheduler", filepath.Join(bin, "kube-scheduler"), "--kubeconfig", p.Kubeconfig,
		"--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", fmt.Sprint(ports[4]),
		"--authentication-skip-lookup"); err != nil {
		return err
	}
	// The heartbeat-with-lease stage only keeps a node Ready while kwok renews
	// its lease; without a lease duration it renews none, and 40 s later the
	// node lifecycle controller taints every node and evicts the pods.
	return p.run("kwok", filepath.Join(bin, "kwok"), "--kubeconfig", p.Kubeconfig, "--config", filepath.Join(bin, "kwok-stages.yaml"),
		"--node-lease-duration-seconds", "40",
		"--manage-all-nodes=false", "--manage-nodes-with-annotation-selector", FakeNodeAnnotation+"=fake",
		"--server-address", fmt.Sprintf("127.0.0.1:%d", ports[5]), "--cidr", "10.244.0.1/16", "--node-ip", "10.0.0.1")
}

// WriteKubeconfig writes a kubeconfig for a bearer token.
func (p *Plane) WriteKubeconfig(path, token string) error {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: plane, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: user, user: {token: %q}}]
contexts: [{name: plane, context: {cluster: plane, user: user}}]
current-context: plane
`, p.Host, token)
	return os.WriteFile(path, []byte(cfg), 0o600)
}

func writeRSAKey(path string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
}

// run starts a component in its own process group, its output in DIR/NAME.log.
func (p *Plane) run(name, binary string, args ...string) error {
	log, err := os.Create(filepath.Join(p.Dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	log.Close()
	p.procs = append(p.procs, cmd)
	return nil
}

// waitReady waits for the apiserver's /readyz.
func (p *Plane) waitReady(timeout time.Duration) error {
	client, err := rest.HTTPClientFor(p.Config)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		resp, err := client.Get(p.Host + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after %s: %v", timeout, last)
}

// addNodes registers n fake nodes kwok manages, and waits for them to be Ready.
func (p *Plane) addNodes(n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range n {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        fmt.Sprintf("fake-%d", i+1),
				Annotations: map[string]string{FakeNodeAnnotation: "fake", "node.alpha.kubernetes.io/ttl": "0"},
				Labels:      map[string]string{"kubernetes.io/hostname": fmt.Sprintf("fake-%d", i+1), "type": "kwok"},
			},
			Status: corev1.NodeStatus{
				Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("256Gi"), corev1.ResourcePods: resource.MustParse("110")},
				Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("256Gi"), corev1.ResourcePods: resource.MustParse("110")},
			},
		}
		if _, err := p.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating node %s: %w", node.Name, err)
		}
	}
	for {
		nodes, err := p.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		ready := 0
		if err == nil {
			for _, nd := range nodes.Items {
				for _, c := range nd.Status.Conditions {
					if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
						ready++
					}
				}
			}
		}
		if ready == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d fake nodes ready: %v", ready, n, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Logs is the tail of every component's log, for a failure message.
func (p *Plane) Logs() string {
	var b strings.Builder
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"} {
		data, err := os.ReadFile(filepath.Join(p.Dir, name+".log"))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		fmt.Fprintf(&b, "--- %s (last lines)\n%s\n", name, strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
	return b.String()
}

// stop stops every component (the group, so nothing it started stays) in
// reverse order and removes the folder.
func (p *Plane) stop() {
	for i := len(p.procs) - 1; i >= 0; i-- {
		cmd := p.procs[i]
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) //nolint:errcheck // it may be gone
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }() //nolint:errcheck // stopping
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) //nolint:errcheck // it may be gone
			<-done
		}
	}
	os.RemoveAll(p.Dir)
}
