package experiment

import (
	"context"
	"fmt"
	"os"

	"github.com/scale-dev/scale/internal/objstore"
)

// Config is how the runner and the services it starts reach an S3 prefix:
// its endpoint and region, the credentials from SCALE_STORAGE_ACCESS_KEY and
// SCALE_STORAGE_SECRET_KEY (unset: the AWS default chain).
func (p S3Prefix) Config() objstore.S3Config {
	region := p.Region
	if region == "" {
		region = "us-east-1"
	}
	return objstore.S3Config{Endpoint: p.Endpoint, Region: region, PathStyle: p.PathStyle,
		AccessKey: os.Getenv("SCALE_STORAGE_ACCESS_KEY"), SecretKey: os.Getenv("SCALE_STORAGE_SECRET_KEY")}
}

// ListWorkload lists a workload's files (their source URLs) at source, a
// bucket prefix or a folder; a workload with no MIDI file is an error.
func ListWorkload(ctx context.Context, client *objstore.Client, source string) ([]string, error) {
	var files []string
	if err := client.List(ctx, source, "", func(o objstore.Object) error {
		files = append(files, o.URL)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("the workload: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("the workload %s holds no MIDI file", source)
	}
	return files, nil
}
