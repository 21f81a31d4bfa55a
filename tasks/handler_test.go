package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/metrics"
	"github.com/versori/import-worker/ratebudget"
	"github.com/versori/import-worker/versori"
)

// stubAPI answers import calls from a script per organisation: each call
// takes the next answer, and the last one repeats.
type stubAPI struct {
	mu      sync.Mutex
	answers map[string][]error
	calls   map[string]int
}

func newStubAPI() *stubAPI {
	return &stubAPI{answers: map[string][]error{}, calls: map[string]int{}}
}

func (s *stubAPI) script(org string, answers ...error) { s.answers[org] = answers }

func (s *stubAPI) ImportPublicConnectorVersion(_ context.Context, orgID versori.OrgID, connectorID versori.ConnectorID, version string) (*versori.Connector, error) {
	org, connector := string(orgID), string(connectorID)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.calls[org]
	s.calls[org]++
	a := s.answers[org]
	var err error
	if len(a) > 0 {
		err = a[min(n, len(a)-1)]
	}
	if err != nil {
		return nil, err
	}
	return &versori.Connector{ID: connector, Versions: []versori.ConnectorVersion{{Name: "1.2.0"}}}, nil
}

func (s *stubAPI) callsOf(org string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[org]
}

func apiError(status int, retryAfter time.Duration) error {
	return &versori.Error{
		Op: "import", StatusCode: status, Code: "E", Message: http.StatusText(status),
		Class: versori.ClassForStatus(status), RetryAfter: retryAfter, HasRetryAfter: retryAfter > 0,
	}
}

// fakeBudget records cool-downs and can refuse slots.
type fakeBudget struct {
	mu        sync.Mutex
	coolDowns []time.Duration
	results   []ratebudget.Result
	refuse    int
	// breakerOpen makes Report say the fleet's breaker is open.
	breakerOpen bool
	// flows is the flow each Acquire booked for (ratebudget.FlowFrom).
	flows []bookedFlow
}

type bookedFlow struct {
	name   string
	weight float64
}

func (b *fakeBudget) Acquire(ctx context.Context) (ratebudget.Permit, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	name, weight := ratebudget.FlowFrom(ctx)
	b.flows = append(b.flows, bookedFlow{name, weight})
	if b.refuse > 0 {
		b.refuse--
		return ratebudget.Permit{}, &ratebudget.DelayError{RetryIn: 20 * time.Millisecond, Reason: "budget"}
	}
	return ratebudget.Permit{Waited: time.Millisecond}, nil
}

func (b *fakeBudget) Report(_ context.Context, _ ratebudget.Permit, r ratebudget.Result) (ratebudget.FleetState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.results = append(b.results, r)
	if r.Outcome == ratebudget.RateLimited && r.RetryAfter >= ratebudget.DefaultLongRetryAfter {
		b.coolDowns = append(b.coolDowns, r.RetryAfter)
	}
	state := ratebudget.BreakerClosed
	if b.breakerOpen {
		state = ratebudget.BreakerOpen
	}
	return ratebudget.FleetState{Breaker: state}, nil
}

type harness struct {
	t         *testing.T
	api       *stubAPI
	budget    *fakeBudget
	rdb       *redis.Client
	producer  *Producer
	ledger    *ledger.Ledger
	inspector *asynq.Inspector
	metrics   *metrics.Metrics
	rollout   Rollout
}

