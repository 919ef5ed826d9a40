// Package buildinfo tells which build of Scale is running: the version set at
// link time (make build passes -ldflags "-X .../buildinfo.version=$(git
// describe)"), else the VCS revision Go recorded, else "dev".
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// version is set with -ldflags "-X github.com/scale-dev/scale/internal/buildinfo.version=...".
var version string

// Version is the build's version.
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = "-dirty"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			return rev + modified
		}
	}
	return "dev"
}

// GoVersion is the Go release the binary was built with.
func GoVersion() string { return runtime.Version() }
