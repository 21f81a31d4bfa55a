package e2e

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/import-worker/internal/e2etest"
	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/metrics"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
	"github.com/versori/import-worker/versori/versoritest"
)

// TestReliabilityKillWorker is fault 1: kill -9 one of three workers in the
// middle of a 3,000-organisation rollout. asynq's lease recovery hands the
// dead worker's tasks to the others after a minute or two; every
// organisation must end succeeded, and the organisations called again after
// their import (the fake answers 409) must be among the tasks the killed
// process held, so no more than them.
func TestReliabilityKillWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	t.Parallel()
	const (
		n           = 3000
		rate        = 200
		concurrency = 20
	)
	// Every call imports at once and answers 200 ms later, like an API that
	// finishes an import whose caller has gone: the worst case for calls cut
	// off by the kill, each of which the fake has already carried out.
	api := newChaosAPI(t, 1, []chaosRule{{P: 1, Fault: versoritest.Fault{Kind: versoritest.FaultSlowImport, Delay: 200 * time.Millisecond}}})
	f := newFleet(t, api, redistest.Options{})
	f.start(3, map[string]string{"IMPORT_RATE_LIMIT": "200", "WORKER_CONCURRENCY": strconv.Itoa(concurrency), "IMPORT_RATE_MAX_WAIT": "2s"})

	start := time.Now()
	f.enqueue("kill", n)
	f.waitSucceeded("kill", n/3, time.Minute)

	victim := f.workers[1]
	text, err := victim.Scrape()
	if err != nil {
		t.Fatal(err)
	}
	victim.Kill()
	killedAt := time.Now()
	tasksInFlight, ok1 := e2etest.MetricSum(text, metrics.NameTasksInFlight)
	callsInFlight, ok2 := e2etest.MetricSum(text, metrics.NameCallsInFlight)
	busy, ok3 := e2etest.MetricSum(text, metrics.NameHandlersBusy)
	if !ok1 || !ok2 || !ok3 {
		t.Fatalf("the victim's metrics lack %s, %s or %s", metrics.NameTasksInFlight, metrics.NameCallsInFlight, metrics.NameHandlersBusy)
	}
	_, atKill, _ := f.led.Rollout(context.Background(), "kill")
	orphans := orphanedTasks(t, f)

	c := f.waitDone("kill", 4*time.Minute)
	recovered := time.Since(killedAt)
	// The releaser rescues the orphaned tasks once their 30-s lease has run
	// out (it looks every 5 s); without it asynq's recoverer took 60-115 s.
	if recovered > 60*time.Second {
		t.Errorf("the rollout finished %.1fs after the kill, above 60 s: the orphaned tasks waited for asynq's lease recovery", recovered.Seconds())
	}
	rescued := scrapeMetric(t, f.workers[0], metrics.NameRescued) + scrapeMetric(t, f.workers[2], metrics.NameRescued)

	if c.Succeeded != n || c.Failed != 0 {
		t.Errorf("counts = %+v, want all %d succeeded", c, n)
	}
	if got := c.ByClass["imported"] + c.ByClass["already_present"]; got != n {
		t.Errorf("imported + already_present = %d, want %d (%v)", got, n, c.ByClass)
	}
	checkEveryOrgImportedOnce(t, api, n)
	twice := api.Conflicts()
	if twice > len(orphans) || len(orphans) > concurrency {
		t.Errorf("%d organisations were called again after an import had been done; the killed worker held %d tasks (at most %d)", twice, len(orphans), concurrency)
	}
	for org := range orgIDs(n) {
		if api.ConflictsOf(org) > 0 && !orphans[tasks.TaskID("kill", versori.OrgID(org))] {
			t.Errorf("organisation %s was called again after its import, but the killed worker did not hold its task", org)
		}
	}
	if int64(twice) != c.ByClass["already_present"] {
		t.Errorf("the fake answered %d conflicts, the ledger records %d already_present", twice, c.ByClass["already_present"])
	}
	if a := archived(t, f.redis.Client()); len(a) != 0 {
		t.Errorf("%d tasks archived, want 0; first: %+v", len(a), a[0])
	}
	f.workers = []*e2etest.Process{f.workers[0], f.workers[2]}
	f.workersAlive()
	figure(t, "%d orgs, 3 workers, R=%d: killed worker-1 at %d succeeded (%.1fs in) holding %d tasks (its /metrics just before: %v tasks in flight, %v API calls, %v handlers busy); "+
		"all %d succeeded %.1fs after the kill (%v orphaned tasks rescued), total %.1fs; orgs called twice (409): %d; imports per org: 1; archived: 0",
		n, rate, atKill.Succeeded, killedAt.Sub(start).Seconds(), len(orphans), tasksInFlight, callsInFlight, busy, n, recovered.Seconds(), rescued, time.Since(start).Seconds(), twice)
}

