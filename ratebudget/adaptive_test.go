package ratebudget

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// report sends n answers of one outcome through b at once (mode 0).
func reportN(t *testing.T, b *Budget, p Permit, r Result, n int) {
	t.Helper()
	for range n {
		b.mu.Lock()
		b.lastFlush = time.Time{} // every report is sent at once
		b.mu.Unlock()
		if _, err := b.Report(context.Background(), p, r); err != nil {
			t.Fatalf("Report: %v", err)
		}
	}
}

// reportUntilDecided sends b's answers one every 20 ms of the server's
// clock, out(i) the i-th, until the fleet's rate changes or n are in, and
// returns the rate events and the state after.
func reportUntilDecided(t *testing.T, m *miniredis.Miniredis, c *redis.Client, b *Budget, n int, out func(i int) Result) ([]string, State) {
	t.Helper()
	var events []string
	b.obs.RateChanged = func(rate float64, ev string) { events = append(events, ev) }
	for i := range n {
		m.SetTime(t0.Add(time.Duration(i) * 20 * time.Millisecond))
		reportN(t, b, Permit{}, out(i), 1)
		if len(events) > 0 {
			break
		}
	}
	st, err := Inspect(context.Background(), c, DefaultKey)
	if err != nil {
		t.Fatal(err)
	}
	return events, st
}

// The breaker opens on broad failures, refuses bookings while open, lets
// one probe through when the interval ends, and closes on its success.
func TestBreakerOpensProbesAndCloses(t *testing.T) {
	m, c := frozen(t)
	cfg := Config{Limit: 100, Breaker: BreakerConfig{Enabled: true}}
	b := mustNew(t, c, cfg)
	other := mustNew(t, client(t, m.Addr()), cfg)
	ctx := context.Background()
	var events []string
	b.obs.BreakerChanged = func(to BreakerState, ev string) { events = append(events, ev) }

	reportN(t, b, Permit{}, Result{Outcome: Accepted}, 10)
	reportN(t, b, Permit{}, Result{Outcome: Failed}, 9)
	if r := reserve(t, b); !r.Booked || r.Fleet.Breaker != BreakerClosed {
		t.Fatalf("9 failures of 19 opened the breaker: %+v", r)
	}
	reportN(t, b, Permit{}, Result{Outcome: Failed}, 1)
	r := reserve(t, other)
	if r.Booked || r.Reason != ReasonBreaker || r.Delay != DefaultOpenInterval {
		t.Fatalf("after 10 failures of 20, another process booked %+v; want refused for %v (breaker)", r, DefaultOpenInterval)
	}
	if _, err := other.Wait(ctx); err == nil {
		t.Fatal("Wait succeeded with the breaker open")
	} else if de, ok := IsDelay(err); !ok || de.Reason != ReasonBreaker {
		t.Fatalf("Wait = %v, want a breaker DelayError", err)
	}

	m.SetTime(t0.Add(DefaultOpenInterval))
	probe := reserve(t, other)
	if !probe.Booked || !probe.Probe || probe.Fleet.Breaker != BreakerHalfOpen {
		t.Fatalf("at the end of the open interval: %+v, want the probe", probe)
	}
	if r := reserve(t, b); r.Booked || r.Reason != ReasonBreaker {
		t.Fatalf("a second caller got %+v while the probe is out", r)
	}
	reportN(t, other, Permit{Probe: true}, Result{Outcome: Accepted}, 1)
	if r := reserve(t, b); !r.Booked || r.Fleet.Breaker != BreakerClosed {
		t.Fatalf("after the probe's success: %+v, want closed", r)
	}
	if len(events) == 0 || events[0] != "opened" {
		t.Errorf("transitions seen by the process that tripped it: %v", events)
	}
}

