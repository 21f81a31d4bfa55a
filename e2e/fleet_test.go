package e2e

import (
	"context"
	"fmt"
	"iter"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"

	"github.com/versori/import-worker/internal/e2etest"
	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
	"github.com/versori/import-worker/versori/versoritest"
)

const connectorID = "01HZY0000000000000000C0NN0"

// orgIDs yields n distinct organisation ULIDs.
func orgIDs(n int) iter.Seq[string] {
	return func(yield func(string) bool) {
		for i := range n {
			id := ulid.ULID{}
			id[0] = 0x01
			id[12], id[13], id[14], id[15] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
			if !yield(id.String()) {
				return
			}
		}
	}
}

// parsedIDs is orgIDs parsed, as a producer takes them.
func parsedIDs(n int) iter.Seq[versori.OrgID] {
	return func(yield func(versori.OrgID) bool) {
		for s := range orgIDs(n) {
			if !yield(versori.MustParseOrgID(s)) {
				return
			}
		}
	}
}

// fleet is a Redis, a fake API and a set of worker processes.
type fleet struct {
	t       *testing.T
	redis   *redistest.Server
	api     *versoritest.Server
	workers []*e2etest.Process
	led     *ledger.Ledger
	prod    *tasks.Producer
}

func newFleet(t *testing.T, api *versoritest.Server, redisOpts redistest.Options) *fleet {
	t.Helper()
	r := redistest.Start(t, redisOpts)
	t.Cleanup(api.Close)
	rdb := r.Client()
	p := tasks.NewProducer(rdb, tasks.ProducerConfig{})
	return &fleet{t: t, redis: r, api: api, led: p.Ledger(), prod: p}
}

// start starts n workers with the common environment plus extra.
func (f *fleet) start(n int, extra map[string]string) {
	f.t.Helper()
	bin := e2etest.Bin(f.t, "worker")
	for range n {
		env := map[string]string{
			"REDIS_URL":        f.redis.URL(),
			"VERSORI_BASE_URL": f.api.URL,
			"VERSORI_API_KEY":  f.api.APIKey(),
			"LOG_LEVEL":        "warn",
		}
		for k, v := range extra {
			env[k] = v
		}
		f.workers = append(f.workers, e2etest.StartWorker(f.t, e2etest.WorkerOptions{Bin: bin, Env: env, Name: fmt.Sprintf("worker-%d", len(f.workers))}))
	}
}

