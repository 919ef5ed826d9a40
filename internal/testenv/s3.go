package testenv

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/scale-dev/scale/internal/objstore"
	"github.com/scale-dev/scale/internal/versitygw"
)

// S3Server is a running S3-compatible server.
type S3Server struct {
	Config objstore.S3Config
	Client *objstore.Client
}

// S3 starts versitygw on a free loopback port over a posix folder of the test.
// Outside CI the test is skipped, with the install command, when versitygw is
// not installed; in CI that is a failure.
func S3(t testing.TB) *S3Server {
	t.Helper()
	if _, err := versitygw.Path(); err != nil {
		Missing(t, "%v", err)
	}
	gw, err := versitygw.Start(t.TempDir(), filepath.Join(t.TempDir(), "versitygw.log"), versitygw.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Stop)
	client, err := objstore.New(context.Background(), gw.Config)
	if err != nil {
		t.Fatal(err)
	}
	return &S3Server{Config: gw.Config, Client: client}
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
