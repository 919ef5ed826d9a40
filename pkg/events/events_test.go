package events

import (
	"errors"
	"strings"
	"testing"
)

func intp(i int) *int { return &i }

func TestEncodeDecodeRoundTrip(t *testing.T) {
	in := Extracted{Source: "s3://bucket/a b.mid", SongID: "0123456789abcdef0123456789abcdef", Name: "a b",
		Instruments: []Instrument{{Program: intp(33), Notes: 4}, {Drums: true, Notes: 9}}}
	data, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode[Extracted](data)
	if err != nil {
		t.Fatal(err)
	}
	if out.Version != SchemaVersion || out.Source != in.Source || len(out.Instruments) != 2 || *out.Instruments[0].Program != 33 {
		t.Errorf("round trip gave %+v", out)
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct{ name, data, want string }{
		{"not json", `{`, "invalid event"},
		{"no version", `{"source":"file:///a.mid","size":1}`, "schema version none"},
		{"future version", `{"v":2,"source":"file:///a.mid","size":1}`, "schema version 2"},
		{"future version that does not fit", `{"v":2,"source":"file:///a.mid","size":"big"}`, "schema version 2"},
		{"explicit version 0", `{"v":0,"source":"file:///a.mid","size":1}`, "schema version 0"},
		{"bad source", `{"v":1,"source":"http://x/a.mid","size":1}`, "not an s3:// or file://"},
		{"bad md5", `{"v":1,"source":"s3://b/a.mid","md5":"xyz","size":1}`, "not 32 hex digits"},
		{"negative size", `{"v":1,"source":"s3://b/a.mid","size":-1}`, "negative"},
		{"wrong type", `{"v":1,"source":"s3://b/a.mid","size":"big"}`, "invalid event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode[Discovered]([]byte(tt.data))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want ErrInvalid containing %q", err, tt.want)
			}
		})
	}
	bad := []Extracted{
		{Source: "s3://b/k", SongID: "0123456789abcdef0123456789abcdef", Instruments: []Instrument{{Drums: true, Program: intp(1), Notes: 1}}},
		{Source: "s3://b/k", SongID: "0123456789abcdef0123456789abcdef", Instruments: []Instrument{{Program: intp(128), Notes: 1}}},
		{Source: "s3://b/k", SongID: "0123456789abcdef0123456789abcdef", Instruments: []Instrument{{Program: intp(1), Notes: 0}}},
	}
	for _, e := range bad {
		if _, err := Encode(e); !errors.Is(err, ErrInvalid) {
			t.Errorf("Encode(%+v) error %v, want ErrInvalid", e, err)
		}
	}
	if _, err := Encode(Failed{Source: "file:///x.mid", Attempts: 1}); err == nil {
		t.Error("a failure without a reason must not encode")
	}
}

func TestMsgIDsAreStable(t *testing.T) {
	d := Discovered{Source: "s3://b/k.mid", MD5: "0123456789abcdef0123456789abcdef"}
	again := Discovered{Source: "s3://b/k.mid", MD5: "0123456789abcdef0123456789abcdef", Name: "renamed", Size: 5}
	if d.MsgID() != again.MsgID() || d.MsgID() == (Discovered{Source: "s3://b/other.mid"}).MsgID() {
		t.Error("Msg-Id must depend on source and content only, and differ between sources")
	}
	if (Extracted{Source: "s3://b/k.mid"}).MsgID() == (Failed{Source: "s3://b/k.mid"}).MsgID() {
		t.Error("the outcome Msg-Ids of a file must differ by kind")
	}
}