// newHarness runs the handler in a real asynq server on miniredis, with
// retries a few milliseconds apart.
func newHarness(t *testing.T, maxRetry int) *harness {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	h := &harness{
		t: t, api: newStubAPI(), budget: &fakeBudget{}, rdb: rdb,
		producer:  NewProducer(rdb, ProducerConfig{Task: TaskOptions{MaxRetry: maxRetry}}),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		metrics:   metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{}),
		rollout:   Rollout{ID: "r1", ConnectorID: testConnector, Version: "1.2.0"},
	}
	h.ledger = h.producer.Ledger()
	handler, err := NewHandler(HandlerConfig{
		Client: h.api, Budget: h.budget, Ledger: h.ledger, Metrics: h.metrics,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Pauser: h.inspector,
		RateLimitedDelay: 20 * time.Millisecond, UnauthorizedDelay: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              4,
		Queues:                   map[string]int{DefaultQueue: 1},
		IsFailure:                IsFailure,
		RetryDelayFunc:           Backoff{Base: 5 * time.Millisecond, Cap: 20 * time.Millisecond, Jitter: 5 * time.Millisecond}.RetryDelayFunc(),
		DelayedTaskCheckInterval: 20 * time.Millisecond,
		TaskCheckInterval:        20 * time.Millisecond,
		LogLevel:                 asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.Handle(TypeImport, handler)
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return h
}

func (h *harness) enqueue(orgs ...versori.OrgID) {
	h.t.Helper()
	if _, err := h.producer.EnqueueAll(context.Background(), h.rollout, slices.Values(orgs), nil); err != nil {
		h.t.Fatal(err)
	}
}

// waitFor polls cond until it holds or 15 s pass.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) record(org string) ledger.Record {
	h.t.Helper()
	r, err := h.ledger.Org(context.Background(), h.rollout.ID, versori.OrgID(org))
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

func (h *harness) waitSettled(org string) ledger.Record {
	h.t.Helper()
	h.waitFor("org "+org+" to settle", func() bool { return h.record(org).State != ledger.Pending })
	return h.record(org)
}

func (h *harness) archived() int {
	qi, err := h.inspector.GetQueueInfo(DefaultQueue)
	if err != nil {
		return 0
	}
	return qi.Archived
}

func org(n int) versori.OrgID { return versori.OrgID(fmt.Sprintf("01HZY%021d", n)) }

// TestHandlerOutcomeClasses drives every row of design.md's outcome-class
// table through a real asynq server and checks the ledger, the calls made
// and the task's fate.
func TestHandlerOutcomeClasses(t *testing.T) {
	for _, tc := range []struct {
		name      string
		answers   []error
		state     ledger.State
		class     string
		status    int
		calls     int
		archived  bool
		retryKind string
	}{
		{name: "imported", answers: nil, state: ledger.Succeeded, class: "imported", status: 200, calls: 1},
		{name: "already_present", answers: []error{apiError(409, 0)}, state: ledger.Succeeded, class: "already_present", status: 409, calls: 1},
		{name: "server_error then imported", answers: []error{apiError(503, 0), apiError(500, 0), nil}, state: ledger.Succeeded, class: "imported", status: 200, calls: 3, retryKind: "server_error"},
		{name: "timeout then imported", answers: []error{context.DeadlineExceeded, nil}, state: ledger.Succeeded, class: "imported", status: 200, calls: 2, retryKind: "timeout"},
		{name: "network then imported", answers: []error{errors.New("read: connection reset by peer"), nil}, state: ledger.Succeeded, class: "imported", status: 200, calls: 2, retryKind: "network"},
		{name: "exhausted", answers: []error{apiError(502, 0)}, state: ledger.Failed, class: "exhausted", status: 502, calls: 3, archived: true},
		{name: "forbidden", answers: []error{apiError(403, 0)}, state: ledger.Failed, class: "forbidden", status: 403, calls: 1, archived: true},
		{name: "not_found", answers: []error{apiError(404, 0)}, state: ledger.Failed, class: "not_found", status: 404, calls: 1, archived: true},
		{name: "invalid 400", answers: []error{apiError(400, 0)}, state: ledger.Failed, class: "invalid", status: 400, calls: 1, archived: true},
		{name: "invalid 422", answers: []error{apiError(422, 0)}, state: ledger.Failed, class: "invalid", status: 422, calls: 1, archived: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 2)
			h.api.script(string(org(1)), tc.answers...)
			h.enqueue(org(1))
			rec := h.waitSettled(string(org(1)))
			if rec.State != tc.state || rec.Class != tc.class || rec.HTTPStatus != tc.status {
				t.Fatalf("record = %+v, want state %s class %s status %d", rec, tc.state, tc.class, tc.status)
			}
			if rec.Attempts != tc.calls || h.api.callsOf(string(org(1))) != tc.calls {
				t.Fatalf("attempts %d, calls %d, want %d", rec.Attempts, h.api.callsOf(string(org(1))), tc.calls)
			}
			if tc.state == ledger.Failed && rec.Error == "" {
				t.Fatal("a failed record must keep the error message")
			}
			if tc.archived {
				h.waitFor("task archived", func() bool { return h.archived() == 1 })
			}
			if tc.retryKind != "" {
				if got := testutil.ToFloat64(h.metrics.Retries.WithLabelValues(tc.retryKind)); got != float64(tc.calls-1) {
					t.Fatalf("retries{%s} = %v, want %d", tc.retryKind, got, tc.calls-1)
				}
			}
			// The ledger write comes just before the metric: wait for it.
			finished := h.metrics.OrgsFinished.WithLabelValues(string(tc.state), tc.class)
			h.waitFor("orgs_finished", func() bool { return testutil.ToFloat64(finished) >= 1 })
			time.Sleep(20 * time.Millisecond)
			if got := testutil.ToFloat64(finished); got != 1 {
				t.Fatalf("orgs_finished{%s,%s} = %v, want 1", tc.state, tc.class, got)
			}
			// The attempts histogram sees the calls spent, counted by the
			// handler rather than read back from the ledger.
			var m dto.Metric
			if err := h.metrics.AttemptsPerOrg.Write(&m); err != nil {
				t.Fatal(err)
			}
			if hist := m.GetHistogram(); hist.GetSampleCount() != 1 || hist.GetSampleSum() != float64(tc.calls) {
				t.Fatalf("attempts_per_org: %d samples summing to %v, want 1 of %d", hist.GetSampleCount(), hist.GetSampleSum(), tc.calls)
			}
		})
	}
}

