package versoritest

import (
	"math"
	"testing"
	"time"
)

func TestLatencyDistributions(t *testing.T) {
	s := NewUnstartedServer(WithSeed(1))
	r := randSource{s}
	const n = 20000
	tests := []struct {
		l        Latency
		mean, sd float64 // expected, in ms
		min, max float64
	}{
		{Latency{Mean: 20 * time.Millisecond}, 20, 0, 20, 20},
		{Latency{Distribution: Uniform, Mean: 20 * time.Millisecond, Jitter: 10 * time.Millisecond}, 20, 10 / math.Sqrt(3), 10, 30},
		{Latency{Distribution: Exponential, Mean: 20 * time.Millisecond}, 20, 20, 0, math.Inf(1)},
		{Latency{Distribution: Normal, Mean: 20 * time.Millisecond, Jitter: 5 * time.Millisecond}, 20, 5, 0, math.Inf(1)},
		{Latency{Distribution: Exponential, Mean: 20 * time.Millisecond, Max: 25 * time.Millisecond}, -1, -1, 0, 25},
		{Latency{Distribution: Normal, Mean: time.Millisecond, Jitter: 10 * time.Millisecond}, -1, -1, 0, math.Inf(1)},
	}
	for _, tc := range tests {
		var sum, sq float64
		lo, hi := math.Inf(1), math.Inf(-1)
		for range n {
			d := float64(tc.l.sample(r)) / float64(time.Millisecond)
			sum += d
			sq += d * d
			lo, hi = math.Min(lo, d), math.Max(hi, d)
		}
		mean := sum / n
		sd := math.Sqrt(sq/n - mean*mean)
		if lo < tc.min || hi > tc.max {
			t.Errorf("%+v: samples in [%.2f, %.2f], want within [%v, %v]", tc.l, lo, hi, tc.min, tc.max)
		}
		if tc.mean >= 0 && math.Abs(mean-tc.mean) > 0.05*tc.mean {
			t.Errorf("%+v: mean %.2fms, want %.2f", tc.l, mean, tc.mean)
		}
		if tc.sd >= 0 && math.Abs(sd-tc.sd) > 0.05*tc.sd+0.01 {
			t.Errorf("%+v: sd %.2fms, want %.2f", tc.l, sd, tc.sd)
		}
	}
	if !(Latency{}).zero() || (Latency{Mean: 1}).zero() {
		t.Error("zero() is wrong")
	}
}

func TestWorstWindow(t *testing.T) {
	s := int64(time.Second)
	epoch := time.Unix(1_700_000_000, 0)
	tests := []struct {
		times []int64
		want  int
	}{
		{nil, 0},
		{[]int64{5}, 1},
		{[]int64{0, s - 1}, 2},
		{[]int64{0, s}, 1}, // half-open window
		{[]int64{0, 1, 2, s + 1, s + 2, s + 3, s + 4}, 4},
		{[]int64{0, s / 2, s, 3 * s / 2, 2 * s}, 2},
	}
	for _, tc := range tests {
		times := make([]time.Time, len(tc.times))
		for i, ns := range tc.times {
			times[i] = epoch.Add(time.Duration(ns))
		}
		if got, _ := WorstWindow(times, time.Second); got != tc.want {
			t.Errorf("WorstWindow(%v) = %d, want %d", tc.times, got, tc.want)
		}
	}
}

func TestLimiterGCRA(t *testing.T) {
	var l limiter
	l.set(RateLimit{PerSecond: 10, Burst: 3})
	ms := int64(time.Millisecond)
	// Three at once pass, the fourth violates and waits one interval.
	for i := range 3 {
		if l.arrive(0).violated {
			t.Fatalf("call %d of the burst violated", i)
		}
	}
	v := l.arrive(0)
	if !v.violated || !v.refuse || v.wait != 100*time.Millisecond {
		t.Fatalf("fourth call: %+v", v)
	}
	// One interval later exactly one more conforms.
	if l.arrive(100 * ms).violated {
		t.Fatal("call after one interval violated")
	}
	if !l.arrive(100 * ms).violated {
		t.Fatal("second call after one interval conformed")
	}
	// A steady stream at the rate never violates.
	for i := range 100 {
		if l.arrive(int64(i+2) * 100 * ms * 2).violated {
			t.Fatalf("steady call %d violated", i)
		}
	}
	l.set(RateLimit{PerSecond: 10, ObserveOnly: true})
	l.arrive(0)
	if v := l.arrive(0); !v.violated || v.refuse {
		t.Fatalf("observe only: %+v", v)
	}
	l.set(RateLimit{})
	if l.arrive(0).violated {
		t.Fatal("a disabled limiter counted a violation")
	}
}

func TestRateTable(t *testing.T) {
	for _, bad := range []map[FaultKind]float64{
		{FaultServerError: 0.7, FaultReset: 0.4},
		{FaultServerError: -0.1},
		{FaultServerError: math.NaN()},
		{FaultServerError: 1.5},
		{"nonsense": 0.1},
	} {
		if _, err := newRateTable(bad); err == nil {
			t.Errorf("newRateTable(%v) accepted", bad)
		}
	}
	rt, err := newRateTable(map[FaultKind]float64{FaultServerError: 0.25, FaultRateLimited: 0.25, FaultReset: 0})
	if err != nil {
		t.Fatal(err)
	}
	// Stable order: FaultKinds order, rate_limited before server_error.
	for u, want := range map[float64]FaultKind{0: FaultRateLimited, 0.2: FaultRateLimited, 0.3: FaultServerError, 0.5: "", 0.99: ""} {
		if got := rt.pick(u); got != want {
			t.Errorf("pick(%v) = %q, want %q", u, got, want)
		}
	}
	if rt, _ := newRateTable(nil); rt.pick(0) != "" {
		t.Error("empty table picked a fault")
	}
}

