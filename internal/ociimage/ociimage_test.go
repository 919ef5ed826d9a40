package ociimage_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/ociimage"
	"github.com/scale-dev/scale/internal/testenv"
)

// TestImageRunsItsEntrypoint builds the API's image twice from one binary
// (the same digest: reproducible), checks what it is made of (a non-root
// user, no shell, the CA certificates), writes and reads it back as a
// docker-loadable tarball, unpacks its filesystem and runs the entrypoint
// from it with --help.
func TestImageRunsItsEntrypoint(t *testing.T) {
	const certs = "/etc/ssl/certs/ca-certificates.crt"
	if _, err := os.Stat(certs); err != nil {
		testenv.Missing(t, "no CA bundle to put in: %v (apt-get install ca-certificates)", err)
	}
	repo, err := launcher.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "api")
	if err := ociimage.StaticBinary(context.Background(), repo, "./services/api/cmd/api", bin, "test"); err != nil {
		t.Fatal(err)
	}
	spec := ociimage.Spec{Name: "api", Binary: bin, Certs: certs, Version: "test", Source: "https://github.com/scale-dev/scale"}
	img, err := ociimage.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ociimage.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("two builds of one binary: %s and %s", d1, d2)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "65532:65532" || len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/usr/local/bin/api" || cfg.OS != "linux" {
		t.Errorf("config %+v", cfg.Config)
	}

	// Through a docker-loadable tarball and back.
	ref, _ := name.NewTag("ghcr.io/scale-dev/scale-api:test")
	tarPath := filepath.Join(dir, "api.tar")
	if err := tarball.WriteToFile(tarPath, ref, img); err != nil {
		t.Fatal(err)
	}
	loaded, err := tarball.ImageFromPath(tarPath, &ref)
	if err != nil {
		t.Fatal(err)
	}
	// The tarball carries a Docker manifest of its own; the configuration
	// and the layer are the built ones.
	c1, _ := img.ConfigName()
	if c, _ := loaded.ConfigName(); c != c1 {
		t.Errorf("read back from the tarball: config %s, built %s", c, c1)
	}
	l1, _ := img.Layers()
	l2, _ := loaded.Layers()
	if len(l1) != 1 || len(l2) != 1 {
		t.Fatalf("%d layers built, %d read back; want 1", len(l1), len(l2))
	}
	built, _ := l1[0].Digest()
	if back, _ := l2[0].Digest(); back != built {
		t.Errorf("layer read back %s, built %s", back, built)
	}

	// The filesystem, unpacked as a container runtime would.
	root := filepath.Join(dir, "rootfs")
	var paths []string
	tr := tar.NewReader(mutate.Extract(loaded))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, h.Name)
		target := filepath.Join(root, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(target, data, os.FileMode(h.Mode)); err != nil {
				t.Fatal(err)
			}
		}
	}
	all := strings.Join(paths, " ")
	for _, want := range []string{"etc/passwd", "etc/ssl/certs/ca-certificates.crt", "usr/local/bin/api"} {
		if !strings.Contains(all, want) {
			t.Errorf("the image has no %s: %s", want, all)
		}
	}
	if strings.Contains(all, "bin/sh") || len(paths) > 20 {
		t.Errorf("the image holds more than the binary, its certificates and its user: %s", all)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if !strings.Contains(string(passwd), "nonroot:x:65532:65532") {
		t.Errorf("/etc/passwd: %s", passwd)
	}
	var stdout bytes.Buffer
	cmd := exec.Command(filepath.Join(root, cfg.Config.Entrypoint[0]), "--help")
	cmd.Env = cfg.Config.Env
	cmd.Stdout, cmd.Stderr = &stdout, &stdout
	if err := cmd.Run(); err != nil {
		t.Fatalf("the entrypoint --help: %v\n%s", err, stdout.String())
	}
	if !strings.Contains(stdout.String(), "SCALE_API_ADDR") {
		t.Errorf("the entrypoint's --help does not describe its settings:\n%s", stdout.String())
	}
}