// TestRateLimitedUsesNoAttempt: five 429s in a row on a task allowed one
// retry still end in an import. Each 429 is reported to the budget with its
// Retry-After, which is the task's own wait: a short one pauses nobody else.
func TestRateLimitedUsesNoAttempt(t *testing.T) {
	h := newHarness(t, 1)
	r429 := apiError(429, 30*time.Millisecond)
	h.api.script(string(org(1)), r429, r429, r429, apiError(429, 0), r429, nil)
	h.budget.refuse = 3
	h.enqueue(org(1))
	rec := h.waitSettled(string(org(1)))
	if rec.State != ledger.Succeeded || rec.Class != "imported" {
		t.Fatalf("record = %+v", rec)
	}
	if got := h.api.callsOf(string(org(1))); got != 6 {
		t.Fatalf("calls = %d, want 6", got)
	}
	h.budget.mu.Lock()
	cool, results := slices.Clone(h.budget.coolDowns), slices.Clone(h.budget.results)
	h.budget.mu.Unlock()
	if len(cool) != 0 {
		t.Fatalf("cool-downs = %v, want none for a 30 ms Retry-After", cool)
	}
	var limited []time.Duration
	for _, r := range results {
		if r.Outcome == ratebudget.RateLimited {
			limited = append(limited, r.RetryAfter)
		}
	}
	if want := []time.Duration{30 * time.Millisecond, 30 * time.Millisecond, 30 * time.Millisecond, 0, 30 * time.Millisecond}; !slices.Equal(limited, want) {
		t.Fatalf("429s reported with Retry-After %v, want %v", limited, want)
	}
	if last := results[len(results)-1]; last.Outcome != ratebudget.Accepted {
		t.Fatalf("last report = %+v, want Accepted", last)
	}
	if got := testutil.ToFloat64(h.metrics.RateDeferred.WithLabelValues("budget")); got != 3 {
		t.Fatalf("deferred{budget} = %v, want 3", got)
	}
}

// TestUnauthorizedPausesQueue: a 401 pauses the queue and fails nobody; an
// operator's resume after the key is fixed completes the organisations.
func TestUnauthorizedPausesQueue(t *testing.T) {
	h := newHarness(t, 1)
	for i := 1; i <= 5; i++ {
		h.api.script(string(org(i)), apiError(401, 0))
	}
	h.enqueue(org(1), org(2), org(3), org(4), org(5))
	h.waitFor("queue paused", func() bool {
		qi, err := h.inspector.GetQueueInfo(DefaultQueue)
		return err == nil && qi.Paused
	})
	time.Sleep(200 * time.Millisecond)
	_, counts, err := h.ledger.Rollout(context.Background(), h.rollout.ID)
	if err != nil {
		t.Fatal(err)
	}
	if counts.Failed != 0 || counts.Pending != 5 {
		t.Fatalf("after 401: counts = %+v, want all 5 pending and none failed", counts)
	}
	if h.archived() != 0 {
		t.Fatal("a 401 must not archive tasks")
	}
	for i := 1; i <= 5; i++ {
		h.api.mu.Lock()
		h.api.answers[string(org(i))] = nil
		h.api.mu.Unlock()
	}
	if err := h.inspector.UnpauseQueue(DefaultQueue); err != nil {
		t.Fatal(err)
	}
	h.waitFor("rollout done after resume", func() bool {
		_, c, err := h.ledger.Rollout(context.Background(), h.rollout.ID)
		return err == nil && c.Succeeded == 5
	})
}

