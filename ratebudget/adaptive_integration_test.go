package ratebudget

import (
	"context"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/versori/import-worker/internal/redistest"
)

// apiLimit is an API's own rate limit as a GCRA with burst 1, whose limit
// can change while the fleet calls it.
type apiLimit struct {
	mu    sync.Mutex
	rate  float64
	tat   time.Time
	calls []apiCall
}

type apiCall struct {
	at      time.Time
	refused bool
}

func (l *apiLimit) set(rate float64) {
	l.mu.Lock()
	l.rate = rate
	l.mu.Unlock()
}

func (l *apiLimit) call(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	ok := true
	if l.rate > 0 {
		interval := time.Duration(float64(time.Second) / l.rate)
		tat := l.tat
		if tat.Before(now) {
			tat = now
		}
		if tat.Sub(now) > interval/2 {
			ok = false
		} else {
			l.tat = tat.Add(interval)
		}
	}
	l.calls = append(l.calls, apiCall{now, !ok})
	return ok
}

// stats returns accepted calls per second and the share refused, over
// [from, to).
func (l *apiLimit) stats(from, to time.Time) (accepted float64, refusedShare float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n, refused int
	for _, c := range l.calls {
		if c.at.Before(from) || !c.at.Before(to) {
			continue
		}
		n++
		if c.refused {
			refused++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return float64(n-refused) / to.Sub(from).Seconds(), float64(refused) / float64(n)
}

var missedN, deferredN atomic.Int64

// driveFleet runs processes x goroutines calling api through budgets on s
// until ctx ends.
func driveFleet(ctx context.Context, t *testing.T, s *redistest.Server, cfg Config, processes, goroutines int, api *apiLimit, latency time.Duration) *sync.WaitGroup {
	var wg sync.WaitGroup
	cfg.Observer.Missed = func(time.Duration) { missedN.Add(1) }
	cfg.Observer.Deferred = func(*DelayError) { deferredN.Add(1) }
	for range processes {
		b := mustNew(t, s.Client(), cfg)
		for range goroutines {
			wg.Go(func() {
				for ctx.Err() == nil {
					p, err := b.Acquire(ctx)
					if err != nil {
						if de, ok := IsDelay(err); ok {
							sleepCtx(ctx, min(de.RetryIn, 200*time.Millisecond))
						}
						continue
					}
					ok := api.call(time.Now())
					sleepCtx(ctx, latency)
					out := Result{Outcome: Accepted}
					if !ok {
						out = Result{Outcome: RateLimited, RetryAfter: time.Second}
					}
					_, _ = b.Report(context.Background(), p, out)
				}
			})
		}
	}
	return &wg
}

// TestAdaptiveTuning prints how the adaptive fleet follows an API limit
// that changes; it is a tuning aid, run with ADAPTIVE_TUNING=1.
func TestAdaptiveTuning(t *testing.T) {
	if os.Getenv("ADAPTIVE_TUNING") == "" {
		t.Skip("ADAPTIVE_TUNING=1 runs it")
	}
	s := redistest.Start(t, redistest.Options{})
	api := &apiLimit{rate: 10}
	ceil := 50.0
	if v, err := strconv.ParseFloat(os.Getenv("CEIL"), 64); err == nil {
		ceil = v
	}
	cfg := Config{Limit: ceil, Adaptive: AdaptiveConfig{Enabled: true}}
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	wg := driveFleet(ctx, t, s, cfg, 3, 20, api, 20*time.Millisecond)
	phases := []struct {
		rate float64
		d    time.Duration
	}{{10, 30 * time.Second}, {50, 15 * time.Second}, {10, 15 * time.Second}}
	at := start
	for _, ph := range phases {
		api.set(ph.rate)
		from := at
		for at.Sub(from) < ph.d {
			time.Sleep(time.Until(at.Add(time.Second)))
			at = at.Add(time.Second)
			acc, share := api.stats(at.Add(-time.Second), at)
			st, _ := Inspect(ctx, s.Client(), DefaultKey)
			t.Logf("t=%5.2fs limit %3.0f accepted %5.1f/s refused %4.1f%% fleet rate %5.1f good %5.1f hold %v missed %d deferred %d cool %v", at.Sub(start).Seconds(), ph.rate, acc, 100*share, st.Rate, st.Accepted, st.Hold, missedN.Swap(0), deferredN.Swap(0), st.CoolDown)
		}
		acc, share := api.stats(from, at)
		t.Logf("phase limit %v: accepted %.2f/s, refused %.1f%%", ph.rate, acc, 100*share)
	}
	cancel()
	wg.Wait()
}
