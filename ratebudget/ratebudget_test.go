package ratebudget

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// t0 is the frozen Redis clock of the miniredis tests.
var t0 = time.Unix(1_700_000_000, 123_456_000)

// frozen starts a miniredis whose TIME is fixed at t0 (advance it with
// m.SetTime) and returns it with a client.
func frozen(t *testing.T) (*miniredis.Miniredis, *redis.Client) {
	t.Helper()
	m := miniredis.RunT(t)
	m.SetTime(t0)
	return m, client(t, m.Addr())
}

func client(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return c
}

func mustNew(t testing.TB, rdb redis.UniversalClient, cfg Config) *Budget {
	t.Helper()
	b, err := New(rdb, cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	return b
}

func reserve(t *testing.T, b *Budget) Reservation {
	t.Helper()
	r, err := b.Reserve(context.Background())
	if err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	return r
}

func ms(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }

func TestNewValidates(t *testing.T) {
	m := miniredis.RunT(t)
	c := client(t, m.Addr())
	bad := []struct {
		name string
		rdb  redis.UniversalClient
		cfg  Config
		want string
	}{
		{"NaN limit", c, Config{Limit: math.NaN()}, "finite"},
		{"+Inf limit", c, Config{Limit: math.Inf(1)}, "finite"},
		{"-Inf limit", c, Config{Limit: math.Inf(-1)}, "finite"},
		{"limit too small", c, Config{Limit: MinLimit / 2}, "outside"},
		{"limit too large", c, Config{Limit: MaxLimit * 2}, "outside"},
		{"negative burst", c, Config{Limit: 10, Burst: -1}, "burst"},
		{"negative max wait", c, Config{Limit: 10, MaxWait: -time.Second}, "max wait"},
		{"negative late tolerance", c, Config{Limit: 10, LateTolerance: -time.Millisecond}, "late tolerance"},
		{"negative max cool-down", c, Config{Limit: 10, MaxCoolDown: -time.Second}, "max cool-down"},
		{"no client", nil, Config{Limit: 10}, "client"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			b, err := New(tc.rdb, tc.cfg)
			if err == nil {
				t.Fatalf("New(%+v) = %+v, want error", tc.cfg, b)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}

	good := []struct {
		name      string
		cfg       Config
		limit     float64
		burst     int
		key       string
		maxWait   time.Duration
		lateTol   time.Duration
		maxCool   time.Duration
		unlimited bool
	}{
		{"defaults at 10/s", Config{Limit: 10}, 10, 1, DefaultKey, DefaultMaxWait, DefaultLateTolerance, DefaultMaxCoolDown, false},
		{"default burst is limit/40", Config{Limit: 200}, 200, 5, DefaultKey, DefaultMaxWait, DefaultLateTolerance, DefaultMaxCoolDown, false},
		{"default burst rounds down", Config{Limit: 119.9}, 119.9, 2, DefaultKey, DefaultMaxWait, DefaultLateTolerance, DefaultMaxCoolDown, false},
		{"default burst at least 1", Config{Limit: MinLimit}, MinLimit, 1, DefaultKey, DefaultMaxWait, DefaultLateTolerance, DefaultMaxCoolDown, false},
		{"explicit", Config{Limit: 5, Burst: 3, MaxWait: time.Second, LateTolerance: time.Millisecond, MaxCoolDown: time.Minute, Key: "k"},
			5, 3, "k", time.Second, time.Millisecond, time.Minute, false},
		{"zero is unlimited", Config{}, 0, 0, "", 0, 0, 0, true},
		{"negative is unlimited", Config{Limit: -3, Burst: -1}, 0, 0, "", 0, 0, 0, true},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			b := mustNew(t, c, tc.cfg)
			if b.Limit() != tc.limit || b.Burst() != tc.burst || b.unlimited() != tc.unlimited {
				t.Errorf("Limit, Burst, unlimited = %v, %v, %v; want %v, %v, %v",
					b.Limit(), b.Burst(), b.unlimited(), tc.limit, tc.burst, tc.unlimited)
			}
			if tc.unlimited {
				return
			}
			if b.key != tc.key || b.maxWait != tc.maxWait || b.lateTol != tc.lateTol || b.maxCool != tc.maxCool {
				t.Errorf("key, maxWait, lateTol, maxCool = %q, %v, %v, %v; want %q, %v, %v, %v",
					b.key, b.maxWait, b.lateTol, b.maxCool, tc.key, tc.maxWait, tc.lateTol, tc.maxCool)
			}
		})
	}
	if _, err := New(nil, Config{}); err != nil {
		t.Errorf("New(nil, unlimited) = %v, want no error: an unlimited budget needs no Redis", err)
	}
}

// On a frozen Redis clock, consecutive bookings walk the GCRA schedule:
// Burst slots at once, then one per interval.
func TestReserveSchedule(t *testing.T) {
	tests := []struct {
		name   string
		limit  float64
		burst  int
		delays []time.Duration
	}{
		{"burst 1", 10, 1, []time.Duration{0, ms(100), ms(200), ms(300), ms(400)}},
		{"burst 3", 10, 3, []time.Duration{0, 0, 0, ms(100), ms(200), ms(300)}},
		// The interval is 333333.33 µs; delays are rounded up, never down.
		{"fractional interval", 3, 1, []time.Duration{0, 333334 * time.Microsecond, 666667 * time.Microsecond, time.Second}},
		{"slow", 0.5, 1, []time.Duration{0, 2 * time.Second, 4 * time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, c := frozen(t)
			b := mustNew(t, c, Config{Limit: tc.limit, Burst: tc.burst, MaxWait: time.Minute})
			for i, want := range tc.delays {
				r := reserve(t, b)
				if !r.Booked || r.Delay != want || r.Reason != ReasonBudget {
					t.Errorf("booking %d = %+v, want booked, delay %v, reason budget", i, r, want)
				}
			}
		})
	}
}

// The schedule keeps the fraction of a microsecond of each interval, so it
// does not drift from the limit over many bookings. TAT near the current
// epoch is held to 0.25 µs, so each booking may be off by 0.125 µs, hence
// the bound of MaxLimit.
func TestReserveDoesNotDrift(t *testing.T) {
	for _, limit := range []float64{3, 7, 333, MaxLimit} {
		_, c := frozen(t)
		b := mustNew(t, c, Config{Limit: limit, Burst: 1, MaxWait: 24 * time.Hour})
		const n = 500
		var last Reservation
		for range n {
			last = reserve(t, b)
		}
		want := float64(n-1) * 1e6 / limit // µs
		got := float64(last.Delay.Microseconds())
		// Allow the 0.125 µs per booking, and 1 µs for rounding the delay up.
		bound := (0.125*(n-1) + 1) / want
		if rel := math.Abs(got-want) / want; rel > bound {
			t.Errorf("limit %v: booking %d is %v µs out, want %v: relative error %.2g > %.2g", limit, n, got, want, rel, bound)
		}
	}
}

// Bookings are spaced on the Redis clock, not by how often they are made:
// the budget refills as time passes, up to Burst.
func TestReserveRefills(t *testing.T) {
	m, c := frozen(t)
	b := mustNew(t, c, Config{Limit: 10, Burst: 3})
	steps := []struct {
		advance time.Duration // Redis clock since t0
		want    time.Duration
	}{
		{0, 0}, {0, 0}, {0, 0}, // the burst: TAT = t0+300ms
		{ms(150), 0},      // slot = TAT-200ms = t0+100ms, already past
		{ms(150), ms(50)}, // TAT = t0+400ms, slot t0+200ms
		{ms(150), ms(150)},
		// Quiet for a while: the full burst is back, and no more.
		{ms(2000), 0}, {ms(2000), 0}, {ms(2000), 0}, {ms(2000), ms(100)},
	}
	for i, s := range steps {
		m.SetTime(t0.Add(s.advance))
		if r := reserve(t, b); !r.Booked || r.Delay != s.want {
			t.Errorf("step %d at t0+%v: %+v, want booked with delay %v", i, s.advance, r, s.want)
		}
	}
}

// A slot beyond MaxWait is not booked: the state is untouched, so asking
// again gives the same answer, and Wait reports a DelayError.
func TestBeyondMaxWaitBooksNothing(t *testing.T) {
	m, c := frozen(t)
	var deferred []*DelayError
	b := mustNew(t, c, Config{Limit: 10, Burst: 1, MaxWait: ms(250),
		Observer: Observer{Deferred: func(e *DelayError) { deferred = append(deferred, e) }}})
	for i := range 3 {
		if r := reserve(t, b); !r.Booked {
			t.Fatalf("booking %d refused: %+v", i, r)
		}
	}
	tat := m.HGet(DefaultKey, "tat")
	for i := range 3 {
		r := reserve(t, b)
		if r.Booked || r.Delay != ms(300) || r.Reason != ReasonBudget {
			t.Errorf("refusal %d = %+v, want not booked, delay 300ms, reason budget", i, r)
		}
	}
	if got := m.HGet(DefaultKey, "tat"); got != tat {
		t.Errorf("refusals moved TAT from %s to %s", tat, got)
	}

	waited, err := b.Wait(context.Background())
	de, ok := IsDelay(err)
	if !ok {
		t.Fatalf("Wait = %v, %v; want a *DelayError", waited, err)
	}
	if de.RetryIn != ms(300) || de.Reason != ReasonBudget {
		t.Errorf("DelayError = %+v, want RetryIn 300ms, reason budget", de)
	}
	var as *DelayError
	if !errors.As(err, &as) || as != de {
		t.Errorf("errors.As does not find the DelayError")
	}
	if len(deferred) != 1 || deferred[0] != de {
		t.Errorf("Observer.Deferred saw %v, want the one DelayError", deferred)
	}
	if _, ok := IsDelay(errors.New("other")); ok {
		t.Errorf("IsDelay(other error) = true")
	}

	// Exactly MaxWait away is within bounds.
	b2 := mustNew(t, c, Config{Limit: 10, Burst: 1, MaxWait: ms(300)})
	if r := reserve(t, b2); !r.Booked || r.Delay != ms(300) {
		t.Errorf("slot exactly MaxWait away: %+v, want booked", r)
	}
}

func TestCoolDown(t *testing.T) {
	ctx := context.Background()
	m, c := frozen(t)
	b := mustNew(t, c, Config{Limit: 10, Burst: 3, MaxCoolDown: 5 * time.Second})

	remaining := func() time.Duration {
		t.Helper()
		d, err := b.CoolDownRemaining(ctx)
		if err != nil {
			t.Fatalf("CoolDownRemaining: %v", err)
		}
		return d
	}
	if d := remaining(); d != 0 {
		t.Errorf("remaining before any cool-down = %v, want 0", d)
	}
	if err := b.CoolDown(ctx, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := remaining(); d != 2*time.Second {
		t.Errorf("remaining = %v, want 2s", d)
	}
	// A shorter cool-down does not shorten the one in force.
	if err := b.CoolDown(ctx, ms(500)); err != nil {
		t.Fatal(err)
	}
	if d := remaining(); d != 2*time.Second {
		t.Errorf("remaining after a shorter cool-down = %v, want 2s", d)
	}

	// The first slot is at the end of the cool-down, and the burst is spent.
	if r := reserve(t, b); !r.Booked || r.Delay != 2*time.Second || r.Reason != ReasonCooldown {
		t.Errorf("first booking = %+v, want booked in 2s, reason cooldown", r)
	}
	if r := reserve(t, b); !r.Booked || r.Delay != ms(2100) {
		t.Errorf("second booking = %+v, want 2.1s: no burst after a cool-down", r)
	}

	// Another Budget on the same key (another process) sees it too.
	other := mustNew(t, client(t, m.Addr()), Config{Limit: 10, Burst: 3, MaxWait: time.Second})
	_, err := other.Wait(ctx)
	if de, ok := IsDelay(err); !ok || de.Reason != ReasonCooldown || de.RetryIn != ms(2200) {
		t.Errorf("other process's Wait = %v, want DelayError in 2.2s for cooldown", err)
	}

	m.SetTime(t0.Add(ms(1500)))
	if d := remaining(); d != ms(500) {
		t.Errorf("remaining 1.5s later = %v, want 500ms", d)
	}
	m.SetTime(t0.Add(ms(2500)))
	if d := remaining(); d != 0 {
		t.Errorf("remaining after the end = %v, want 0", d)
	}
	if r := reserve(t, b); r.Reason != ReasonBudget {
		t.Errorf("reason after the cool-down = %q, want budget", r.Reason)
	}

	// Capped at MaxCoolDown.
	if err := b.CoolDown(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if d := remaining(); d != 5*time.Second {
		t.Errorf("remaining after a 1h cool-down capped at 5s = %v", d)
	}
}

func TestCoolDownNonPositiveDoesNothing(t *testing.T) {
	m, c := frozen(t)
	b := mustNew(t, c, Config{Limit: 10})
	for _, d := range []time.Duration{0, -time.Second} {
		if err := b.CoolDown(context.Background(), d); err != nil {
			t.Errorf("CoolDown(%v) = %v", d, err)
		}
	}
	if n := m.CommandCount(); n != 0 {
		t.Errorf("CoolDown(<= 0) sent %d commands, want 0", n)
	}
}

func TestUnlimitedSendsNothing(t *testing.T) {
	ctx := context.Background()
	m := miniredis.RunT(t)
	granted := 0
	for _, cfg := range []Config{{Limit: 0}, {Limit: -1}} {
		cfg.Observer.Granted = func(time.Duration) { granted++ }
		b := mustNew(t, client(t, m.Addr()), cfg)
		for range 100 {
			if waited, err := b.Wait(ctx); waited != 0 || err != nil {
				t.Fatalf("Wait = %v, %v; want 0, nil", waited, err)
			}
		}
		if r, err := b.Reserve(ctx); err != nil || !r.Booked || r.Delay != 0 {
			t.Errorf("Reserve = %+v, %v; want booked now", r, err)
		}
		if err := b.CoolDown(ctx, time.Minute); err != nil {
			t.Errorf("CoolDown = %v", err)
		}
		if d, err := b.CoolDownRemaining(ctx); d != 0 || err != nil {
			t.Errorf("CoolDownRemaining = %v, %v", d, err)
		}
	}
	if n := m.CommandCount(); n != 0 {
		t.Errorf("unlimited budget sent %d Redis commands, want 0", n)
	}
	if granted != 200 {
		t.Errorf("Observer.Granted called %d times, want 200", granted)
	}
}

func TestWaitCancelledDuringSleep(t *testing.T) {
	m := miniredis.RunT(t) // real clock
	b := mustNew(t, client(t, m.Addr()), Config{Limit: 1, Burst: 1})
	if _, err := b.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	waited, err := b.Wait(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, %v; want context.Canceled", waited, err)
	}
	if _, ok := IsDelay(err); ok {
		t.Errorf("a cancelled Wait must not look like a DelayError")
	}
	if waited >= time.Second {
		t.Errorf("Wait returned after %v, not when cancelled", waited)
	}
	// The abandoned slot lapses: it is not given back.
	if r := reserve(t, b); r.Delay <= time.Second {
		t.Errorf("next booking in %v, want beyond the lapsed slot (> 1s)", r.Delay)
	}

	// A context that is already done fails before any booking.
	m2, c2 := frozen(t)
	b2 := mustNew(t, c2, Config{Limit: 1})
	if _, err := b2.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait(done ctx) = %v, want context.Canceled", err)
	}
	if m2.Exists(DefaultKey) {
		t.Errorf("Wait(done ctx) booked a slot")
	}
}

// fakeClock stands in for the process clock; its sleep advances it by the
// requested duration plus whatever stall the test injects.
type fakeClock struct {
	now    time.Time
	stalls []time.Duration // one per sleep; missing means none
	sleeps int
}

func (f *fakeClock) Now() time.Time { return f.now }

func (f *fakeClock) Sleep(_ context.Context, d time.Duration) error {
	f.now = f.now.Add(max(d, 0))
	if f.sleeps < len(f.stalls) {
		f.now = f.now.Add(f.stalls[f.sleeps])
	}
	f.sleeps++
	return nil
}

// A caller stalled past its slot does not use it: it books again.
func TestWaitRebooksLateSlot(t *testing.T) {
	tests := []struct {
		name       string
		stalls     []time.Duration
		wantMissed []time.Duration
		wantWaited time.Duration
	}{
		{"on time", nil, nil, 0},
		{"late within tolerance", []time.Duration{ms(20)}, nil, ms(20)},
		{"late", []time.Duration{ms(21)}, []time.Duration{ms(21)}, ms(21 + 100)},
		{"late twice", []time.Duration{ms(50), ms(30)}, []time.Duration{ms(50), ms(30)}, ms(50 + 100 + 30 + 200)}, // the Redis clock is frozen: third slot
		{"late then within tolerance", []time.Duration{ms(500), ms(5)}, []time.Duration{ms(500)}, ms(500 + 100 + 5)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, c := frozen(t)
			clk := &fakeClock{now: time.Unix(0, 0), stalls: tc.stalls}
			var missed []time.Duration
			var granted []time.Duration
			var dropped []string
			b := mustNew(t, c, Config{Limit: 10, Burst: 1, LateTolerance: ms(20), Observer: Observer{
				Missed:  func(d time.Duration) { missed = append(missed, d) },
				Granted: func(d time.Duration) { granted = append(granted, d) },
				Dropped: func(reason string) { dropped = append(dropped, reason) },
			}})
			b.now, b.sleep = clk.Now, clk.Sleep

			waited, err := b.Wait(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if waited != tc.wantWaited || len(granted) != 1 || granted[0] != waited {
				t.Errorf("waited %v (observed %v), want %v", waited, granted, tc.wantWaited)
			}
			if !slices.Equal(missed, tc.wantMissed) {
				t.Errorf("missed %v, want %v", missed, tc.wantMissed)
			}
			if len(dropped) != len(tc.wantMissed) || slices.ContainsFunc(dropped, func(r string) bool { return r != DropLate }) {
				t.Errorf("dropped %v, want %q for each of the %d missed", dropped, DropLate, len(tc.wantMissed))
			}
			// Every booking, lapsed or used, holds its slot: the Redis clock
			// is frozen, so TAT counts the bookings.
			bookings := len(tc.wantMissed) + 1
			wantTAT := float64(t0.UnixMicro()) + float64(bookings)*1e5
			if got := m.HGet(DefaultKey, "tat"); got != formatUS(wantTAT) {
				t.Errorf("TAT = %s, want %s (%d bookings)", got, formatUS(wantTAT), bookings)
			}
		})
	}
}

// formatUS formats microseconds as the script stores them (%.3f).
func formatUS(us float64) string { return strconv.FormatFloat(us, 'f', 3, 64) }

// Budgets of different processes on one key share one schedule; another
// key is another budget.
func TestBudgetsShareTheKey(t *testing.T) {
	m, _ := frozen(t)
	var fleet []*Budget
	for range 3 {
		fleet = append(fleet, mustNew(t, client(t, m.Addr()), Config{Limit: 10, Burst: 1}))
	}
	for i := range 9 {
		r := reserve(t, fleet[i%3])
		if want := time.Duration(i) * ms(100); r.Delay != want {
			t.Errorf("booking %d by process %d: delay %v, want %v", i, i%3, r.Delay, want)
		}
	}
	other := mustNew(t, client(t, m.Addr()), Config{Limit: 10, Burst: 1, Key: "another"})
	if r := reserve(t, other); r.Delay != 0 {
		t.Errorf("budget on another key: delay %v, want 0", r.Delay)
	}
}

func TestRedisFailures(t *testing.T) {
	ctx := context.Background()

	t.Run("server gone", func(t *testing.T) {
		m := miniredis.RunT(t)
		c := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: -1})
		t.Cleanup(func() { c.Close() })
		b := mustNew(t, c, Config{Limit: 10, Key: "k"})
		m.Close()
		if _, err := b.Wait(ctx); err == nil || !strings.Contains(err.Error(), "ratebudget: book slot in k") {
			t.Errorf("Wait = %v, want an error naming the key", err)
		} else if _, ok := IsDelay(err); ok {
			t.Errorf("a Redis failure must not look like a DelayError")
		}
		if err := b.CoolDown(ctx, time.Second); err == nil {
			t.Errorf("CoolDown: no error")
		}
		if _, err := b.CoolDownRemaining(ctx); err == nil {
			t.Errorf("CoolDownRemaining: no error")
		}
	})

	t.Run("key of another type", func(t *testing.T) {
		m, c := frozen(t)
		if err := m.Set(DefaultKey, "not a hash"); err != nil {
			t.Fatal(err)
		}
		b := mustNew(t, c, Config{Limit: 10})
		if _, err := b.Reserve(ctx); err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
			t.Errorf("Reserve on a string key = %v, want WRONGTYPE", err)
		}
	})

	t.Run("scripts flushed", func(t *testing.T) {
		_, c := frozen(t)
		b := mustNew(t, c, Config{Limit: 10, Burst: 1})
		reserve(t, b)
		if err := c.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if r := reserve(t, b); r.Delay != ms(100) {
			t.Errorf("after SCRIPT FLUSH: %+v, want the second slot", r)
		}
		if err := c.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := b.CoolDown(ctx, time.Second); err != nil {
			t.Errorf("CoolDown after SCRIPT FLUSH: %v", err)
		}
	})
}

