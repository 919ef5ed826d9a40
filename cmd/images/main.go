// Command images builds Scale's container images without a container
// engine (no Docker daemon, no registry pull): a static binary per
// service, each in a reproducible image (internal/ociimage), written as a
// tarball that `docker load` or `podman load` reads and as an OCI layout
// that `crane push` or `skopeo copy` sends to a registry.
//
//	go run ./cmd/images [-out dist/images] [-version V] [NAME ...]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/ociimage"
)

// binaries are the images: name → the package's folder and its module's
// folder (the chaos runner is a module of its own).
var binaries = map[string][2]string{
	"scale":        {"./cmd/scale", "."},
	"ingest":       {"./services/ingest/cmd/ingest", "."},
	"extract":      {"./services/extract/cmd/extract", "."},
	"similarity":   {"./services/similarity/cmd/similarity", "."},
	"api":          {"./services/api/cmd/api", "."},
	"chaos-runner": {".", "services/chaos-runner"},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	out := flag.String("out", "dist/images", "folder for the image tarballs (NAME.tar) and the OCI layout (oci/)")
	version := flag.String("version", "dev", "the images' tag and version label")
	repo := flag.String("repository", "ghcr.io/scale-dev", "the images' repository prefix: REPOSITORY/scale-NAME:VERSION (REPOSITORY/scale:VERSION for scale)")
	certs := flag.String("certs", "/etc/ssl/certs/ca-certificates.crt", "the CA bundle to put in (Debian's ca-certificates package)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: images [flags] [NAME ...]  (NAME: %s; default all)\n", strings.Join(names(), ", "))
		flag.PrintDefaults()
	}
	flag.Parse()
	want := flag.Args()
	if len(want) == 0 {
		want = names()
	}
	root, err := launcher.RepoRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "scale-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	oci, err := layout.Write(filepath.Join(*out, "oci"), empty.Index)
	if err != nil {
		return err
	}
	for _, n := range want {
		b, ok := binaries[n]
		if !ok {
			return fmt.Errorf("no image %q (there are %s)", n, strings.Join(names(), ", "))
		}
		bin := filepath.Join(tmp, n)
		if err := ociimage.StaticBinary(ctx, filepath.Join(root, b[1]), b[0], bin, *version); err != nil {
			return err
		}
		img, err := ociimage.Build(ociimage.Spec{Name: n, Binary: bin, Certs: *certs, Version: *version, Source: "https://github.com/scale-dev/scale"})
		if err != nil {
			return fmt.Errorf("image %s: %w", n, err)
		}
		image := "scale-" + n
		if n == "scale" {
			image = "scale" // the one-command binary is the product's own image
		}
		ref, err := name.NewTag(fmt.Sprintf("%s/%s:%s", *repo, image, *version))
		if err != nil {
			return err
		}
		if err := tarball.WriteToFile(filepath.Join(*out, n+".tar"), ref, img); err != nil {
			return err
		}
		if err := oci.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref.String()})); err != nil {
			return err
		}
		digest, err := img.Digest()
		if err != nil {
			return err
		}
		fmt.Printf("%s %s\n", ref, digest)
	}
	return nil
}

func names() []string {
	var out []string
	for n := range binaries {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