func (f *fleet) enqueue(rolloutID string, n int) {
	f.t.Helper()
	r := tasks.Rollout{ID: rolloutID, ConnectorID: connectorID, Version: "1.0.0"}
	s, err := f.prod.EnqueueAll(context.Background(), r, parsedIDs(n), nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if s.Enqueued != n {
		f.t.Fatalf("enqueued %d of %d", s.Enqueued, n)
	}
}

// waitDone waits until nothing of the rollout is pending and returns its
// counts.
func (f *fleet) waitDone(rolloutID string, timeout time.Duration) ledger.Counts {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, c, err := f.led.Rollout(context.Background(), rolloutID)
		if err == nil && c.Done() {
			return c
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("rollout %s not done after %s: %+v (err %v)", rolloutID, timeout, c, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// figure prints a measured figure so that `make test` shows it.
func figure(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("FIGURE %s: %s", t.Name(), fmt.Sprintf(format, args...))
}

// TestFleetSharesOneRateLimit is issue 3's figure: three worker processes,
// IMPORT_RATE_LIMIT=50, 1,500 organisations, a fake API with 20 ms latency.
func TestFleetSharesOneRateLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	const (
		n    = 1500
		rate = 50
	)
	api := versoritest.NewServer(versoritest.WithLatency(versoritest.Latency{Distribution: versoritest.Constant, Mean: 20 * time.Millisecond}))
	f := newFleet(t, api, redistest.Options{})
	f.start(3, map[string]string{"IMPORT_RATE_LIMIT": fmt.Sprint(rate), "WORKER_CONCURRENCY": "20"})
	mon := f.redis.Monitor(t)

	start := time.Now()
	f.enqueue("fleet", n)
	c := f.waitDone("fleet", 3*time.Minute)
	wall := time.Since(start)
	mon.Stop()

	if c.Succeeded != n || c.ByClass["imported"] != n {
		t.Fatalf("counts = %+v, want all %d imported", c, n)
	}
	st := api.Stats()
	if api.Imports() != n || api.Conflicts() != 0 {
		t.Fatalf("fake API: %d imports, %d conflicts; want %d and 0", api.Imports(), api.Conflicts(), n)
	}
	maxWindow := api.MaxCallsInWindow(time.Second)
	ideal := time.Duration(float64(n) / rate * float64(time.Second))
	budgetCmds := mon.Count(func(cmd string) bool {
		return (strings.HasPrefix(cmd, `"evalsha"`) || strings.HasPrefix(cmd, `"eval"`)) && strings.Contains(cmd, `"versori-import:ratebudget:`)
	})
	perCall := float64(budgetCmds) / float64(api.TotalCalls())
	times := api.CallTimes()
	span := times[len(times)-1].Sub(times[0])
	figure(t, "calls=%d max calls in any 1s window=%d (%.3f x R, limit 1.05); budget commands per call=%.3f; first-to-last call %.1fs, wall incl. start-up %.1fs vs N/R=%.0fs (%.3f x, limit 1.10); stats %+v",
		api.TotalCalls(), maxWindow, float64(maxWindow)/rate, perCall, span.Seconds(), wall.Seconds(), ideal.Seconds(), span.Seconds()/ideal.Seconds(), st)
	if float64(maxWindow) > 1.05*rate {
		t.Errorf("the API saw %d calls in one second, more than 1.05 x %d", maxWindow, rate)
	}
	if perCall > 1.2 {
		t.Errorf("the rate budget spent %.2f Redis commands per call, want about 1", perCall)
	}
	if span > ideal*110/100 {
		t.Errorf("the calls took %s, more than 1.10 x N/R = %s", span, ideal*110/100)
	}
}

// TestFleetSurvivesErrorsAndRateLimits: 10% of calls answer 503 and 5%
// answer 429 with Retry-After: 1; every organisation still ends imported,
// none is imported twice, no attempt is used up by a 429.
func TestFleetSurvivesErrorsAndRateLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	const n = 600
	api := versoritest.NewServer(
		versoritest.WithLatency(versoritest.Latency{Distribution: versoritest.Constant, Mean: 20 * time.Millisecond}),
		versoritest.WithFaultRates(map[versoritest.FaultKind]float64{
			versoritest.FaultServerError: 0.10,
			versoritest.FaultRateLimited: 0.05,
		}),
	)
	f := newFleet(t, api, redistest.Options{})
	f.start(3, map[string]string{"IMPORT_RATE_LIMIT": "50", "WORKER_CONCURRENCY": "20", "RETRY_BACKOFF_CAP": "5s"})
	start := time.Now()
	f.enqueue("chaos", n)
	c := f.waitDone("chaos", 4*time.Minute)
	if c.Succeeded != n || c.Failed != 0 {
		t.Fatalf("counts = %+v, want all %d succeeded", c, n)
	}
	if api.Imports() != n {
		t.Fatalf("fake API performed %d imports for %d organisations", api.Imports(), n)
	}
	figure(t, "%d orgs in %.1fs: %d calls, %d x 503/500, %d x 429, %d conflicts (409 after an ambiguous failure), classes %v",
		n, time.Since(start).Seconds(), api.TotalCalls(), api.FaultsInjected(versoritest.FaultServerError),
		api.FaultsInjected(versoritest.FaultRateLimited), api.Conflicts(), c.ByClass)
}

// TestFleetFollowsTheAPIsLimit: the API allows 10 calls/s while the fleet
// is configured for 50. The 429s and their Retry-After slow the whole fleet
// to what the API allows; no attempt is used up and nothing is archived.
func TestFleetFollowsTheAPIsLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	const (
		n        = 120
		apiLimit = 10
	)
	api := versoritest.NewServer(versoritest.WithLatency(versoritest.Latency{Distribution: versoritest.Constant, Mean: 20 * time.Millisecond}))
	api.SetRateLimit(apiLimit, 2)
	f := newFleet(t, api, redistest.Options{})
	f.start(2, map[string]string{"IMPORT_RATE_LIMIT": "50", "WORKER_CONCURRENCY": "20"})
	f.enqueue("api-limit", n)
	c := f.waitDone("api-limit", 3*time.Minute)
	if c.Succeeded != n || c.Failed != 0 {
		t.Fatalf("counts = %+v, want all %d succeeded", c, n)
	}
	if api.Imports() != n {
		t.Fatalf("fake API performed %d imports for %d organisations", api.Imports(), n)
	}
	qi, err := asynqInspector(f).GetQueueInfo(tasks.DefaultQueue)
	if err != nil {
		t.Fatal(err)
	}
	if qi.Archived != 0 || qi.Retry != 0 {
		t.Fatalf("queue after the run: %d archived, %d retrying", qi.Archived, qi.Retry)
	}
	times := api.CallTimes()
	span := times[len(times)-1].Sub(times[0]).Seconds()
	accepted := float64(api.StatusCount(200)) / span
	refused := api.StatusCount(429)
	figure(t, "API limit %d/s, fleet limit 50/s: %d calls in %.1fs, %.2f accepted/s, %d answered 429 (%.0f%% of calls)",
		apiLimit, api.TotalCalls(), span, accepted, refused, 100*float64(refused)/float64(api.TotalCalls()))
	if accepted > apiLimit*1.1 {
		t.Errorf("accepted %.2f calls/s, above the API's %d", accepted, apiLimit)
	}
	if refused > api.TotalCalls()/2 {
		t.Errorf("%d of %d calls were refused: the fleet did not slow down to the API's limit", refused, api.TotalCalls())
	}
}

func asynqInspector(f *fleet) *asynq.Inspector {
	return asynq.NewInspectorFromRedisClient(f.redis.Client())
}