// The state expires once it no longer matters, so an idle budget leaves
// nothing in Redis.
func TestStateExpires(t *testing.T) {
	m, c := frozen(t)
	b := mustNew(t, c, Config{Limit: 10, Burst: 1})
	reserve(t, b)
	reserve(t, b) // TAT = t0+200ms
	if ttl := m.TTL(DefaultKey); ttl != 1200*time.Millisecond {
		t.Errorf("TTL = %v, want 1.2s (TAT + 1s)", ttl)
	}
	if err := b.CoolDown(context.Background(), 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if ttl := m.TTL(DefaultKey); ttl != 4*time.Second {
		t.Errorf("TTL after a 3s cool-down = %v, want 4s", ttl)
	}
}

func TestDelayErrorMessage(t *testing.T) {
	err := error(&DelayError{RetryIn: 1500 * time.Millisecond, Reason: ReasonCooldown})
	if got, want := err.Error(), "ratebudget: next free slot is 1.5s away (cooldown)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	wrapped := fmt.Errorf("task x: %w", err)
	if de, ok := IsDelay(wrapped); !ok || de.RetryIn != 1500*time.Millisecond {
		t.Errorf("IsDelay(wrapped) = %v, %v", de, ok)
	}
}

// A slot beyond the caller's deadline is not booked: it would only lapse.
func TestReserveBoundedByDeadline(t *testing.T) {
	_, c := frozen(t)
	b := mustNew(t, c, Config{Limit: 1, Burst: 1, MaxWait: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if r := reserve(t, b); !r.Booked {
		t.Fatalf("first booking refused: %+v", r)
	}
	_, err := b.Wait(ctx) // the next slot is 1 s away: past the deadline
	if de, ok := IsDelay(err); !ok || de.RetryIn != time.Second {
		t.Errorf("Wait with a deadline before the slot = %v, want a DelayError in 1s", err)
	}
	long, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if r, err := b.Reserve(long); err != nil || !r.Booked || r.Delay != time.Second {
		t.Errorf("Reserve with a distant deadline = %+v, %v; want booked in 1s", r, err)
	}
}

// A caller holding a slot inside a cool-down its own process started drops
// the slot and books again, after the cool-down; a cool-down started by
// another process reaches it only at its next booking.
func TestWaitDropsSlotInsideLocalCoolDown(t *testing.T) {
	tests := []struct {
		name       string
		otherProc  bool // the cool-down comes from another Budget
		wantWaited time.Duration
		wantDrops  int
	}{
		{"same process", false, ms(100) + time.Second, 1},
		{"other process", true, ms(100), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, c := frozen(t)
			b := mustNew(t, c, Config{Limit: 10, Burst: 1})
			coolBy := b
			if tc.otherProc {
				coolBy = mustNew(t, client(t, m.Addr()), Config{Limit: 10, Burst: 1})
			}
			reserve(t, b) // slot 0 goes to someone else
			drops := 0
			b.obs.Dropped = func(reason string) {
				if reason == DropCoolDown {
					drops++
				}
			}
			clk := &fakeClock{now: time.Unix(0, 0)}
			b.now = clk.Now
			coolBy.now = clk.Now
			sleeps := 0
			b.sleep = func(ctx context.Context, d time.Duration) error {
				if sleeps++; sleeps == 1 { // a 429 arrives while we sleep
					if err := coolBy.CoolDown(ctx, time.Second); err != nil {
						return err
					}
				}
				return clk.Sleep(ctx, d)
			}
			waited, err := b.Wait(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if waited != tc.wantWaited {
				t.Errorf("waited %v, want %v", waited, tc.wantWaited)
			}
			if drops != tc.wantDrops {
				t.Errorf("%d slots dropped for the cool-down, want %d", drops, tc.wantDrops)
			}
		})
	}
}