// TestPoisonTasksAreArchived: payloads other producers got wrong are
// archived with a reason, never retried, and the worker carries on.
func TestPoisonTasksAreArchived(t *testing.T) {
	h := newHarness(t, 3)
	client := asynq.NewClientFromRedisClient(h.rdb)
	for _, payload := range []string{
		"not json",
		`{"rollout_id":"r1","connector_id":"` + testConnector + `","version":"1"}`,
		`{"rollout_id":"r1","org_id":"../../etc/passwd","connector_id":"` + testConnector + `","version":"1"}`,
	} {
		if _, err := client.Enqueue(asynq.NewTask(TypeImport, []byte(payload)), asynq.Queue(DefaultQueue), asynq.MaxRetry(5)); err != nil {
			t.Fatal(err)
		}
	}
	h.enqueue(org(1))
	h.waitSettled(string(org(1)))
	h.waitFor("poison archived", func() bool { return h.archived() == 3 })
	tasks, err := h.inspector.ListArchivedTasks(DefaultQueue)
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range tasks {
		if ti.Retried != 0 || ti.LastErr == "" {
			t.Fatalf("archived task retried %d times, last error %q", ti.Retried, ti.LastErr)
		}
	}
	if got := testutil.ToFloat64(h.metrics.Skipped.WithLabelValues("poison")); got != 3 {
		t.Fatalf("skipped{poison} = %v", got)
	}
}