func TestCallTimesBounded(t *testing.T) {
	s := NewUnstartedServer()
	s.maxTimes = 1000
	now := time.Now()
	for i := range s.maxTimes + 10 {
		s.recordArrival(now.Add(time.Duration(i)))
	}
	times := s.sortedTimes()
	if len(times) > s.maxTimes || len(times) < s.maxTimes/2 {
		t.Fatalf("kept %d arrival times", len(times))
	}
	if last := times[len(times)-1]; last != int64(now.Add(time.Duration(s.maxTimes+9)).Sub(s.epoch)) {
		t.Errorf("the newest arrival was dropped")
	}
}

func TestLimiterSchedule(t *testing.T) {
	var l limiter
	l.set(RateLimit{PerSecond: 100, Burst: 1})
	sec := int64(time.Second)
	l.schedule(10*sec, []RateLimitStep{
		{After: 20 * time.Second, Policy: RateLimit{PerSecond: 50}},
		{After: 5 * time.Second, Policy: RateLimit{PerSecond: 10, Headers: HeadersX}}, // out of order: sorted
	})
	for _, tc := range []struct {
		at   int64
		want float64
	}{{10 * sec, 100}, {14 * sec, 100}, {15 * sec, 10}, {29 * sec, 10}, {30 * sec, 50}, {99 * sec, 50}} {
		if v := l.arrive(tc.at); v.policy.PerSecond != tc.want {
			t.Errorf("at %ds: %v calls/s, want %v", tc.at/sec, v.policy.PerSecond, tc.want)
		}
	}
	// A step at 0 applies at once; an empty schedule keeps the policy.
	l.schedule(100*sec, []RateLimitStep{{Policy: RateLimit{PerSecond: 3}}})
	l.schedule(100*sec, nil)
	if v := l.arrive(200 * sec); v.policy.PerSecond != 3 {
		t.Errorf("after ending the schedule: %v", v.policy.PerSecond)
	}
	// SetRateLimitPolicy ends a schedule.
	l.schedule(200*sec, []RateLimitStep{{After: time.Second, Policy: RateLimit{PerSecond: 7}}})
	l.set(RateLimit{PerSecond: 1})
	if v := l.arrive(300 * sec); v.policy.PerSecond != 1 {
		t.Errorf("a set policy was overridden by an ended schedule: %v", v.policy.PerSecond)
	}
}

func TestLimiterState(t *testing.T) {
	var l limiter
	l.set(RateLimit{PerSecond: 10, Burst: 3})
	ms := int64(time.Millisecond)
	for i, want := range []int{2, 1, 0} {
		if v := l.arrive(0); v.remaining != want || v.reset != time.Duration(i+1)*100*time.Millisecond {
			t.Fatalf("call %d: remaining %d reset %s", i, v.remaining, v.reset)
		}
	}
	if v := l.arrive(50 * ms); !v.refuse || v.remaining != 0 || v.reset != 50*time.Millisecond {
		t.Fatalf("refused call: %+v", v)
	}
	if v := l.arrive(10_000 * ms); v.remaining != 2 || v.reset != 100*time.Millisecond {
		t.Fatalf("after a quiet spell: %+v", v)
	}
}

func TestParseRateLimitSchedule(t *testing.T) {
	base := RateLimit{Burst: 4, Headers: HeadersIETF}
	steps, err := ParseRateLimitSchedule("50@0s, 10@20s,0.5@1m", base)
	if err != nil {
		t.Fatal(err)
	}
	want := []RateLimitStep{
		{0, RateLimit{PerSecond: 50, Burst: 4, Headers: HeadersIETF}},
		{20 * time.Second, RateLimit{PerSecond: 10, Burst: 4, Headers: HeadersIETF}},
		{time.Minute, RateLimit{PerSecond: 0.5, Burst: 4, Headers: HeadersIETF}},
	}
	if len(steps) != len(want) {
		t.Fatalf("steps %+v", steps)
	}
	for i := range want {
		if steps[i] != want[i] {
			t.Errorf("step %d: %+v, want %+v", i, steps[i], want[i])
		}
	}
	for _, bad := range []string{"", ",", "50", "x@1s", "-1@1s", "NaN@1s", "5@-1s", "5@soon", "Inf@0s"} {
		if _, err := ParseRateLimitSchedule(bad, base); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestHeaderStyle(t *testing.T) {
	for _, h := range []HeaderStyle{HeadersNone, HeadersIETF, HeadersX} {
		if got, err := ParseHeaderStyle(h.String()); err != nil || got != h {
			t.Errorf("%s: %v %v", h, got, err)
		}
	}
	if got, err := ParseHeaderStyle(""); err != nil || got != HeadersNone {
		t.Errorf("empty: %v %v", got, err)
	}
	if _, err := ParseHeaderStyle("draft"); err == nil {
		t.Error("unknown style accepted")
	}
	if HeaderStyle(9).String() != "HeaderStyle(9)" {
		t.Error(HeaderStyle(9).String())
	}
}
