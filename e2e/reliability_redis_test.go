package e2e

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/metrics"
	"github.com/versori/import-worker/versori/versoritest"
)

// TestReliabilityRedisRestart is fault 2: Redis (append-only file on) is
// restarted in the middle of a rollout. The workers carry on without a
// restart of their own, nothing is lost, and the test reports how long the
// API saw no calls: a task whose outcome asynq could not write during the
// restart waits for lease recovery.
func TestReliabilityRedisRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	t.Parallel()
	const (
		n           = 1500
		rate        = 100
		workers     = 2
		concurrency = 20
	)
	api := versoritest.NewServer(versoritest.WithLatency(versoritest.Latency{Distribution: versoritest.Constant, Mean: 20 * time.Millisecond}))
	f := newFleet(t, api, redistest.Options{AppendOnly: true})
	f.start(workers, map[string]string{"IMPORT_RATE_LIMIT": "100", "WORKER_CONCURRENCY": strconv.Itoa(concurrency), "RETRY_BACKOFF_CAP": "2s"})
	pids := []int{f.workers[0].Cmd.Process.Pid, f.workers[1].Cmd.Process.Pid}

	start := time.Now()
	f.enqueue("restart", n)
	f.waitSucceeded("restart", n/3, time.Minute)
	_, before, _ := f.led.Rollout(context.Background(), "restart")
	runID := redisRunID(t, f)
	restartAt := time.Now()
	f.redis.Restart()
	down := time.Since(restartAt)
	if redisRunID(t, f) == runID {
		t.Fatal("Redis has the same run_id after the restart")
	}

	c := f.waitDone("restart", 4*time.Minute)
	if c.Succeeded != n || c.Failed != 0 {
		t.Errorf("counts = %+v, want all %d succeeded", c, n)
	}
	checkEveryOrgImportedOnce(t, api, n)
	if a := archived(t, f.redis.Client()); len(a) != 0 {
		t.Errorf("%d tasks archived, want 0; first: %+v", len(a), a[0])
	}
	f.workersAlive()
	for i, w := range f.workers {
		if w.Cmd.Process.Pid != pids[i] {
			t.Errorf("%s was restarted", w.Name)
		}
	}
	// A call whose result could not be written while Redis was away is made
	// again (the fake answers 409, recorded already_present); only a task a
	// worker held at the restart can be one.
	if api.Conflicts() > workers*concurrency {
		t.Errorf("%d organisations were called again after their import, more than the %d tasks the workers can hold", api.Conflicts(), workers*concurrency)
	}
	stall, at := callGapAfter(api, restartAt)
	figure(t, "%d orgs, 2 workers, R=%d: Redis restarted (AOF, appendfsync always) at %d succeeded, down %.2fs; longest pause in API calls after the restart %.2fs (from %.1fs after it; 1/R=%.2fs); "+
		"all %d succeeded in %.1fs; called again after an import whose result could not be recorded (409, recorded already_present): %d; imports per org: 1; archived: 0; workers not restarted",
		n, rate, before.Succeeded, down.Seconds(), stall.Seconds(), at.Sub(restartAt).Seconds(), 1.0/rate, n, time.Since(start).Seconds(), api.Conflicts())
}

// redisRunID is the server's run_id, which changes when it restarts.
func redisRunID(t *testing.T, f *fleet) string {
	t.Helper()
	info, err := f.redis.Client().Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			return v
		}
	}
	t.Fatal("INFO server has no run_id")
	return ""
}

// callGapAfter returns the longest pause between import calls that ends
// after at, and when it began.
func callGapAfter(api *versoritest.Server, at time.Time) (time.Duration, time.Time) {
	times := api.CallTimes()
	var gap time.Duration
	var from time.Time
	for i := 1; i < len(times); i++ {
		if d := times[i].Sub(times[i-1]); times[i].After(at) && d > gap {
			gap, from = d, times[i-1]
		}
	}
	return gap, from
}