// TestRedeliveryIsSkipped: a task delivered again after its organisation
// succeeded makes no call and counts nothing twice.
func TestRedeliveryIsSkipped(t *testing.T) {
	h := newHarness(t, 3)
	h.enqueue(org(1))
	h.waitSettled(string(org(1)))
	task, err := NewImportTask(Payload{RolloutID: h.rollout.ID, OrgID: org(1), ConnectorID: testConnector, Version: "1.2.0"}, TaskOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The first task completed and left no trace in asynq, so the same ID
	// can be enqueued again: the handler must notice from the ledger.
	h.waitFor("redelivery enqueued", func() bool {
		_, err := asynq.NewClientFromRedisClient(h.rdb).Enqueue(task)
		return err == nil
	})
	h.waitFor("redelivery skipped", func() bool {
		return testutil.ToFloat64(h.metrics.Skipped.WithLabelValues("succeeded")) == 1
	})
	if h.api.callsOf(string(org(1))) != 1 {
		t.Fatalf("calls = %d, want 1", h.api.callsOf(string(org(1))))
	}
	if got := testutil.ToFloat64(h.metrics.OrgsFinished.WithLabelValues("succeeded", "imported")); got != 1 {
		t.Fatalf("orgs finished = %v, want 1", got)
	}
}

// TestForeignProducerTaskIsRecorded: a valid task enqueued without the
// producer API still lands in the ledger.
func TestForeignProducerTaskIsRecorded(t *testing.T) {
	h := newHarness(t, 3)
	task, err := NewImportTask(Payload{RolloutID: "foreign", OrgID: org(7), ConnectorID: testConnector, Version: "2.0"}, TaskOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := asynq.NewClientFromRedisClient(h.rdb).Enqueue(task); err != nil {
		t.Fatal(err)
	}
	h.waitFor("foreign org recorded", func() bool {
		r, err := h.ledger.Org(context.Background(), "foreign", org(7))
		return err == nil && r.State == ledger.Succeeded
	})
}

func TestNewHandlerRequiresDependencies(t *testing.T) {
	if _, err := NewHandler(HandlerConfig{}); err == nil {
		t.Fatal("NewHandler accepted an empty config")
	}
	_, err := NewHandler(HandlerConfig{
		Client: newStubAPI(), Ledger: (*ledger.Ledger)(nil), Metrics: metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{}),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err == nil || !strings.Contains(err.Error(), "Ledger") {
		t.Fatalf("NewHandler with a nil *ledger.Ledger: %v, want the Ledger named missing", err)
	}
}

// TestLogLinesNameTheTask: every line about a task is one JSON object with
// its rollout and organisation.
func TestLogLinesNameTheTask(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	var buf bytes.Buffer
	api := newStubAPI()
	api.script(string(org(1)), apiError(503, 0), apiError(429, time.Second), apiError(404, 0))
	p := NewProducer(rdb, ProducerConfig{})
	h, err := NewHandler(HandlerConfig{
		Client: api, Budget: &fakeBudget{}, Ledger: p.Ledger(), Metrics: metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{}),
		Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	task, err := NewImportTask(Payload{RolloutID: "r-log", OrgID: org(1), ConnectorID: testConnector, Version: "1"}, TaskOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_ = h.ProcessTask(context.Background(), task)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) < 3 {
		t.Fatalf("want a line per call, got %d:\n%s", len(lines), buf.String())
	}
	for _, line := range lines {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("not one JSON object a line: %q", line)
		}
		if ev["rollout"] != "r-log" || ev["org"] != string(org(1)) {
			t.Errorf("line without rollout and org: %s", line)
		}
	}
}

func TestRetryWriteWaitsForRedis(t *testing.T) {
	log := &taskLog{l: slog.New(slog.NewTextHandler(io.Discard, nil))}
	calls := 0
	err := retryWrite(context.Background(), time.Time{}, log, func() error {
		calls++
		if calls < 3 {
			return errors.New("dial tcp: connection refused")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("retryWrite = %v after %d calls, want success at the third", err, calls)
	}

	calls = 0
	err = retryWrite(context.Background(), time.Time{}, log, func() error { calls++; return ledger.ErrOrgNotFound })
	if !errors.Is(err, ledger.ErrOrgNotFound) || calls != 1 {
		t.Fatalf("a permanent ledger error must not be retried: %v after %d calls", err, calls)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Millisecond)
	defer cancel()
	err = retryWrite(ctx, time.Time{}, log, func() error { return errors.New("redis down") })
	if err == nil {
		t.Fatal("retryWrite must give up when its context ends")
	}

	// A deadline ends the retries as a context would, without a timer.
	calls = 0
	err = retryWrite(context.Background(), time.Now().Add(120*time.Millisecond), log, func() error { calls++; return errors.New("redis down") })
	if err == nil || calls > 4 {
		t.Fatalf("retryWrite with a 120-ms deadline = %v after %d calls; want it to give up after at most 4 (50 + 100 ms of backoff)", err, calls)
	}
}

// TestBroadFailuresUseNoAttempt: while the fleet's breaker is open, a 503
// says nothing about the organisation: with one retry allowed, three 503s
// still end in an import. Two 503s with the breaker closed use both
// attempts.
func TestBroadFailuresUseNoAttempt(t *testing.T) {
	h := newHarness(t, 1)
	h.budget.breakerOpen = true
	h.api.script(string(org(1)), apiError(503, 0), apiError(503, 0), apiError(503, 0), nil)
	h.enqueue(org(1))
	if rec := h.waitSettled(string(org(1))); rec.State != ledger.Succeeded {
		t.Fatalf("with the breaker open: %+v, want imported", rec)
	}
	if got := testutil.ToFloat64(h.metrics.RateDeferred.WithLabelValues(ratebudget.ReasonBreaker)); got != 3 {
		t.Fatalf("deferred{breaker} = %v, want 3", got)
	}

	h2 := newHarness(t, 1)
	h2.api.script(string(org(2)), apiError(503, 0), apiError(503, 0), nil)
	h2.enqueue(org(2))
	if rec := h2.waitSettled(string(org(2))); rec.State != ledger.Failed || rec.Class != string(versori.ClassExhausted) {
		t.Fatalf("with the breaker closed: %+v, want exhausted", rec)
	}
}

// TestBreakerRefusalHoldsTheTask: a booking refused by the breaker hands
// the task back without an attempt or a call.
func TestBreakerRefusalHoldsTheTask(t *testing.T) {
	b := &breakerRefusing{}
	api := newStubAPI()
	handler := budgetHandler(t, api, b)
	task, err := NewImportTask(Payload{RolloutID: "r1", OrgID: org(1), ConnectorID: testConnector, Version: "1"}, TaskOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = handler.ProcessTask(context.Background(), task)
	var later *RetryLaterError
	if !errors.As(err, &later) || later.Delay != 3*time.Second || later.Class != versori.ClassServerError || IsFailure(err) {
		t.Fatalf("ProcessTask = %v, want a RetryLaterError of 3s (server_error) that is no failure", err)
	}
	if got := api.callsOf(string(org(1))); got != 0 {
		t.Fatalf("%d calls made with the breaker open", got)
	}
}

type breakerRefusing struct{}

func (breakerRefusing) Acquire(context.Context) (ratebudget.Permit, error) {
	return ratebudget.Permit{}, &ratebudget.DelayError{RetryIn: 3 * time.Second, Reason: ratebudget.ReasonBreaker}
}

func (breakerRefusing) Report(context.Context, ratebudget.Permit, ratebudget.Result) (ratebudget.FleetState, error) {
	return ratebudget.FleetState{Breaker: ratebudget.BreakerOpen}, nil
}

// A ledger write refused for a bad class or outcome is not retried for
// 30 s as if Redis were away: waiting cannot cure it.
func TestRetryWriteStopsOnPermanentErrors(t *testing.T) {
	for _, want := range []error{ledger.ErrInvalidID, ledger.ErrInvalidClass, ledger.ErrInvalidOutcome, ledger.ErrOrgNotFound, ledger.ErrRolloutNotFound} {
		calls := 0
		err := retryWrite(context.Background(), time.Time{}, &taskLog{l: slog.New(slog.NewTextHandler(io.Discard, nil))}, func() error {
			calls++
			return fmt.Errorf("finish: %w", want)
		})
		if !errors.Is(err, want) || calls != 1 {
			t.Errorf("%v: retryWrite = %v after %d calls, want it at once after 1", want, err, calls)
		}
	}
}

// The handler books each task's slot as part of its rollout's flow, with
// the rollout's weight (0 meaning 1), so the budget can share the
// process's turns among rollouts by weight.
func TestHandlerBooksAsTheRolloutsFlow(t *testing.T) {
	b := &fakeBudget{}
	api := newStubAPI()
	handler := budgetHandler(t, api, b)
	for i, pl := range []Payload{
		{RolloutID: "big", OrgID: org(1), ConnectorID: testConnector, Version: "1", Weight: 3},
		{RolloutID: "small", OrgID: org(2), ConnectorID: testConnector, Version: "1"},
		{RolloutID: "tiny", OrgID: org(3), ConnectorID: testConnector, Version: "1", Weight: 0.25},
	} {
		task, err := NewImportTask(pl, TaskOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := handler.ProcessTask(context.Background(), task); err != nil {
			t.Fatalf("task %d: %v", i, err)
		}
	}
	want := []bookedFlow{{"big", 3}, {"small", 1}, {"tiny", 0.25}}
	if !slices.Equal(b.flows, want) {
		t.Errorf("the budget saw flows %v, want %v", b.flows, want)
	}
}

// judgingBudget is a budget whose verdict on a failure is fixed.
type judgingBudget struct {
	fakeBudget
	broad  bool
	judged int
}

func (b *judgingBudget) FailureVerdict(context.Context) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.judged++
	return b.broad, nil
}

// TestFailureVerdictDecidesTheAttempt: a 5xx while the breaker is still
// closed uses no attempt when the budget's verdict says the API fails
// broadly (the calls that trip the breaker), and uses one when it says
// the failure was this call's own.
func TestFailureVerdictDecidesTheAttempt(t *testing.T) {
	for _, broad := range []bool{true, false} {
		b := &judgingBudget{broad: broad}
		api := newStubAPI()
		api.script(string(org(1)), apiError(503, 0))
		handler := budgetHandler(t, api, b)
		task, err := NewImportTask(Payload{RolloutID: "r1", OrgID: org(1), ConnectorID: testConnector, Version: "1"}, TaskOptions{})
		if err != nil {
			t.Fatal(err)
		}
		err = handler.ProcessTask(context.Background(), task)
		if b.judged != 1 {
			t.Fatalf("broad=%v: the verdict was asked %d times, want once", broad, b.judged)
		}
		if got := IsFailure(err); got == broad {
			t.Fatalf("broad=%v: ProcessTask = %v, IsFailure %v; want an attempt used only when the failure was not broad", broad, err, got)
		}
	}
}

// budgetHandler is a handler on a miniredis ledger with api and the budget b.
func budgetHandler(t *testing.T, api Importer, b RateBudget) *Handler {
	t.Helper()
	p := NewProducer(redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()}), ProducerConfig{})
	h, err := NewHandler(HandlerConfig{
		Client: api, Budget: b, Ledger: p.Ledger(), Metrics: metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{}),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}