// A probe whose holder died (a SIGKILLed worker never reports) lapses after
// one open interval, and a failed probe opens the breaker again.
func TestBreakerProbeLapsesAndReopens(t *testing.T) {
	m, c := frozen(t)
	cfg := Config{Limit: 100, Breaker: BreakerConfig{Enabled: true, MinCalls: 4}}
	dead, alive := mustNew(t, c, cfg), mustNew(t, client(t, m.Addr()), cfg)
	reportN(t, alive, Permit{}, Result{Outcome: Failed}, 4)
	now := t0.Add(DefaultOpenInterval)
	m.SetTime(now)
	if r := reserve(t, dead); !r.Probe {
		t.Fatalf("no probe: %+v", r)
	}
	// dead never reports.
	m.SetTime(now.Add(DefaultOpenInterval - time.Millisecond))
	if r := reserve(t, alive); r.Booked {
		t.Fatalf("second probe granted before the first lapsed: %+v", r)
	}
	m.SetTime(now.Add(DefaultOpenInterval))
	r := reserve(t, alive)
	if !r.Probe {
		t.Fatalf("the dead worker's probe did not lapse within one open interval: %+v", r)
	}
	reportN(t, alive, Permit{Probe: true}, Result{Outcome: Failed}, 1)
	if r := reserve(t, alive); r.Booked || r.Reason != ReasonBreaker || r.Fleet.Breaker != BreakerOpen {
		t.Fatalf("after a failed probe: %+v, want open again", r)
	}
}

// 5% failures never open the breaker; 429s and answers about one
// organisation never count as failures.
func TestBreakerIgnoresScatteredFailures(t *testing.T) {
	_, c := frozen(t)
	b := mustNew(t, c, Config{Limit: 100, Breaker: BreakerConfig{Enabled: true}})
	for i := range 400 {
		r := Result{Outcome: Accepted}
		switch {
		case i%20 == 0:
			r.Outcome = Failed
		case i%3 == 0:
			r.Outcome = RateLimited
		}
		reportN(t, b, Permit{}, r, 1)
	}
	if r := reserve(t, b); r.Fleet.Breaker != BreakerClosed {
		t.Fatalf("breaker %s after 5%% failures", r.Fleet.Breaker)
	}
}

// 429s that show the fleet far above the API's limit cut the rate to just
// under what the API accepted; isolated ones change nothing; the rate never
// leaves [floor, ceiling].
func TestAdaptiveCutsToWhatTheAPIAccepts(t *testing.T) {
	m, c := frozen(t)
	b := mustNew(t, c, Config{Limit: 50, Adaptive: AdaptiveConfig{Enabled: true}})
	if r := reserve(t, b); r.Fleet.Rate != 50 {
		t.Fatalf("fresh rate %v, want the ceiling", r.Fleet.Rate)
	}
	// One second at 50 calls against a limit of 10: 10 accepted, 40 refused.
	events, st := reportUntilDecided(t, m, c, b, 50, func(i int) Result {
		if i%5 == 0 {
			return Result{Outcome: Accepted}
		}
		return Result{Outcome: RateLimited, RetryAfter: 100 * time.Millisecond}
	})
	if len(events) != 1 || events[0] != "cut" || st.Rate < 0.5 || st.Rate > 13 {
		t.Fatalf("events %v, rate %v after 80%% 429s at 50/s; want one cut to about 10/s (within what 8 answers tell)", events, st.Rate)
	}
	if st.Hold <= 0 {
		t.Fatalf("no hold after the cut: %+v", st)
	}

	// A fresh fleet at its ceiling: 2% scattered 429s change nothing.
	m2, c2 := frozen(t)
	b2 := mustNew(t, c2, Config{Limit: 100, Adaptive: AdaptiveConfig{Enabled: true}})
	b2.obs.RateChanged = func(rate float64, ev string) { t.Errorf("rate changed (%s) to %v on 2%% scattered 429s", ev, rate) }
	for i := range 1000 {
		m2.SetTime(t0.Add(time.Duration(i) * 10 * time.Millisecond))
		out := Result{Outcome: Accepted}
		if i%50 == 7 {
			out = Result{Outcome: RateLimited, RetryAfter: time.Second}
		}
		reportN(t, b2, Permit{}, out, 1)
	}
	if r := reserve(t, b2); r.Fleet.Rate != 100 {
		t.Fatalf("rate %v after scattered 429s, want the ceiling", r.Fleet.Rate)
	}
}

// A window in which the API accepted nothing measures nothing: four 429s
// in a row, which a 20% scatter of them makes now and then at 100 calls a
// second, cut a fleet straight to its floor (1 call/s) and it never came
// back (TestAdaptiveRandomScatterKeepsTheRate, SIM_SEED=111: 1.7 calls/s
// accepted of 80). Such a cut goes to a fifth of the rate: far enough for
// a limit that fell fivefold, and the next window measures the rest.
func TestAdaptiveCutWithoutAcceptsKeepsAFifth(t *testing.T) {
	m, c := frozen(t)
	b := mustNew(t, c, Config{Limit: 100, Adaptive: AdaptiveConfig{Enabled: true}})
	events, st := reportUntilDecided(t, m, c, b, 8, func(int) Result {
		return Result{Outcome: RateLimited, RetryAfter: time.Second}
	})
	if len(events) != 1 || events[0] != "cut" || st.Rate < 18 || st.Rate > 20 {
		t.Fatalf("events %v, rate %v after only 429s at 100/s; want one cut to 0.95 of a fifth (19/s)", events, st.Rate)
	}
}

