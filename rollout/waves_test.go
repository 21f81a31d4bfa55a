package rollout_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/versori/import-worker/rollout"
)

func TestParseWaves(t *testing.T) {
	for _, tc := range []struct {
		in    string
		n     int
		want  []int
		wrong string // part of the error, "" for none
	}{
		{in: "10,10%,100%", n: 2000, want: []int{10, 200, 2000}},
		{in: "1%,10%,100%", n: 3000, want: []int{30, 300, 3000}},
		{in: "10,10%", n: 2000, want: []int{10, 200, 2000}},
		{in: "5", n: 50, want: []int{5, 50}},
		{in: " 1% , 2% ", n: 50, want: []int{1, 50}},
		{in: "100%", n: 7, want: []int{7}},
		{in: "7", n: 7, want: []int{7}},
		{in: "", wrong: "empty list"},
		{in: " ", wrong: "empty list"},
		{in: "0", wrong: "at least one organisation"},
		{in: "0%", wrong: "at least one organisation"},
		{in: "-5", wrong: "at least one organisation"},
		{in: "10,5", wrong: "not above wave 1"},
		{in: "10%,5%", wrong: "not above wave 1"},
		{in: "10,10", wrong: "not above wave 1"},
		{in: "150%", wrong: "above 100%"},
		{in: "100%,50", wrong: "comes after 100%"},
		{in: "10,,20", wrong: "empty entry"},
		{in: "ten", wrong: "not a count or a percentage"},
		{in: "x%", wrong: "not a percentage"},
		{in: "NaN%", wrong: "not a percentage"},
		{in: "10,5000", n: 2000, wrong: "above the list's 2000"},
		{in: "50,10%", n: 100, wrong: "not above wave 1"},
	} {
		waves, err := rollout.ParseWaves(tc.in)
		var bounds []int
		if err == nil && tc.n > 0 {
			bounds, err = rollout.ResolveWaves(waves, tc.n)
		}
		switch {
		case tc.wrong == "" && err != nil:
			t.Errorf("%q of %d: %v", tc.in, tc.n, err)
		case tc.wrong != "" && (err == nil || !strings.Contains(err.Error(), tc.wrong)):
			t.Errorf("%q of %d: error %v, want one saying %q", tc.in, tc.n, err, tc.wrong)
		case tc.wrong == "" && !slices.Equal(bounds, tc.want):
			t.Errorf("%q of %d: bounds %v, want %v", tc.in, tc.n, bounds, tc.want)
		}
	}
}

func TestRatioBakeWeight(t *testing.T) {
	for _, s := range []string{"-0.1", "1.5", "x", "NaN", ""} {
		if _, err := rollout.ParseRatio(s); err == nil {
			t.Errorf("ratio %q accepted", s)
		}
	}
	for _, s := range []string{"0", "0.05", "1"} {
		if _, err := rollout.ParseRatio(s); err != nil {
			t.Errorf("ratio %q: %v", s, err)
		}
	}
	if rollout.CheckBake(-1) == nil {
		t.Error("negative bake accepted")
	}
	for _, w := range []float64{0, -1, 1001} {
		if rollout.CheckWeight(w) == nil {
			t.Errorf("weight %v accepted", w)
		}
	}
}

// FuzzParseWaves: no input panics; what parses prints back to the same
// waves, and resolves to strictly increasing bounds ending at the list's
// size.
func FuzzParseWaves(f *testing.F) {
	for _, s := range []string{"10,10%,100%", "1%,10%", "5", "0", "10,5", "150%", "1e3", "0.5%,1%", ",", "100%,1"} {
		f.Add(s, 2000)
	}
	f.Fuzz(func(t *testing.T, s string, n int) {
		waves, err := rollout.ParseWaves(s)
		if err != nil {
			return
		}
		parts := make([]string, len(waves))
		for i, w := range waves {
			parts[i] = w.String()
		}
		again, err := rollout.ParseWaves(strings.Join(parts, ","))
		if err != nil || !slices.Equal(again, waves) {
			t.Fatalf("%q parsed to %v, which reparses to %v, %v", s, waves, again, err)
		}
		n = n%100000 + 1
		if n <= 0 {
			n += 100000
		}
		bounds, err := rollout.ResolveWaves(waves, n)
		if err != nil {
			return
		}
		if len(bounds) == 0 || bounds[len(bounds)-1] != n {
			t.Fatalf("%q of %d: bounds %v do not end at %d", s, n, bounds, n)
		}
		for i := 1; i < len(bounds); i++ {
			if bounds[i] <= bounds[i-1] {
				t.Fatalf("%q of %d: bounds %v not increasing", s, n, bounds)
			}
		}
	})
}
