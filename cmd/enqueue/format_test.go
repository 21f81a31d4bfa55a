package main

import (
	"math"
	"testing"
	"time"
)

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 7: "7", 999: "999", 1000: "1,000", 100000: "100,000", 1234567: "1,234,567", -1234: "-1,234"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		300 * time.Millisecond:                        "under a second",
		12*time.Second + 400*time.Millisecond:         "12s",
		5*time.Minute + 29*time.Second:                "5m29s",
		3*time.Hour + 10*time.Minute + 40*time.Second: "3h11m0s",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestClassList(t *testing.T) {
	got := classList(map[string]int64{"not_found": 3, "forbidden": 1, "exhausted": 3, "zero": 0})
	if want := "exhausted 3, not_found 3, forbidden 1"; got != want {
		t.Errorf("classList = %q, want %q", got, want)
	}
}

func TestRateMeter(t *testing.T) {
	t0 := time.Unix(0, 0)
	m := newRateMeter(t0, 0)
	if r := m.add(t0.Add(100*time.Millisecond), 50); r != 0 {
		t.Errorf("a read too soon after the last moved the rate to %v", r)
	}
	if r := m.add(t0.Add(time.Second), 100); r != 100 {
		t.Errorf("first rate = %v, want 100", r)
	}
	// A stall pulls the rate down gradually, not to zero at once.
	r := m.add(t0.Add(2*time.Second), 100)
	if r <= 0 || r >= 100 {
		t.Errorf("rate after a stalled second = %v, want between 0 and 100", r)
	}
	// Counters going backwards (a retry moves failed back to pending)
	// never make the rate negative.
	if r := m.add(t0.Add(3*time.Second), 90); r < 0 || math.IsNaN(r) {
		t.Errorf("rate = %v", r)
	}
}

func TestStatusETA(t *testing.T) {
	st := statusResult{Pending: 300}
	st.SetRate(100)
	if st.ETASeconds == nil || *st.ETASeconds != 3 {
		t.Errorf("ETA = %v, want 3 s", st.ETASeconds)
	}
	st.SetRate(0)
	if st.ETASeconds != nil {
		t.Errorf("ETA at rate 0 = %v, want unknown", *st.ETASeconds)
	}
	st = statusResult{Done: true}
	st.SetRate(0)
	if st.ETASeconds == nil || *st.ETASeconds != 0 {
		t.Errorf("ETA of a done rollout = %v, want 0", st.ETASeconds)
	}
}