// A stated policy sets the rate directly (and a remaining of 0 beside it
// changes nothing: a limiter without a burst says so after every call); a
// window spent for more than a second pauses the fleet until it resets; a
// policy above the ceiling leaves the ceiling.
func TestAdaptiveObeysRateLimitHeaders(t *testing.T) {
	_, c := frozen(t)
	b := mustNew(t, c, Config{Limit: 50, Adaptive: AdaptiveConfig{Enabled: true}})
	reportN(t, b, Permit{}, Result{Outcome: Accepted, Headers: &Headers{Rate: 20, Remaining: 0, Reset: 800 * time.Millisecond}}, 1)
	if r := reserve(t, b); r.Fleet.Rate != 19.4 || r.Reason != ReasonBudget {
		t.Fatalf("after a policy of 20/s: %+v, want 0.97 of it and no cool-down", r)
	}
	reportN(t, b, Permit{}, Result{Outcome: Accepted, Headers: &Headers{Remaining: 0, Reset: 800 * time.Millisecond}}, 1)
	if r := reserve(t, b); r.Reason != ReasonBudget {
		t.Fatalf("a window that resets within the second paused the fleet: %+v", r)
	}
	reportN(t, b, Permit{}, Result{Outcome: Accepted, Headers: &Headers{Remaining: 0, Reset: 3 * time.Second}}, 1)
	if r := reserve(t, b); r.Reason != ReasonCooldown || r.Delay < 3*time.Second-time.Millisecond {
		t.Fatalf("after remaining 0, reset 3s: %+v, want a cool-down of 3 s", r)
	}
	reportN(t, b, Permit{}, Result{Outcome: Accepted, Headers: &Headers{Rate: 500, Remaining: -1}}, 1)
	if r := reserve(t, b); r.Fleet.Rate != 50 {
		t.Fatalf("rate %v after a policy above the ceiling, want the ceiling 50", r.Fleet.Rate)
	}
}