// orphanedTasks returns the IDs of the tasks a killed worker held: those
// asynq still lists as active in two snapshots 5 s apart. A live worker's
// task is done within a second or two (a 2 s budget wait at most, a 200 ms
// call); a dead worker's stays active until lease recovery, a minute later.
func orphanedTasks(t *testing.T, f *fleet) map[string]bool {
	t.Helper()
	in := asynq.NewInspectorFromRedisClient(f.redis.Client())
	snapshot := func() map[string]bool {
		ts, err := in.ListActiveTasks(tasks.DefaultQueue, asynq.PageSize(1000))
		if err != nil {
			t.Fatalf("list active tasks: %v", err)
		}
		ids := map[string]bool{}
		for _, ti := range ts {
			ids[ti.ID] = true
		}
		return ids
	}
	time.Sleep(5 * time.Second)
	a := snapshot()
	time.Sleep(5 * time.Second)
	both := map[string]bool{}
	for id := range snapshot() {
		if a[id] {
			both[id] = true
		}
	}
	return both
}

// TestReliabilitySIGTERMWithCallsInFlight is fault 4: SIGTERM to a worker
// with 50 calls in flight against an API that takes 2 s to answer. Every call
// finishes and is recorded, the process exits 0 within its shutdown timeout,
// and a worker started afterwards completes the rollout without importing
// any organisation twice.
func TestReliabilitySIGTERMWithCallsInFlight(t *testing.T) {
	stopWithCallsInFlight(t, syscall.SIGTERM, "SIGTERM")
}

// TestReliabilitySIGHUPWithCallsInFlight is fault 4 with SIGHUP, which a
// closed terminal or a supervisor's reload sends: the worker used to die of
// it at once (exit 129), cutting the calls in flight off; it must stop as
// gracefully as on SIGTERM.
func TestReliabilitySIGHUPWithCallsInFlight(t *testing.T) {
	stopWithCallsInFlight(t, syscall.SIGHUP, "SIGHUP")
}

// stopWithCallsInFlight sends sig to a worker with 50 calls in flight and
// checks the graceful stop of fault 4.
func stopWithCallsInFlight(t *testing.T, sig syscall.Signal, name string) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	t.Parallel()
	rollout := strings.ToLower(name)
	const (
		n       = 150
		workers = 50
	)
	api := versoritest.NewServer(versoritest.WithLatency(versoritest.Latency{Distribution: versoritest.Constant, Mean: 2 * time.Second}))
	f := newFleet(t, api, redistest.Options{})
	env := map[string]string{
		"WORKER_CONCURRENCY": "50", "IMPORT_RATE_LIMIT": "1000", "IMPORT_RATE_BURST": "100",
		"VERSORI_TIMEOUT": "5s", "IMPORT_RATE_MAX_WAIT": "2s", "LOG_LEVEL": "info",
	}
	const shutdownTimeout = 12 * time.Second // 2s + 5s + 5s, the default
	f.start(1, env)
	w := f.workers[0]
	f.enqueue(rollout, n)

	if !eventually(30*time.Second, func() bool { return api.TotalCalls()-api.Imports() >= workers }) {
		t.Fatalf("never %d calls in flight: %d calls, %d imports", workers, api.TotalCalls(), api.Imports())
	}
	inFlight := api.TotalCalls() - api.Imports()
	w.Signal(sig)
	signalled := time.Now()
	notReady := eventually(time.Second, func() bool { return httpStatus(w.Addr, "/readyz") == 503 })
	code := w.Wait(shutdownTimeout + 10*time.Second)
	took := time.Since(signalled)

	if code != 0 {
		t.Fatalf("exit code %d after %s, want 0 (took %s)", code, name, took)
	}
	if took >= shutdownTimeout {
		t.Errorf("the worker took %s to stop, longer than its shutdown timeout %s", took, shutdownTimeout)
	}
	if !notReady {
		t.Errorf("/readyz did not answer 503 while the worker was shutting down")
	}
	calls, imports := api.TotalCalls(), api.Imports()
	if calls != imports {
		t.Errorf("the API saw %d calls but completed %d imports: %d calls were cut off", calls, imports, calls-imports)
	}
	_, c, err := f.led.Rollout(context.Background(), rollout)
	if err != nil {
		t.Fatal(err)
	}
	if c.Succeeded != int64(imports) {
		t.Errorf("the ledger records %d succeeded, the API made %d imports: a finished call went unrecorded", c.Succeeded, imports)
	}
	if !strings.Contains(w.Logs(), "worker stopped") {
		t.Errorf("the worker did not log a clean stop:\n%s", w.Logs())
	}

	f.start(1, env)
	c = f.waitDone(rollout, 2*time.Minute)
	if c.Succeeded != n || c.Failed != 0 {
		t.Errorf("counts = %+v, want all %d succeeded", c, n)
	}
	if api.Conflicts() != 0 {
		t.Errorf("%d organisations were imported twice (409)", api.Conflicts())
	}
	checkEveryOrgImportedOnce(t, api, n)
	figure(t, "%s with %d calls in flight (API latency 2s, concurrency 50): exit 0 after %.1fs (shutdown timeout %s); %d calls made, %d completed and recorded before exit; "+
		"after a restart all %d succeeded, imported twice: %d",
		name, inFlight, took.Seconds(), shutdownTimeout, calls, imports, n, api.Conflicts())
}
