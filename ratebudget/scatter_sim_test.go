package ratebudget

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"
)

// simAnswer is what a simulated API answers to a call made at a time.
type simAnswer func(at time.Time) Outcome

// simSeed is the simulations' seed: def, or SIM_SEED's value added to it
// (to see that a figure is no accident of one sequence).
func simSeed(def uint64) uint64 {
	n, _ := strconv.ParseUint(os.Getenv("SIM_SEED"), 10, 64)
	return def + n
}

// simResult is what a simulated fleet saw.
type simResult struct {
	accepted, refused int     // refused: every answer but Accepted
	lowest            float64 // the fleet's rate, the lowest after skip
	acceptedAfterSkip int
	callsAfterSkip    int
	virtualAfterSkip  time.Duration
}

// simFleet drives one budget on a frozen Redis clock as a busy fleet
// would: it books as soon as its furthest slot is within Lookahead, makes
// each call at its slot and reports the answer latency later, for d of
// virtual time.
func simFleet(t *testing.T, cfg Config, d, skip time.Duration, answer simAnswer) simResult {
	return simDemand(t, cfg, 0, d, skip, answer)
}

// simDemand is simFleet for a fleet with work for at most demand calls a
// second (0: no bound), as a fleet whose tasks wait out retries is.
func simDemand(t *testing.T, cfg Config, demand float64, d, skip time.Duration, answer simAnswer) simResult {
	t.Helper()
	m, c := frozen(t)
	now := t0
	if testing.Verbose() && os.Getenv("SIM_TRACE") != "" {
		cfg.Observer.RateChanged = func(rate float64, ev string) {
			v, _ := c.HMGet(context.Background(), DefaultKey, "good", "zr", "zn", "cr", "cn", "sc", "arm").Result()
			t.Logf("%6.2fs %s -> %.1f %v", now.Sub(t0).Seconds(), ev, rate, v)
		}
	}
	b := mustNew(t, c, cfg)
	b.now = func() time.Time { return now }
	type due struct {
		at  time.Time
		out Outcome
	}
	var reports []due
	res := simResult{lowest: cfg.Limit}
	const latency = 20 * time.Millisecond
	ctx := context.Background()
	nextTrace := t0
	for now.Sub(t0) < d {
		m.SetTime(now)
		if cfg.Observer.RateChanged != nil && !now.Before(nextTrace) {
			nextTrace = nextTrace.Add(time.Second)
			cfg.Observer.RateChanged(b.Fleet().Rate, "tick")
		}
		for len(reports) > 0 && !reports[0].at.After(now) {
			r := Result{Outcome: reports[0].out}
			if r.Outcome == RateLimited {
				r.RetryAfter = time.Second
			}
			if _, err := b.Report(ctx, Permit{}, r); err != nil {
				t.Fatal(err)
			}
			reports = reports[1:]
		}
		r, err := b.Reserve(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Booked {
			now = now.Add(min(r.Delay, 100*time.Millisecond))
			continue
		}
		at := now.Add(r.Delay)
		out := answer(at)
		if out == Accepted {
			res.accepted++
		} else {
			res.refused++
		}
		if at.Sub(t0) >= skip {
			res.lowest = min(res.lowest, r.Fleet.Rate)
			res.callsAfterSkip++
			if out == Accepted {
				res.acceptedAfterSkip++
			}
		}
		// Reports are delivered in order of their time; calls are made in
		// slot order, so appending keeps them sorted.
		reports = append(reports, due{at.Add(latency), out})
		// The next booking is made once this slot is within the lookahead.
		if next := at.Add(-DefaultLookahead); next.After(now) {
			now = next
		}
		if demand > 0 {
			if u := at.Add(time.Duration(float64(time.Second) / demand)); u.After(now) {
				now = u
			}
		}
	}
	res.virtualAfterSkip = d - skip
	return res
}

// A random scatter of 429s (not a limit: the API refuses the same share
// at any rate) must not ratchet the fleet down: the chaos rollout of
// RELIABILITY.md row 5 (10% of calls 429, random) once sank the learned
// rate from 100 to 2.5 calls/s in two minutes and the rollout stalled.
func TestAdaptiveRandomScatterKeepsTheRate(t *testing.T) {
	for _, share := range []float64{0.05, 0.10, 0.20} {
		rng := rand.New(rand.NewPCG(simSeed(1), uint64(share*1000)))
		res := simFleet(t, Config{Limit: 100, Adaptive: AdaptiveConfig{Enabled: true}}, 60*time.Second, 15*time.Second,
			func(time.Time) Outcome {
				if rng.Float64() < share {
					return RateLimited
				}
				return Accepted
			})
		acc := float64(res.acceptedAfterSkip) / res.virtualAfterSkip.Seconds()
		t.Logf("scatter %.0f%%: accepted %.1f/s after 15 s (of at most %.1f), lowest rate %.1f", 100*share, acc, 100*(1-share), res.lowest)
		// The fleet may dip while it learns the scatter, never sink:
		// before, it accepted 30.0, 18.1 and 3.4 calls/s at 5, 10 and 20%.
		// Known weakness: a scatter that meets the fleet's first calls
		// (3 of its first 5-6 answers) cuts it off the ceiling before the
		// ceiling's share is learnt, and later windows whose share falls
		// by chance ratchet it down. Over SIM_SEED=11, 22, 33, 44 and
		// 100-111, 3 sequences in 16 sink at 20% (1.7-4.3 calls/s) and two
		// dip (44, 59), 1 at 10% (70) and 1 at 5% (45); the rest keep
		// >= 0.87 of all. Before a window of only 429s was held to a fifth
		// of the rate, one more sank at 20% (to 1.7 from 44).
		if want := 0.7 * 100 * (1 - share); acc < want {
			t.Errorf("scatter %.0f%%: the API accepted %.1f calls/s, want >= %.1f (0.7 of all it would)", 100*share, acc, want)
		}
	}
}

// The same simulation against a real limit (10 calls/s, a burst of 1, the
// fleet's ceiling 50), alone and under a 10% scatter of 429s besides: the
// scatter's tolerance must not blind the fleet to the limit. The bounds
// are regressions of what this simulation measured (9.7/s and 5.4%
// alone, 7.2/s beside a 10% scatter); make bench's figure 7 holds the targets, against real binaries.
func TestAdaptiveSimulatedLimit(t *testing.T) {
	for _, scatter := range []float64{0, 0.10} {
		api := &apiLimit{rate: 10}
		rng := rand.New(rand.NewPCG(simSeed(2), uint64(scatter*1000)))
		var limited, scattered int
		res := simFleet(t, Config{Limit: 50, Adaptive: AdaptiveConfig{Enabled: true}}, 60*time.Second, 15*time.Second,
			func(at time.Time) Outcome {
				if rng.Float64() < scatter {
					scattered++
					return RateLimited
				}
				if api.call(at) {
					return Accepted
				}
				limited++
				return RateLimited
			})
		acc := float64(res.acceptedAfterSkip) / res.virtualAfterSkip.Seconds()
		share := float64(limited) / float64(res.accepted+res.refused)
		t.Logf("limit 10/s, scatter %.0f%%: accepted %.2f/s after 15 s, 429s from the limit %.1f%% of calls (scatter %d), lowest rate %.1f",
			100*scatter, acc, 100*share, scattered, res.lowest)
		// 6.67-8.42 over SIM_SEED=11-44 beside the scatter.
		if want := 8.5 - 20*scatter; acc < want {
			t.Errorf("scatter %.0f%%: accepted %.2f calls/s of a limit of 10, want >= %.2f", 100*scatter, acc, want)
		}
		if share > 0.06 {
			t.Errorf("scatter %.0f%%: %.1f%% of calls refused by the limit, want <= 6%%", 100*scatter, 100*share)
		}
	}
}

// The chaos rollout of RELIABILITY.md row 5 as the budget sees it: a fleet
// with work for 30 calls a second under a ceiling of 100, the API
// refusing 10% of calls with 429 and failing 25% (503s, resets, hangs).
func TestAdaptiveScatterBelowDemand(t *testing.T) {
	rng := rand.New(rand.NewPCG(simSeed(3), 3))
	res := simDemand(t, Config{Limit: 100, Adaptive: AdaptiveConfig{Enabled: true}}, 30, 60*time.Second, 15*time.Second,
		func(time.Time) Outcome {
			switch x := rng.Float64(); {
			case x < 0.10:
				return RateLimited
			case x < 0.35:
				return Failed
			}
			return Accepted
		})
	calls := float64(res.callsAfterSkip) / res.virtualAfterSkip.Seconds()
	t.Logf("demand 30/s, 10%% 429s, 25%% failures: %.1f calls/s after 15 s, lowest rate %.1f", calls, res.lowest)
	// Before failures counted as accepted for the rate, each cut took the
	// failures' share off too: 15.3 calls/s, the rate at 10.8.
	if calls < 0.9*30 {
		t.Errorf("the fleet made %.1f calls/s of the 30 its work offered, want >= 0.9 of them", calls)
	}
}

// A limit that falls from the ceiling (50) to a fifth of it, the calls
// reaching the API with some jitter. The scatter test's known weakness:
// the 429s the jitter meets at the old limit, at the ceiling, match those
// it meets just below the new one, so they are taken for a scatter and the
// probes above the new limit run on. Measured 19.1% of the calls after the
// drop answered 429; over SIM_SEED=11, 22, 33, 44 and 100-105 6-11% but
// for one sequence of 27%, since the slow probe's step shrinks while its
// probes find the limit where it was (5.5-58%, three over 27%, before;
// 7.5% before the scatter was learnt; TestAdaptiveTuning, in real time,
// 20-29% against 11-12%). A hold at 0.7 of the rate to test the suspicion fixed this case
// but sank the fleet under a 5% scatter for three seeds in four, so it is
// not in; the bound holds what is known and catches worse (68% in one
// variant).
func TestAdaptiveLimitDropWithJitter(t *testing.T) {
	api := &apiLimit{rate: 50}
	drop := t0.Add(20 * time.Second)
	// The calls reach the API up to 30 ms after their slots, as the
	// scheduling of many handlers has them: just below the limit some meet
	// it refilling and are refused.
	rng := rand.New(rand.NewPCG(simSeed(4), 4))
	var after, refused int
	simFleet(t, Config{Limit: 50, Adaptive: AdaptiveConfig{Enabled: true}}, 60*time.Second, 15*time.Second,
		func(at time.Time) Outcome {
			if !at.Before(drop) {
				api.set(10)
				after++
			}
			if api.call(at.Add(time.Duration(rng.Int64N(int64(30 * time.Millisecond))))) {
				return Accepted
			}
			if !at.Before(drop) {
				refused++
			}
			return RateLimited
		})
	share := float64(refused) / float64(after)
	t.Logf("limit 50 -> 10 at 20 s: %d calls after the drop, %.1f%% answered 429", after, 100*share)
	if share > 0.50 {
		t.Errorf("%.1f%% of the calls after the drop answered 429, want <= 50%%", 100*share)
	}
}

// apiBucket is an API's token bucket with a burst, strict as
// versoritest's limiter (the bench's fake API) is. apiLimit's GCRA allows
// half an interval more, which the first cut reads as rate: at a burst of
// 2 the start below measured 12 429s against that model, 7 against this.
type apiBucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

func (b *apiBucket) call(at time.Time) bool {
	if b.last.IsZero() {
		b.tokens, b.last = b.burst, at
	}
	if at.After(b.last) {
		b.tokens = min(b.burst, b.tokens+at.Sub(b.last).Seconds()*b.rate)
		b.last = at
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Figure 7's rows 1-2 as the budget sees them: a ceiling of 50 against an
// API that allows 10 calls a second with a burst of 2. The first cut reads
// a window of about 0.1 s that includes the API's burst; read whole it cut
// to 17 and needed a second cut, and the start cost 12-13 429s of the
// minute's 37 (5.7% of all calls, against the figure's 5%). One call less
// is 7 (4.9%).
func TestAdaptiveSimulatedStart(t *testing.T) {
	api := &apiBucket{rate: 10, burst: 2}
	var start, all int
	res := simFleet(t, Config{Limit: 50, Adaptive: AdaptiveConfig{Enabled: true}}, 60*time.Second, 2*time.Second,
		func(at time.Time) Outcome {
			if api.call(at) {
				return Accepted
			}
			all++
			if at.Sub(t0) < 2*time.Second {
				start++
			}
			return RateLimited
		})
	calls := res.accepted + res.refused
	acc := float64(res.acceptedAfterSkip) / res.virtualAfterSkip.Seconds()
	t.Logf("limit 10/s, burst 2: %d 429s in the first 2 s, %d of %d calls in all (%.1f%%); %.2f accepted/s after",
		start, all, calls, 100*float64(all)/float64(calls), acc)
	if start > 9 {
		t.Errorf("%d calls answered 429 in the first 2 s, want <= 9", start)
	}
	if share := float64(all) / float64(calls); share > 0.05 {
		t.Errorf("%.1f%% of calls answered 429, want <= 5%%", 100*share)
	}
	if acc < 9.5 {
		t.Errorf("%.2f calls/s accepted of a limit of 10, want >= 9.5", acc)
	}
}

// Figure 7 row 4 as the budget sees it: 2% of calls answered 429 at
// random under a ceiling of 100, nothing else. Such a scatter now and then
// cuts the fleet off its ceiling, and it has to find its way back: it once
// could not, its probes refused at their first 429 and its holds cut by
// two early ones, and these two sequences (of 30 simulated minutes, the
// worst) made 63.2 and 83.1 calls/s (the bench's N=6,000 run: 1.45 x N/R).
func TestAdaptiveSmallScatterReturnsToTheCeiling(t *testing.T) {
	for _, seed := range []uint64{17, 27} {
		rng := rand.New(rand.NewPCG(simSeed(seed), 44))
		res := simFleet(t, Config{Limit: 100, Adaptive: AdaptiveConfig{Enabled: true}}, 60*time.Second, 0,
			func(time.Time) Outcome {
				if rng.Float64() < 0.02 {
					return RateLimited
				}
				return Accepted
			})
		calls := float64(res.accepted+res.refused) / 60
		t.Logf("sequence %d: %.1f calls/s over a minute, lowest rate %.1f", seed, calls, res.lowest)
		// 98.2 and 99.0 measured.
		if calls < 97 {
			t.Errorf("sequence %d: %.1f calls/s of a ceiling of 100 under a 2%% scatter of 429s, want >= 97", seed, calls)
		}
	}
}

// An API without a burst (a token bucket of one call, cmd/fakeapi's
// --rate-burst 1): it refuses any call that comes sooner than its
// interval after the last it accepted. Each failed probe cost two 429s
// there, the second a call booked after the decision but spaced at the
// rate before it (11.4% of all calls), the hold after the first cut, a
// little above the limit, saw every other call refused and was cut to
// half the limit (lowest rate 4.8, 15 s to climb back), and each probe
// was refused at its top, 1.15 x the estimate, before it could confirm
// a limit above the estimate, so the estimate stayed about 10% under the
// limit (7.9 accepted/s) until the probe's step shrank.
func TestAdaptiveAPIWithoutBurst(t *testing.T) {
	api := &apiBucket{rate: 10, burst: 1}
	var refused int
	res := simFleet(t, Config{Limit: 50, Adaptive: AdaptiveConfig{Enabled: true}}, 60*time.Second, 5*time.Second,
		func(at time.Time) Outcome {
			if api.call(at) {
				return Accepted
			}
			refused++
			return RateLimited
		})
	calls := res.accepted + res.refused
	share := float64(refused) / float64(calls)
	acc := float64(res.acceptedAfterSkip) / res.virtualAfterSkip.Seconds()
	t.Logf("limit 10/s, no burst: %d of %d calls answered 429 (%.1f%%); %.2f accepted/s after 5 s, lowest rate %.2f",
		refused, calls, 100*share, acc, res.lowest)
	// 6.2%, 8.67/s and 8.03 measured.
	if share > 0.085 {
		t.Errorf("%.1f%% of calls answered 429, want <= 8.5%%", 100*share)
	}
	if acc < 8.3 {
		t.Errorf("%.2f calls/s accepted of a limit of 10, want >= 8.3", acc)
	}
	if res.lowest < 6.5 {
		t.Errorf("the rate fell to %.2f against a limit of 10, want >= 6.5", res.lowest)
	}
}
