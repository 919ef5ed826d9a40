package objstore_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/scale-dev/scale/internal/objstore"
	"github.com/scale-dev/scale/internal/testenv"
)

// backend is one implementation under the contract: where its objects live and
// how to put one there.
type backend struct {
	location string
	put      func(t *testing.T, key string, data []byte)
	url      func(key string) string
	client   *objstore.Client
}

// testContract is the one suite every backend must pass.
func testContract(t *testing.T, b backend) {
	ctx := context.Background()
	files := map[string]string{"a.mid": "first", "sub/b.MIDI": "second song", "sub/deeper/c d.kar": "karaoke", "notes.txt": "not midi"}
	for k, v := range files {
		b.put(t, k, []byte(v))
	}
	var got []objstore.Object
	err := b.client.List(ctx, b.location, "", func(o objstore.Object) error {
		got = append(got, o)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A listing resumed after a key gives what followed it, in the same order.
	for i := range got {
		var rest []objstore.Object
		if err := b.client.List(ctx, b.location, got[i].Key, func(o objstore.Object) error {
			rest = append(rest, o)
			return nil
		}); err != nil {
			t.Fatalf("resuming after %s: %v", got[i].Key, err)
		}
		if fmt.Sprint(rest) != fmt.Sprint(got[i+1:]) {
			t.Errorf("resumed after %s: %v, want %v", got[i].Key, rest, got[i+1:])
		}
	}
	sort.Slice(got, func(i, j int) bool { return got[i].URL < got[j].URL })
	if len(got) != 3 {
		t.Fatalf("listed %d objects, want the 3 MIDI ones: %+v", len(got), got)
	}
	for _, o := range got {
		var key string
		for k := range files {
			if b.url(k) == o.URL {
				key = k
			}
		}
		if key == "" {
			t.Fatalf("listed unexpected %s", o.URL)
		}
		if o.Size != int64(len(files[key])) {
			t.Errorf("%s: size %d, want %d", key, o.Size, len(files[key]))
		}
		data, err := b.client.Get(ctx, o.URL, 1<<20, nil)
		if err != nil || string(data) != files[key] {
			t.Errorf("Get(%s) = %q, %v; want %q", o.URL, data, err, files[key])
		}
	}
	// A buffer with room is read into (after a longer object, the result is
	// only the new one); one without room is left alone.
	roomy := make([]byte, 0, 1<<10)
	for _, key := range []string{"sub/b.MIDI", "a.mid"} {
		data, err := b.client.Get(ctx, b.url(key), 1<<20, roomy)
		if err != nil || string(data) != files[key] || &data[:1][0] != &roomy[:1][0] {
			t.Errorf("Get(%s) into a buffer with room = %q, %v (its storage: %v); want %q in it", key, data, err, err == nil && &data[:1][0] == &roomy[:1][0], files[key])
		}
	}
	tight := []byte("xy")
	if data, err := b.client.Get(ctx, b.url("sub/b.MIDI"), 1<<20, tight[:0]); err != nil || string(data) != files["sub/b.MIDI"] || string(tight) != "xy" {
		t.Errorf("Get into a buffer without room = %q, %v, buffer now %q; want %q and the buffer untouched", data, err, tight, files["sub/b.MIDI"])
	}
	if _, err := b.client.Get(ctx, b.url("missing.mid"), 1<<20, nil); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Get(missing) error %v, want ErrNotFound", err)
	}
	if _, err := b.client.Get(ctx, b.url("sub/b.MIDI"), 3, nil); !errors.Is(err, objstore.ErrTooLarge) {
		t.Errorf("Get over the limit: error %v, want ErrTooLarge", err)
	}
}

func TestLocalFolder(t *testing.T) {
	dir := t.TempDir()
	client, err := objstore.New(context.Background(), objstore.S3Config{Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	testContract(t, backend{
		location: dir,
		client:   client,
		put: func(t *testing.T, key string, data []byte) {
			p := filepath.Join(dir, key)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
		},
		url: func(key string) string {
			u, err := objstore.FileURL(filepath.Join(dir, key))
			if err != nil {
				t.Fatal(err)
			}
			return u
		},
	})
}

func TestS3(t *testing.T) {
	srv := testenv.S3(t)
	srv.CreateBucket(t, "midi")
	testContract(t, backend{
		location: "s3://midi/corpus/",
		client:   srv.Client,
		put:      func(t *testing.T, key string, data []byte) { srv.Put(t, "midi", "corpus/"+key, data) },
		url:      func(key string) string { return objstore.S3URL("midi", "corpus/"+key) },
	})
	// A simple upload's ETag is the content MD5, which the listing reports.
	err := srv.Client.List(context.Background(), "s3://midi/corpus/a.mid", "", func(o objstore.Object) error {
		if o.MD5 != md5hex("first") {
			t.Errorf("MD5 %q, want md5 of the content", o.MD5)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(objstore.S3URL("b", "k k.mid"), "s3://b/") {
		t.Error("S3URL must keep the bucket as host")
	}

	// A server that does not answer is worth trying again; a bucket that
	// does not exist is not.
	nothing := func(objstore.Object) error { return nil }
	if err := srv.Client.List(context.Background(), "s3://no-such-bucket/", "", nothing); err == nil || objstore.Transient(err) {
		t.Errorf("listing a missing bucket: %v, transient %v; want a permanent error", err, objstore.Transient(err))
	}
	down, err := objstore.New(context.Background(), objstore.S3Config{Endpoint: "http://127.0.0.1:1", Region: "us-east-1", PathStyle: true, AccessKey: "a", SecretKey: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if err := down.List(context.Background(), "s3://midi/", "", nothing); err == nil || !objstore.Transient(err) {
		t.Errorf("listing on a server that is down: %v, transient %v; want a transient error", err, objstore.Transient(err))
	}
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}
