package config

import (
	"reflect"
	"strings"
	"testing"
)

// A probe with no address set asks where an ops endpoint with no address set
// listens.
func TestProbeDefaultIsTheOpsDefault(t *testing.T) {
	field, _ := reflect.TypeFor[Ops]().FieldByName("Addr")
	if tag := field.Tag.Get("conf"); !strings.HasPrefix(tag, "default:"+defaultOpsAddr+",") {
		t.Fatalf("Ops.Addr's tag %q does not default to defaultOpsAddr %s", tag, defaultOpsAddr)
	}
}
