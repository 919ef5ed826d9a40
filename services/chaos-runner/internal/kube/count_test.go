package kube

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestCount(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		mode    string
		value   float64
		n       int
		want    int
		wantErr bool
	}{
		{mode: One, n: 5, want: 1},
		{mode: "", n: 5, want: 1},
		{mode: All, n: 5, want: 5},
		{mode: Fixed, value: 2, n: 5, want: 2},
		{mode: Fixed, value: 9, n: 5, want: 5},
		{mode: Fixed, value: 0, n: 5, wantErr: true},
		{mode: FixedPercent, value: 10, n: 5, want: 1}, // rounded up, at least 1 (Chaos Mesh floors to 0)
		{mode: FixedPercent, value: 50, n: 5, want: 3},
		{mode: FixedPercent, value: 100, n: 5, want: 5},
		{mode: FixedPercent, value: 150, n: 5, wantErr: true},
		{mode: "half", n: 5, wantErr: true},
		{mode: All, n: 0, want: 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %g of %d", tt.mode, tt.value, tt.n), func(t *testing.T) {
			got, err := Count(tt.mode, tt.value, tt.n, r)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("Count = %d, %v; want %d (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
	for range 200 {
		got, err := Count(RandomMaxPercent, 60, 10, r)
		if err != nil || got < 1 || got > 6 {
			t.Fatalf("random-max-percent 60 of 10 = %d, %v; want 1..6", got, err)
		}
	}
}

// Picks are without replacement and the same for the same seed.
func TestPick(t *testing.T) {
	var pods []corev1.Pod
	for i := range 10 {
		pods = append(pods, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("extract-%d", i)}})
	}
	names := func(seed uint64) []string {
		var out []string
		for _, p := range Pick(pods, 6, rand.New(rand.NewPCG(seed, 0))) {
			out = append(out, p.Name)
		}
		return out
	}
	a, b := names(7), names(7)
	if !slices.Equal(a, b) {
		t.Fatalf("seed 7 picked %v then %v", a, b)
	}
	sorted := slices.Clone(a)
	slices.Sort(sorted)
	if len(slices.Compact(sorted)) != 6 {
		t.Fatalf("picked %v: a pod twice", a)
	}
	if slices.Equal(a, names(8)) {
		t.Errorf("seeds 7 and 8 picked the same %v", a)
	}
}
