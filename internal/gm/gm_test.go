package gm

import "testing"

func TestCatalog(t *testing.T) {
	seen := map[string]bool{}
	for p, name := range Programs {
		if name == "" || seen[name] {
			t.Errorf("program %d: empty or repeated name %q", p, name)
		}
		seen[name] = true
	}
	tests := []struct {
		program      uint8
		name, family string
	}{
		{0, "Acoustic Grand Piano", "Piano"},
		{25, "Acoustic Guitar (steel)", "Guitar"},
		{33, "Electric Bass (finger)", "Bass"},
		{73, "Flute", "Pipe"},
		{127, "Gunshot", "Sound Effects"},
	}
	for _, tt := range tests {
		if got := Name(tt.program, false); got != tt.name {
			t.Errorf("Name(%d) = %q, want %q", tt.program, got, tt.name)
		}
		if got := Family(tt.program); got != tt.family {
			t.Errorf("Family(%d) = %q, want %q", tt.program, got, tt.family)
		}
	}
	if Name(5, true) != DrumsName {
		t.Error("drums are named Drums whatever the kit program")
	}
}
