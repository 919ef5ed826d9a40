package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/scale-dev/scale/internal/freeport"
	"github.com/scale-dev/scale/internal/objstore"
)

// VersityGWVersion is the versitygw release .ci/run installs.
const VersityGWVersion = "v1.8.0"

// S3Server is a running S3-compatible server.
type S3Server struct {
	Config objstore.S3Config
	Client *objstore.Client
	cmd    *exec.Cmd
}

func versitygwPath() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		home, _ := os.UserHomeDir()
		gopath = filepath.Join(home, "go")
	}
	p := filepath.Join(gopath, "bin", "versitygw")
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

// S3 starts versitygw on a free loopback port over a posix folder of the test.
// Outside CI the test is skipped, with the install command, when versitygw is
// not installed; in CI that is a failure.
func S3(t testing.TB) *S3Server {
	t.Helper()
	bin, err := versitygwPath()
	if err != nil {
		msg := "versitygw not installed: go install github.com/versity/versitygw/cmd/versitygw@" + VersityGWVersion
		if InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	port, err := freeport.Get()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := objstore.S3Config{Endpoint: "http://" + addr, Region: "us-east-1", PathStyle: true, AccessKey: "scale-test", SecretKey: "scale-test-secret"}
	cmd := exec.Command(bin, "--access", cfg.AccessKey, "--secret", cfg.SecretKey, "--port", addr, "posix", root)
	logFile, err := os.Create(filepath.Join(t.TempDir(), "versitygw.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting versitygw: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); logFile.Close() }) //nolint:errcheck // teardown
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile.Name())
			t.Fatalf("versitygw did not listen on %s in 20s:\n%s", addr, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	client, err := objstore.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &S3Server{Config: cfg, Client: client, cmd: cmd}
}

// CreateBucket creates a bucket.
func (s *S3Server) CreateBucket(t testing.TB, bucket string) {
	t.Helper()
	if _, err := s.Client.S3().CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("creating bucket %s: %v", bucket, err)
	}
}

// Put stores an object.
func (s *S3Server) Put(t testing.TB, bucket, key string, data []byte) {
	t.Helper()
	_, err := s.Client.S3().PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data)})
	if err != nil {
		t.Fatalf("putting s3://%s/%s: %v", bucket, key, err)
	}
}
