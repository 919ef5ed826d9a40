package objstore_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/scale-dev/scale/internal/objstore"
	"github.com/scale-dev/scale/internal/testenv"
)

// BenchmarkGetS3 reads 34-KB objects (the Lakh corpus's mean size) through a
// real versitygw from 16 goroutines. Besides the wall time per read it
// reports client-cpu-ns/op, this process's CPU per read: the gateway is
// another process, so that is what a read costs an extract worker (the SDK's
// request building, signing, HTTP and body handling).
func BenchmarkGetS3(b *testing.B) {
	srv := testenv.S3(b)
	srv.CreateBucket(b, "midi")
	const objects = 64
	data := make([]byte, 34<<10)
	urls := make([]string, objects)
	for i := range urls {
		key := fmt.Sprintf("bench/%02d.mid", i)
		srv.Put(b, "midi", key, data)
		urls[i] = objstore.S3URL("midi", key)
	}
	ctx := context.Background()
	b.SetParallelism(8) // × GOMAXPROCS goroutines
	b.ResetTimer()
	began := processCPU()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if _, err := srv.Client.Get(ctx, urls[i%objects], 1<<20); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(processCPU()-began)/float64(b.N), "client-cpu-ns/op")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
