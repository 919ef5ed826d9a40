// Package ociimage builds Scale's container images without a container
// engine: each image is one layer over nothing (no shell, no package
// manager) holding a static binary, the CA certificates and a passwd entry
// for the non-root user 65532 it runs as, with fixed timestamps and a
// fixed file order, so that the same binary and certificates give the same
// image digest on any machine.
package ociimage

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// User is the numeric user and group the images run as (distroless's
// nonroot): restricted Pod Security asks for a non-root numeric user.
const User = 65532

// BinDir is where the binary lives in the image.
const BinDir = "/usr/local/bin"

// CertFile is where the CA certificates live in the image (and where Go's
// crypto/x509 looks on Linux).
const CertFile = "/etc/ssl/certs/ca-certificates.crt"

// epoch is every timestamp in an image: a build does not depend on when it ran.
var epoch = time.Unix(0, 0).UTC()

// Spec says what goes into an image.
type Spec struct {
	Name    string // the binary's name: the entrypoint is BinDir/Name
	Binary  string // path of the static binary to put in
	Certs   string // path of the CA bundle (Debian: /etc/ssl/certs/ca-certificates.crt)
	Version string // the org.opencontainers.image.version label
	Source  string // the org.opencontainers.image.source label
}

// StaticBinary builds pkg (in the module at dir) as a static, reproducible
// binary at out for linux/amd64: no cgo, no file paths or build id in it.
func StaticBinary(ctx context.Context, dir, pkg, out, version string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath",
		"-ldflags", "-s -w -buildid= -X github.com/scale-dev/scale/internal/buildinfo.version="+version, "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// Build makes the image of s.
func Build(s Spec) (v1.Image, error) {
	bin, err := os.ReadFile(s.Binary)
	if err != nil {
		return nil, err
	}
	certs, err := os.ReadFile(s.Certs)
	if err != nil {
		return nil, fmt.Errorf("the CA certificates: %w", err)
	}
	fs, err := filesystem(s.Name, bin, certs)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(fs)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = "amd64", "linux"
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config = v1.Config{
		Entrypoint: []string{path.Join(BinDir, s.Name)},
		User:       fmt.Sprintf("%d:%d", User, User),
		WorkingDir: "/home/nonroot",
		Env:        []string{"PATH=" + BinDir, "SSL_CERT_FILE=" + CertFile},
		Labels: map[string]string{
			"org.opencontainers.image.title":   "scale-" + s.Name,
			"org.opencontainers.image.version": s.Version,
			"org.opencontainers.image.source":  s.Source,
		},
	}
	return mutate.ConfigFile(img, cfg)
}

// filesystem is the image's one layer: a tar in a fixed order with fixed
// times and owners.
func filesystem(name string, bin, certs []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(p string, uid int, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: epoch, Format: tar.FormatPAX})
	}
	file := func(p string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", User, User)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", User)
	steps := []error{
		dir("etc", 0, 0o755),
		file("etc/group", 0o644, []byte(group)),
		file("etc/passwd", 0o644, []byte(passwd)),
		dir("etc/ssl", 0, 0o755),
		dir("etc/ssl/certs", 0, 0o755),
		file(CertFile[1:], 0o644, certs),
		dir("home", 0, 0o755),
		dir("home/nonroot", User, 0o700),
		dir("tmp", 0, 0o1777),
		dir("usr", 0, 0o755),
		dir("usr/local", 0, 0o755),
		dir(BinDir[1:], 0, 0o755),
		file(path.Join(BinDir[1:], name), 0o755, bin),
		tw.Close(),
	}
	for _, err := range steps {
		if err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}
