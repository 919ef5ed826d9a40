package launcher_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/scale-dev/scale/internal/launcher"
	"github.com/scale-dev/scale/internal/testenv"
)

// TestNetworkNamespaces: a process started with NewNetNS is in a namespace
// of its own, and one started with NetNS is in that namespace, not ours.
func TestNetworkNamespaces(t *testing.T) {
	testenv.Root(t)
	dir := t.TempDir()
	holder, err := launcher.Start(launcher.Spec{Name: "holder", Binary: "sleep", Args: []string{"30"},
		LogPath: filepath.Join(dir, "holder.log"), DieWithParent: true, NewNetNS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(holder.Kill)
	nsPath := func(pid string) string {
		l, err := os.Readlink("/proc/" + pid + "/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	ours, theirs := nsPath("self"), nsPath(strconv.Itoa(holder.Pid()))
	if ours == theirs {
		t.Fatalf("NewNetNS: the holder is in our namespace %s", ours)
	}
	for _, tc := range []struct {
		netns, want string
	}{
		{"", ours},
		{"/proc/" + strconv.Itoa(holder.Pid()) + "/ns/net", theirs},
	} {
		p, err := launcher.Start(launcher.Spec{Name: "readlink", Binary: "readlink", Args: []string{"/proc/self/ns/net"},
			LogPath: filepath.Join(dir, "readlink.log"), NetNS: tc.netns})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(); err != nil {
			t.Fatal(err, p.Log())
		}
		if got := strings.TrimSpace(p.Log()); got != tc.want {
			t.Errorf("NetNS %q: started in %s, want %s", tc.netns, got, tc.want)
		}
	}
	if got := nsPath("self"); got != ours {
		t.Errorf("after starting processes elsewhere this process is in %s, was %s", got, ours)
	}
}
