// Package objstore lists and reads the MIDI objects Scale ingests, from an
// S3-compatible bucket (aws-sdk-go-v2: AWS S3, MinIO, versitygw, ...) or from a
// local folder. Objects are named by URL: s3://bucket/key or file:///path.
package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/scale-dev/scale/internal/corpus"
)

// Permanent errors: retrying cannot help.
var (
	ErrNotFound = errors.New("object does not exist")
	ErrTooLarge = errors.New("object is larger than the limit")
)

// S3Config locates an S3-compatible service. Empty credentials use the AWS
// default chain (environment, shared config, instance role).
type S3Config struct {
	Endpoint  string // empty: AWS S3
	Region    string
	PathStyle bool
	AccessKey string
	SecretKey string
}

// Object is one listed MIDI object.
type Object struct {
	URL  string // s3://bucket/key or file:///path
	Key  string // the key or path, for naming
	Size int64
	MD5  string // content MD5 when the listing knows it (a simple S3 ETag)
}

// Client reads objects from S3 and local folders.
type Client struct {
	cfg S3Config
	s3  *s3.Client
}

// idleConns is how many idle connections to the S3 endpoint a client keeps:
// above the reads a worker has in flight (SCALE_EXTRACT_READS, 128 by default).
const idleConns = 256

// New builds a client; the S3 part is configured now and used only for s3:// URLs.
func New(ctx context.Context, cfg S3Config) (*Client, error) {
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(cfg.Region)}
	if cfg.AccessKey != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, "")))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("loading S3 configuration: %w", err)
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		// The SDK keeps 10 idle connections per host by default; a worker
		// with more reads in flight closed the rest after each answer and
		// dialled anew (13,000 sockets in TIME-WAIT and 2 % of the machine's
		// CPU in dialling during a Lakh-size run through versitygw).
		o.HTTPClient = awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			tr.MaxIdleConns, tr.MaxIdleConnsPerHost = idleConns, idleConns
		})
		// Self-hosted servers send no checksums; without this the SDK logs a
		// line on stderr for every object read.
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	return &Client{cfg: cfg, s3: client}, nil
}

// S3 exposes the underlying S3 client (tests use it to create buckets and objects).
func (c *Client) S3() *s3.Client { return c.s3 }

// FileURL is the URL of a local file.
func FileURL(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String(), nil
}

// S3URL is the URL of an object.
func S3URL(bucket, key string) string {
	return (&url.URL{Scheme: "s3", Host: bucket, Path: "/" + key}).String()
}

// List calls fn for every MIDI object under location (s3://bucket/prefix, or
// a local folder as a path or file:// URL) in key order, starting after the
// key after: a listing that failed resumes after the last key it gave.
func (c *Client) List(ctx context.Context, location, after string, fn func(Object) error) error {
	u, err := url.Parse(location)
	if err == nil && u.Scheme == "s3" {
		return c.listS3(ctx, u.Host, strings.TrimPrefix(u.Path, "/"), after, fn)
	}
	dir := location
	if err == nil && u.Scheme == "file" {
		dir = u.Path
	}
	return listDir(ctx, dir, after, fn)
}

// Transient reports whether a failed S3 call may succeed if tried again:
// the server could not be reached or answered with a 5xx. A missing bucket,
// refused credentials or a cancelled context are not.
func Transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() != 0 {
		return re.HTTPStatusCode() >= 500
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return false
	}
	var ne net.Error
	var oe *smithy.OperationError
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

var plainETag = regexp.MustCompile(`^[0-9a-f]{32}$`)

func (c *Client) listS3(ctx context.Context, bucket, prefix, after string, fn func(Object) error) error {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)}
	if after != "" {
		in.StartAfter = aws.String(after)
	}
	p := s3.NewListObjectsV2Paginator(c.s3, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("listing s3://%s/%s: %w", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			if !corpus.IsMIDIName(key) {
				continue
			}
			obj := Object{URL: S3URL(bucket, key), Key: key, Size: aws.ToInt64(o.Size)}
			// A single-part upload's ETag is the content MD5; a multipart one is not.
			if etag := strings.Trim(aws.ToString(o.ETag), `"`); plainETag.MatchString(etag) {
				obj.MD5 = etag
			}
			if err := fn(obj); err != nil {
				return err
			}
		}
	}
	return nil
}

func listDir(ctx context.Context, dir, after string, fn func(Object) error) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	err = filepath.WalkDir(abs, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !d.Type().IsRegular() || !corpus.IsMIDIName(d.Name()) {
			return nil
		}
		if after != "" { // resuming: skip to the walk's object after it
			if path == after {
				after = ""
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		u, err := FileURL(path)
		if err != nil {
			return err
		}
		return fn(Object{URL: u, Key: path, Size: info.Size()})
	})
	if err == nil && after != "" {
		err = fmt.Errorf("resuming after %s: no such file", after)
	}
	if err != nil {
		return fmt.Errorf("listing %s: %w", dir, err)
	}
	return nil
}

// Get reads the object at url into into's storage when it has room (else
// into a new buffer), failing with ErrTooLarge past limit bytes and
// ErrNotFound when it is gone; other errors are transient. A caller reading
// many objects passes back the buffer of one it is done with: on a small
// machine a fresh 34-KB buffer per object costs more than reading it (the
// garbage collector's cycles, zeroing, and the page faults and TLB flushes of
// memory the runtime returns to the kernel and takes back).
func (c *Client) Get(ctx context.Context, objectURL string, limit int64, into []byte) ([]byte, error) {
	u, err := url.Parse(objectURL)
	if err != nil {
		return nil, fmt.Errorf("object URL %q: %w", objectURL, err)
	}
	var body io.ReadCloser
	var size int64 // the size announced, if any: the buffer is allocated once
	switch u.Scheme {
	case "s3":
		out, err := c.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(u.Host), Key: aws.String(strings.TrimPrefix(u.Path, "/"))})
		if err != nil {
			var nsk *s3types.NoSuchKey
			var nsb *s3types.NoSuchBucket
			if errors.As(err, &nsk) || errors.As(err, &nsb) {
				return nil, fmt.Errorf("getting %s: %w", objectURL, ErrNotFound)
			}
			return nil, fmt.Errorf("getting %s: %w", objectURL, err)
		}
		body, size = out.Body, aws.ToInt64(out.ContentLength)
	case "file":
		f, err := os.Open(filepath.FromSlash(u.Path))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading %s: %w", objectURL, ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", objectURL, err)
		}
		body = f
		if st, err := f.Stat(); err == nil {
			size = st.Size()
		}
	default:
		return nil, fmt.Errorf("object URL %q: scheme must be s3 or file", objectURL)
	}
	defer body.Close()
	if size > limit {
		return nil, fmt.Errorf("reading %s: %w (%d bytes)", objectURL, ErrTooLarge, limit)
	}
	if need := max(size, 0) + bytes.MinRead; int64(cap(into)) < need {
		into = make([]byte, 0, need) // sized once: ReadFrom then never grows it
	}
	buf := bytes.NewBuffer(into[:0])
	if _, err := buf.ReadFrom(io.LimitReader(body, limit+1)); err != nil {
		return nil, fmt.Errorf("reading %s: %w", objectURL, err)
	}
	data := buf.Bytes()
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("reading %s: %w (%d bytes)", objectURL, ErrTooLarge, limit)
	}
	return data, nil
}