// ClearCoolDown ends a cool-down (a Retry-After of a day capped to
// MaxCoolDown) and can close the breaker.
func TestClearCoolDown(t *testing.T) {
	_, c := frozen(t)
	b := mustNew(t, c, Config{Limit: 10, Breaker: BreakerConfig{Enabled: true, MinCalls: 2}})
	ctx := context.Background()
	if err := b.CoolDown(ctx, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	reportN(t, b, Permit{}, Result{Outcome: Failed}, 2)
	left, err := ClearCoolDown(ctx, c, DefaultKey, true)
	if err != nil || left != DefaultMaxCoolDown {
		t.Fatalf("ClearCoolDown = %v, %v; want the capped %v left", left, err, DefaultMaxCoolDown)
	}
	st, err := Inspect(ctx, c, DefaultKey)
	if err != nil || st.CoolDown != 0 || st.Breaker != BreakerClosed {
		t.Fatalf("after clearing: %+v, %v", st, err)
	}
	if r := reserve(t, b); !r.Booked {
		t.Fatalf("booking after clearing: %+v", r)
	}
}

// A steady 10% scatter of 429s (not a limit: the share does not fall
// when the rate does) costs some of the rate, not a slide to the floor:
// the probes keep finding that the API accepts more.
func TestAdaptiveScatterDoesNotSinkToTheFloor(t *testing.T) {
	m, c := frozen(t)
	b := mustNew(t, c, Config{Limit: 100, Adaptive: AdaptiveConfig{Enabled: true}})
	lowest := 100.0
	for i := range 3000 {
		m.SetTime(t0.Add(time.Duration(i) * 10 * time.Millisecond))
		out := Result{Outcome: Accepted}
		if i%10 == 3 {
			out = Result{Outcome: RateLimited}
		}
		reportN(t, b, Permit{}, out, 1)
		if i > 1000 {
			st, err := Inspect(context.Background(), c, DefaultKey)
			if err != nil {
				t.Fatal(err)
			}
			lowest = min(lowest, st.Rate)
		}
	}
	if lowest < 60 {
		t.Fatalf("the rate fell to %v of a ceiling of 100 under a 10%% scatter of 429s; want it to stay above 60", lowest)
	}
	t.Logf("lowest rate after the first 10 s: %v", lowest)
}

// A 429 with Retry-After: 99999999 from one fleet's API pauses that fleet
// only (for MaxCoolDown): a fleet serving another queue on the same Redis
// books at once.
func TestKeyForQueueSeparatesFleets(t *testing.T) {
	_, c := frozen(t)
	hostile := mustNew(t, c, Config{Limit: 10, Key: KeyForQueue("hostile")})
	imports := mustNew(t, c, Config{Limit: 10, Key: KeyForQueue("imports")})
	if err := hostile.CoolDown(context.Background(), 99999999*time.Second); err != nil {
		t.Fatal(err)
	}
	if r := reserve(t, hostile); r.Booked || r.Reason != ReasonCooldown || r.Delay > DefaultMaxCoolDown {
		t.Fatalf("the fleet that got the 429: %+v, want refused for at most %v", r, DefaultMaxCoolDown)
	}
	if r := reserve(t, imports); !r.Booked || r.Delay != 0 || r.Reason != ReasonBudget {
		t.Fatalf("the other queue's fleet: %+v, want a slot at once", r)
	}
}

// FailureVerdict: a failure among answers that were mostly accepted was
// the call's own; one that the breaker opened with, or that came while
// failures dominate the window (below MinCalls), was the API's.
func TestFailureVerdict(t *testing.T) {
	ctx := context.Background()
	virtual := func(b *Budget) {
		now := t0
		b.now = func() time.Time { return now }
		b.sleep = func(_ context.Context, d time.Duration) error { now = now.Add(d); return nil }
	}
	m, c := frozen(t)
	cfg := Config{Limit: 100, Breaker: BreakerConfig{Enabled: true}}
	b, other := mustNew(t, c, cfg), mustNew(t, client(t, m.Addr()), cfg)
	virtual(b)
	reportN(t, b, Permit{}, Result{Outcome: Accepted}, 10)
	reportN(t, b, Permit{}, Result{Outcome: Failed}, 1)
	if broad, err := b.FailureVerdict(ctx); err != nil || broad {
		t.Fatalf("one failure after 10 answers accepted: broad %v, %v; want its own", broad, err)
	}
	// Failures now dominate: 7 of 18, then 9 of 20 ... and another
	// process's failures open the breaker.
	reportN(t, other, Permit{}, Result{Outcome: Failed}, 6)
	if broad, err := b.FailureVerdict(ctx); err != nil || broad {
		t.Fatalf("7 failures of 17: broad %v, %v; want not yet", broad, err)
	}
	reportN(t, other, Permit{}, Result{Outcome: Failed}, 4)
	if broad, err := b.FailureVerdict(ctx); err != nil || !broad {
		t.Fatalf("after the breaker opened: broad %v, %v; want broad", broad, err)
	}

	_, c2 := frozen(t)
	b2 := mustNew(t, c2, cfg)
	virtual(b2)
	reportN(t, b2, Permit{}, Result{Outcome: Accepted}, 4)
	reportN(t, b2, Permit{}, Result{Outcome: Failed}, 8)
	if broad, err := b2.FailureVerdict(ctx); err != nil || !broad {
		t.Fatalf("8 failures of 12 (breaker closed, under MinCalls): broad %v, %v; want broad", broad, err)
	}
	if s := b2.Fleet().Breaker; s != BreakerClosed {
		t.Fatalf("breaker %s, want closed (the verdict is not the breaker's)", s)
	}

	_, c3 := frozen(t)
	off := mustNew(t, c3, Config{Limit: 100})
	if broad, err := off.FailureVerdict(ctx); err != nil || broad {
		t.Fatalf("without a breaker: %v, %v", broad, err)
	}
}

// FailureVerdict settles in the process, without a script call, once this
// process's own next answers show the API accepting calls.
func TestFailureVerdictSettledByOwnAnswers(t *testing.T) {
	m, c := frozen(t)
	b := mustNew(t, c, Config{Limit: 100, Breaker: BreakerConfig{Enabled: true}})
	now := t0
	b.now = func() time.Time { return now }
	ctx := context.Background()
	reportN(t, b, Permit{}, Result{Outcome: Failed}, 1)
	calls := m.CommandCount()
	b.sleep = func(_ context.Context, d time.Duration) error {
		now = now.Add(d)
		b.mu.Lock()
		b.lastFlush = now // what follows rides with bookings
		b.mu.Unlock()
		if _, err := b.Report(ctx, Permit{}, Result{Outcome: Accepted}); err != nil {
			t.Fatal(err)
		}
		return nil
	}
	broad, err := b.FailureVerdict(ctx)
	if err != nil || broad {
		t.Fatalf("FailureVerdict = %v, %v; want false", broad, err)
	}
	if got := m.CommandCount() - calls; got != 0 {
		t.Fatalf("%d Redis commands for a verdict this process's answers settled", got)
	}
	if waited := now.Sub(t0); waited >= minVerdictWait {
		t.Fatalf("waited %v, want it settled before the full wait", waited)
	}
}

// The late tolerance grows below the ceiling (the lateness adds calls in
// proportion to the rate), up to a quarter of the interval, and never
// below LateTolerance.
func TestLateToleranceScalesWithTheRate(t *testing.T) {
	_, c := frozen(t)
	b := mustNew(t, c, Config{Limit: 50, Adaptive: AdaptiveConfig{Enabled: true}})
	for _, tc := range []struct {
		rate float64
		want time.Duration
	}{
		{50, DefaultLateTolerance}, {0, DefaultLateTolerance}, {100, DefaultLateTolerance},
		{25, DefaultLateTolerance}, {20, 12500 * time.Microsecond}, {40, DefaultLateTolerance}, {10, 25 * time.Millisecond}, {1, 250 * time.Millisecond},
	} {
		if got := b.lateTolerance(tc.rate); got != tc.want {
			t.Errorf("lateTolerance(%v) = %v, want %v", tc.rate, got, tc.want)
		}
	}
}

// A caller holding a slot when its own process hears that the fleet's
// rate fell steeply (the first cut from the ceiling) drops the slot, which
// was booked at a rate the API refuses, and books again at the new rate; a
// fall made by another process reaches it only at its next booking, so it
// keeps its slot; and a slow probe's fall (to 0.9 of the limit from 1.15)
// keeps it too.
func TestAdaptiveSteepFallDropsSlotsBookedBefore(t *testing.T) {
	for _, tc := range []struct {
		name      string
		otherProc bool
		// The answers the cut reads: accepted and refused, 100 ms into
		// the window (steep: 429s, most of them), or 400 ms (shallow: a
		// quarter of them).
		accepted, refused int
		at                time.Duration
		wantDrops         int
	}{
		{"same process, steep", false, 1, 4, 100 * time.Millisecond, 1},
		{"other process", true, 1, 4, 100 * time.Millisecond, 0},
		{"same process, shallow", false, 15, 5, 400 * time.Millisecond, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, c := frozen(t)
			cfg := Config{Limit: 50, Burst: 1, Adaptive: AdaptiveConfig{Enabled: true}}
			b := mustNew(t, c, cfg)
			cutBy := b
			if tc.otherProc {
				cutBy = mustNew(t, client(t, m.Addr()), cfg)
			}
			drops := 0
			b.obs.Dropped = func(reason string) {
				if reason != DropLowered {
					t.Errorf("dropped for %q, want %q", reason, DropLowered)
				}
				drops++
			}
			var rates []float64
			cutBy.obs.RateChanged = func(rate float64, ev string) { rates = append(rates, rate) }
			for range 5 { // the next free slot is 100 ms away
				reserve(t, b)
			}
			clk := &fakeClock{now: time.Unix(0, 0)}
			b.now = clk.Now
			sleeps := 0
			b.sleep = func(ctx context.Context, d time.Duration) error {
				if sleeps++; sleeps == 1 {
					m.SetTime(t0.Add(tc.at))
					reportN(t, cutBy, Permit{}, Result{Outcome: Accepted}, tc.accepted)
					reportN(t, cutBy, Permit{}, Result{Outcome: RateLimited}, tc.refused)
				}
				return clk.Sleep(ctx, d)
			}
			if _, err := b.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
			if len(rates) != 1 {
				t.Fatalf("rate changes %v, want one cut", rates)
			}
			t.Logf("cut to %.1f calls/s", rates[0])
			if drops != tc.wantDrops {
				t.Errorf("%d slots dropped after a cut from 50 to %.1f, want %d", drops, rates[0], tc.wantDrops)
			}
			if tc.wantDrops > 0 && sleeps < 2 {
				t.Errorf("the caller slept %d times: it did not book again after the drop", sleeps)
			}
		})
	}
}