// TestReliabilityRedisUnreachable is fault 3: Redis is unreachable for 20 s
// in the middle of a rollout. The workers neither exit nor archive anything,
// /readyz answers 503 while Redis is away and 200 once it is back, and the
// rollout completes.
func TestReliabilityRedisUnreachable(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	t.Parallel()
	const (
		n           = 1000
		rate        = 100
		outage      = 20 * time.Second
		workers     = 2
		concurrency = 20
	)
	api := versoritest.NewServer(versoritest.WithLatency(versoritest.Latency{Distribution: versoritest.Constant, Mean: 20 * time.Millisecond}))
	// The append-only file keeps the queue across the stop, as production
	// Redis must; what is tested is the workers' side of the outage.
	f := newFleet(t, api, redistest.Options{AppendOnly: true})
	f.start(workers, map[string]string{"IMPORT_RATE_LIMIT": "100", "WORKER_CONCURRENCY": strconv.Itoa(concurrency), "RETRY_BACKOFF_CAP": "2s"})

	start := time.Now()
	f.enqueue("outage", n)
	f.waitSucceeded("outage", n/4, time.Minute)
	_, before, _ := f.led.Rollout(context.Background(), "outage")
	// Every call the outage can make repeat is one that a worker had
	// already taken the task for: no task is handed out without Redis.
	var inFlight float64
	for _, w := range f.workers {
		inFlight += scrapeMetric(t, w, metrics.NameTasksInFlight)
	}
	f.redis.Stop()
	stoppedAt := time.Now()
	callsBefore := api.TotalCalls()

	// Watch /readyz of every worker through the outage.
	var mu sync.Mutex
	saw503 := make([]bool, workers)
	var wg sync.WaitGroup
	for i, w := range f.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(stoppedAt) < outage-time.Second {
				if httpStatus(w.Addr, "/readyz") == 503 {
					mu.Lock()
					saw503[i] = true
					mu.Unlock()
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	time.Sleep(time.Until(stoppedAt.Add(outage)))
	f.workersAlive()
	callsDuring := api.TotalCalls() - callsBefore
	f.redis.Resume()
	resumedAt := time.Now()

	for i, w := range f.workers {
		if !saw503[i] {
			t.Errorf("%s: /readyz never answered 503 while Redis was down", w.Name)
		}
		if !eventually(30*time.Second, func() bool { return httpStatus(w.Addr, "/readyz") == 200 }) {
			t.Errorf("%s: /readyz not 200 within 30s of Redis coming back", w.Name)
		}
	}
	ready := time.Since(resumedAt)

	c := f.waitDone("outage", 4*time.Minute)
	tail := time.Since(resumedAt)
	// The rest takes (n - before) / R, about 7.5 s; a task handed back to
	// asynq during the outage would wait ~100 s for lease recovery.
	if bound := time.Duration(float64(n-int(before.Succeeded))/rate*float64(time.Second)) + 15*time.Second; tail > bound {
		t.Errorf("the rollout finished %s after Redis returned, above %s: tasks were left to asynq's lease recovery", tail.Round(100*time.Millisecond), bound)
	}
	if c.Succeeded != n || c.Failed != 0 {
		t.Errorf("counts = %+v, want all %d succeeded", c, n)
	}
	checkEveryOrgImportedOnce(t, api, n)
	if a := archived(t, f.redis.Client()); len(a) != 0 {
		t.Errorf("%d tasks archived, want 0; first: %+v", len(a), a[0])
	}
	if api.Conflicts() > workers*concurrency {
		t.Errorf("%d organisations were called again after their import, more than the %d tasks the workers can hold", api.Conflicts(), workers*concurrency)
	}
	f.workersAlive()
	for _, w := range f.workers {
		if logs := w.Logs(); strings.Contains(logs, "panic") || strings.Contains(logs, "fatal") {
			t.Errorf("%s logged a panic or fatal error:\n%s", w.Name, logs)
		}
	}
	figure(t, "%d orgs, 2 workers, R=%d: Redis stopped for %s at %d succeeded; %v tasks in flight; API calls after Redis was down: %d; /readyz 503 during, 200 again %.1fs after Redis returned; "+
		"all %d succeeded %.1fs after it returned (total %.1fs); called again after an import whose result could not be recorded (409, recorded already_present): %d; imports per org: 1; archived: 0; workers exited: 0",
		n, rate, outage, before.Succeeded, inFlight, callsDuring, ready.Seconds(), n, tail.Seconds(), time.Since(start).Seconds(), api.Conflicts())
}
