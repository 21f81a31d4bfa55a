package ratebudget

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/versori/versoritest"
)

// fleetRun is what a simulated fleet did: the time of every grant.
type fleetRun struct {
	grants []time.Time
	missed int64
}

// runFleet makes processes Budgets, each with its own client (as separate
// processes would have), and drains calls grants through them from
// goroutines per process. configure may adjust each Budget.
func runFleet(t *testing.T, s *redistest.Server, cfg Config, processes, goroutines, calls int, configure func(*Budget)) fleetRun {
	t.Helper()
	ctx := context.Background()
	var (
		mu     sync.Mutex
		run    fleetRun
		left   atomic.Int64
		missed atomic.Int64
		wg     sync.WaitGroup
	)
	left.Store(int64(calls))
	cfg.Observer.Missed = func(time.Duration) { missed.Add(1) }
	for range processes {
		b := mustNew(t, s.Client(), cfg)
		if configure != nil {
			configure(b)
		}
		for range goroutines {
			wg.Go(func() {
				for left.Add(-1) >= 0 {
					if _, err := b.Wait(ctx); err != nil {
						t.Errorf("Wait: %v", err)
						return
					}
					now := time.Now()
					mu.Lock()
					run.grants = append(run.grants, now)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	slices.SortFunc(run.grants, func(a, b time.Time) int { return a.Compare(b) })
	run.missed = missed.Load()
	return run
}

// meanRate is the rate of the grants after the first burst grants: the
// steady part of a saturated schedule.
func meanRate(grants []time.Time, burst int) float64 {
	steady := grants[burst-1:]
	return float64(len(steady)-1) / steady[len(steady)-1].Sub(steady[0]).Seconds()
}

// Three processes of 20 goroutines at 200/s: the schedule the fleet follows
// keeps every one-second window within the limit, uses the whole budget,
// and costs one Redis command per call.
func TestFleetOnRealRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("6 s of real-time scheduling")
	}
	const (
		limit = 200
		calls = 1200
	)
	s := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	before, err := s.CommandStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	run := runFleet(t, s, Config{Limit: limit, Burst: 1}, 3, 20, calls, nil)
	after, err := s.CommandStats(ctx)
	if err != nil {
		t.Fatal(err)
	}

	if len(run.grants) != calls {
		t.Fatalf("%d grants, want %d", len(run.grants), calls)
	}
	worst, _ := versoritest.WorstWindow(run.grants, time.Second)
	mean := meanRate(run.grants, 1)
	scripts := after["evalsha"] + after["eval"] - before["evalsha"] - before["eval"]
	var total int64
	for name, n := range after {
		if name != "info" { // our own CommandStats calls
			total += n - before[name]
		}
	}
	t.Logf("commandstats delta: %v", delta(before, after))
	perCall := float64(scripts) / calls
	t.Logf("worst 1-s window %d = %.3f R; mean rate %.1f/s = %.3f R; %.3f script calls and %.3f commands per call; %d slots missed",
		worst, float64(worst)/limit, mean, mean/limit, perCall, float64(total)/calls, run.missed)

	// A closed 1-s window of a schedule with interval 1/R holds R+1 grants;
	// half-open, R. Allow the one grant the window boundary can add.
	if max := int(1.05*limit) + 1; worst > max {
		t.Errorf("worst 1-s window has %d grants, above 1.05 R + 1 = %d", worst, max)
	}
	if mean < 0.95*limit {
		t.Errorf("mean rate %.1f/s under 0.95 R", mean)
	}
	if perCall >= 1.5 {
		t.Errorf("%.2f script calls per grant, want about 1", perCall)
	}
}

// The trap design.md measured: the whole fleet stalls for 300 ms while its
// callers hold booked slots. Without the late guard they all fire when the
// fleet resumes; with it they book again and the schedule stays within R.
func TestFleetPauseOnRealRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("real-time scheduling")
	}
	const (
		limit = 200
		calls = 600
	)
	tests := []struct {
		name          string
		lateTolerance time.Duration
		guarded       bool
	}{
		{"guarded", 0, true},
		{"unguarded", time.Hour, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := redistest.Start(t, redistest.Options{})
			// Every caller whose slot falls in [pauseFrom, pauseTo) is held
			// until pauseTo, as a SIGSTOPped process would be.
			start := time.Now()
			pauseFrom, pauseTo := start.Add(time.Second), start.Add(1300*time.Millisecond)
			stall := func(ctx context.Context, d time.Duration) error {
				if err := sleepCtx(ctx, d); err != nil {
					return err
				}
				if now := time.Now(); !now.Before(pauseFrom) && now.Before(pauseTo) {
					return sleepCtx(ctx, pauseTo.Sub(now))
				}
				return nil
			}
			// Every goroutine may hold a booked slot, as before Lookahead
			// bounded them, so the trap has callers to bunch.
			cfg := Config{Limit: limit, Burst: 1, LateTolerance: tc.lateTolerance, Lookahead: time.Hour}
			run := runFleet(t, s, cfg, 3, 20, calls, func(b *Budget) { b.sleep = stall })

			worst, _ := versoritest.WorstWindow(run.grants, time.Second)
			t.Logf("worst 1-s window %d = %.3f R; %d slots missed", worst, float64(worst)/limit, run.missed)
			if tc.guarded {
				if max := int(1.05*limit) + 1; worst > max {
					t.Errorf("worst 1-s window has %d grants, above 1.05 R + 1 = %d", worst, max)
				}
				if run.missed == 0 {
					t.Errorf("no slot was missed: the pause did not happen")
				}
			} else if worst <= int(1.15*limit) {
				// Not a property of the package: a check that the scenario
				// reproduces the trap the guard exists for.
				t.Errorf("unguarded worst window %d = %.2f R: the pause did not bunch the callers", worst, float64(worst)/limit)
			}
		})
	}
}

// BenchmarkReserve is one booking on a real Redis: one script round trip.
func BenchmarkReserve(b *testing.B) {
	s := redistest.Start(b, redistest.Options{})
	budget, err := New(s.Client(), Config{Limit: MaxLimit, Burst: 1, MaxWait: 24 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := budget.Reserve(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(8) // many handlers per process share one client
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := budget.Reserve(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func delta(before, after map[string]int64) map[string]int64 {
	d := map[string]int64{}
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}
