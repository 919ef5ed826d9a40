package objstore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/scale-dev/scale/internal/objstore"
	"github.com/scale-dev/scale/internal/testenv"
)

// benchObjects is how many objects a read benchmark cycles through, each of
// benchObjectSize bytes (the Lakh corpus's mean file size).
const (
	benchObjects    = 64
	benchObjectSize = 34 << 10
)

// BenchmarkGetS3 reads objects through a real versitygw from 16 goroutines.
// Besides the wall time per read it reports client-cpu-ns/op, this process's
// CPU per read: the gateway is another process, so that is what a read costs
// an extract worker (the SDK's request building, signing, HTTP and body
// handling). fresh: a new buffer per read; reused: each goroutine passes back
// its last buffer, as extract does.
func BenchmarkGetS3(b *testing.B) {
	srv := testenv.S3(b)
	srv.CreateBucket(b, "midi")
	data := make([]byte, benchObjectSize)
	urls := make([]string, benchObjects)
	for i := range urls {
		key := fmt.Sprintf("bench/%02d.mid", i)
		srv.Put(b, "midi", key, data)
		urls[i] = objstore.S3URL("midi", key)
	}
	benchmarkGet(b, srv.Client, urls)
}

// BenchmarkGetFolder is BenchmarkGetS3 for files in a local folder: all of
// the CPU per read is this process's (and the kernel's on its behalf).
func BenchmarkGetFolder(b *testing.B) {
	dir := b.TempDir()
	data := make([]byte, benchObjectSize)
	urls := make([]string, benchObjects)
	for i := range urls {
		path := filepath.Join(dir, fmt.Sprintf("%02d.mid", i))
		if err := os.WriteFile(path, data, 0o644); err != nil {
			b.Fatal(err)
		}
		u, err := objstore.FileURL(path)
		if err != nil {
			b.Fatal(err)
		}
		urls[i] = u
	}
	client, err := objstore.New(context.Background(), objstore.S3Config{Region: "us-east-1"})
	if err != nil {
		b.Fatal(err)
	}
	benchmarkGet(b, client, urls)
}

func benchmarkGet(b *testing.B, client *objstore.Client, urls []string) {
	ctx := context.Background()
	for _, mode := range []struct {
		name  string
		reuse bool
	}{{"fresh", false}, {"reused", true}} {
		b.Run(mode.name, func(b *testing.B) {
			b.SetParallelism(8) // × GOMAXPROCS goroutines
			b.ResetTimer()
			began := processCPU()
			b.RunParallel(func(pb *testing.PB) {
				var buf []byte
				for i := 0; pb.Next(); i++ {
					data, err := client.Get(ctx, urls[i%len(urls)], 1<<20, buf)
					if err != nil {
						b.Error(err)
						return
					}
					if mode.reuse {
						buf = data
					}
				}
			})
			b.ReportMetric(float64(processCPU()-began)/float64(b.N), "client-cpu-ns/op")
		})
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
