package tasks_test

import (
	"context"
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

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/metrics"
	"github.com/versori/import-worker/ratebudget"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/tasks/taskstest"
	"github.com/versori/import-worker/versori"
)

const (
	tableRollout   = "r-table"
	tableOrg       = "01HZY00000000000000000000A"
	tableConnector = "01HZY00000000000000000000C"
)

// fakeImporter answers every call with err (an import of 1.2.0 when nil)
// and remembers the calls.
type fakeImporter struct {
	err   error
	mu    sync.Mutex
	calls []string
}

func (f *fakeImporter) ImportPublicConnectorVersion(_ context.Context, orgID versori.OrgID, connectorID versori.ConnectorID, version string) (*versori.Connector, error) {
	org, connector := string(orgID), string(connectorID)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, org+" "+connector+" "+version)
	if f.err != nil {
		return nil, f.err
	}
	return &versori.Connector{ID: connector, Versions: []versori.ConnectorVersion{{Name: "1.2.0"}}}, nil
}

// fakePauser remembers the queues it paused.
type fakePauser struct{ paused []string }

func (p *fakePauser) PauseQueue(q string) error { p.paused = append(p.paused, q); return nil }

// openBreaker grants every slot and reports the fleet's breaker open.
type openBreaker struct{}

func (openBreaker) Acquire(context.Context) (ratebudget.Permit, error) {
	return ratebudget.Permit{}, nil
}

func (openBreaker) Report(context.Context, ratebudget.Permit, ratebudget.Result) (ratebudget.FleetState, error) {
	return ratebudget.FleetState{Breaker: ratebudget.BreakerOpen}, nil
}

// tableAPIError is an answer of the API with its own code and message.
func tableAPIError(status int, retryAfter time.Duration) error {
	return &versori.Error{
		Op: "import", StatusCode: status, Code: "E" + http.StatusText(status)[:1], Message: "the API says " + http.StatusText(status),
		Class: versori.ClassForStatus(status), RetryAfter: retryAfter, HasRetryAfter: retryAfter > 0,
	}
}

var tableDef = ledger.Rollout{ID: tableRollout, ConnectorID: tableConnector, Version: "1.2.0"}

// TestOutcomeTable drives each row of design.md's outcome-class table
// through the handler once, without Redis or an asynq server: an in-memory
// ledger, a fake API, and taskstest.Run on a chosen attempt. It checks what
// the server would do with the answer, the ledger calls and record, and the
// API calls made.
func TestOutcomeTable(t *testing.T) {
	pending := ledger.Record{OrgID: tableOrg, State: ledger.Pending}
	for _, tc := range []struct {
		name   string
		answer error
		// seed, if set, is the organisation's record before the run; nil
		// means a rollout and organisation not yet in the ledger.
		seed     *ledger.Record
		task     *asynq.Task // instead of the payload
		budget   tasks.RateBudget
		attempt  [2]int // retried, maxRetry; zero means the first of 10
		failOrg  error  // the ledger's Org fails with it
		kind     taskstest.Kind
		delay    time.Duration // of a RetryLater
		class    versori.Class // of a RetryLater
		methods  []string      // ledger calls
		apiCalls int
		paused   bool
		// the record afterwards (state "" means none)
		state    ledger.State
		recClass string
		status   int
		attempts int
		errHas   string
	}{
		{name: "200 imported", seed: &pending, kind: taskstest.Done, methods: []string{"Org", "Finish"}, apiCalls: 1,
			state: ledger.Succeeded, recClass: "imported", status: 200, attempts: 1},
		{name: "409 already_present", answer: tableAPIError(409, 0), seed: &pending, kind: taskstest.Done, methods: []string{"Org", "Finish"}, apiCalls: 1,
			state: ledger.Succeeded, recClass: "already_present", status: 409, attempts: 1},
		{name: "429 with Retry-After", answer: tableAPIError(429, 7*time.Second), seed: &pending, attempt: [2]int{3, 3},
			kind: taskstest.RetryLater, delay: 7 * time.Second, class: versori.ClassRateLimited, methods: []string{"Org", "Attempt"}, apiCalls: 1,
			state: ledger.Pending, recClass: "rate_limited", status: 429, attempts: 1, errHas: "the API says Too Many Requests"},
		{name: "429 without Retry-After", answer: tableAPIError(429, 0), seed: &pending,
			kind: taskstest.RetryLater, delay: 1500 * time.Millisecond, class: versori.ClassRateLimited, methods: []string{"Org", "Attempt"}, apiCalls: 1,
			state: ledger.Pending, recClass: "rate_limited", status: 429, attempts: 1},
		{name: "500 retry", answer: tableAPIError(500, 0), seed: &pending, kind: taskstest.Retry, methods: []string{"Org", "Attempt"}, apiCalls: 1,
			state: ledger.Pending, recClass: "server_error", status: 500, attempts: 1},
		{name: "502 retry", answer: tableAPIError(502, 0), seed: &pending, attempt: [2]int{1, 3}, kind: taskstest.Retry, methods: []string{"Org", "Attempt"}, apiCalls: 1,
			state: ledger.Pending, recClass: "server_error", status: 502, attempts: 1},
		{name: "503 retry", answer: tableAPIError(503, 0), seed: &pending, kind: taskstest.Retry, methods: []string{"Org", "Attempt"}, apiCalls: 1,
			state: ledger.Pending, recClass: "server_error", status: 503, attempts: 1},
		{name: "timeout retry", answer: context.DeadlineExceeded, seed: &pending, kind: taskstest.Retry, methods: []string{"Org", "Attempt"}, apiCalls: 1,
			state: ledger.Pending, recClass: "timeout", attempts: 1},
		{name: "network retry", answer: errors.New("read: connection reset by peer"), seed: &pending, kind: taskstest.Retry, methods: []string{"Org", "Attempt"}, apiCalls: 1,
			state: ledger.Pending, recClass: "network", attempts: 1, errHas: "connection reset"},
		{name: "503 with the breaker open uses no attempt", answer: tableAPIError(503, 0), seed: &pending, budget: openBreaker{}, attempt: [2]int{2, 2},
			kind: taskstest.RetryLater, delay: time.Second, class: versori.ClassServerError, methods: []string{"Org", "Attempt"}, apiCalls: 1,
			state: ledger.Pending, recClass: "server_error", status: 503, attempts: 1},
		{name: "401 pauses", answer: tableAPIError(401, 0), seed: &pending, attempt: [2]int{3, 3},
			kind: taskstest.RetryLater, delay: 45 * time.Second, class: versori.ClassUnauthorized, methods: []string{"Org", "Attempt"}, apiCalls: 1, paused: true,
			state: ledger.Pending, recClass: "unauthorized", status: 401, attempts: 1},
		{name: "403 forbidden", answer: tableAPIError(403, 0), seed: &pending, kind: taskstest.Archived, methods: []string{"Org", "Finish"}, apiCalls: 1,
			state: ledger.Failed, recClass: "forbidden", status: 403, attempts: 1, errHas: "EF: the API says Forbidden"},
		{name: "404 not_found", answer: tableAPIError(404, 0), seed: &pending, kind: taskstest.Archived, methods: []string{"Org", "Finish"}, apiCalls: 1,
			state: ledger.Failed, recClass: "not_found", status: 404, attempts: 1, errHas: "EN: the API says Not Found"},
		{name: "400 invalid", answer: tableAPIError(400, 0), seed: &pending, kind: taskstest.Archived, methods: []string{"Org", "Finish"}, apiCalls: 1,
			state: ledger.Failed, recClass: "invalid", status: 400, attempts: 1, errHas: "EB: the API says Bad Request"},
		{name: "422 invalid", answer: tableAPIError(422, 0), seed: &pending, kind: taskstest.Archived, methods: []string{"Org", "Finish"}, apiCalls: 1,
			state: ledger.Failed, recClass: "invalid", status: 422, attempts: 1, errHas: "EU: the API says Unprocessable Entity"},
		{name: "503 on the last attempt exhausted", answer: tableAPIError(503, 0), seed: &ledger.Record{OrgID: tableOrg, State: ledger.Pending, Attempts: 2}, attempt: [2]int{2, 2},
			kind: taskstest.Archived, methods: []string{"Org", "Finish"}, apiCalls: 1,
			state: ledger.Failed, recClass: "exhausted", status: 503, attempts: 3, errHas: "3 attempts failed, last server_error"},
		{name: "redelivered after success skipped", seed: &ledger.Record{OrgID: tableOrg, State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, Attempts: 1},
			kind: taskstest.Done, methods: []string{"Org"}, apiCalls: 0,
			state: ledger.Succeeded, recClass: "imported", status: 200, attempts: 1},
		{name: "cancelled skipped", seed: &ledger.Record{OrgID: tableOrg, State: ledger.Cancelled},
			kind: taskstest.Done, methods: []string{"Org"}, apiCalls: 0, state: ledger.Cancelled},
		{name: "foreign producer's task registered then imported", kind: taskstest.Done,
			methods: []string{"Org", "CreateRollout", "AddOrgs", "Org", "Finish"}, apiCalls: 1,
			state: ledger.Succeeded, recClass: "imported", status: 200, attempts: 1},
		{name: "ledger unavailable retry", seed: &pending, failOrg: errors.New("dial tcp: connection refused"),
			kind: taskstest.Retry, methods: []string{"Org"}, apiCalls: 0, state: ledger.Pending},
		{name: "poison payload", task: asynq.NewTask(tasks.TypeImport, []byte(`{"rollout_id":"r1","org_id":"../../etc/passwd"}`)),
			kind: taskstest.Archived, methods: []string{}, apiCalls: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			led := taskstest.NewLedger()
			if tc.seed != nil {
				led.Put(tableDef, *tc.seed)
			}
			if tc.failOrg != nil {
				led.Fail = func(method, _ string, _ versori.OrgID) error {
					if method == "Org" {
						return tc.failOrg
					}
					return nil
				}
			}
			api := &fakeImporter{err: tc.answer}
			pauser := &fakePauser{}
			h, err := tasks.NewHandler(tasks.HandlerConfig{
				Client: api, Budget: tc.budget, Ledger: led, Pauser: pauser,
				Metrics:          metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{}),
				Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
				RateLimitedDelay: 1500 * time.Millisecond, UnauthorizedDelay: 45 * time.Second,
				// One try: waiting for Redis has its own test.
				RedisWait: time.Nanosecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			var opts []taskstest.Option
			if tc.attempt != [2]int{} {
				opts = append(opts, taskstest.WithAttempt(tc.attempt[0], tc.attempt[1]))
			}
			var res taskstest.Result
			if tc.task != nil {
				res, err = taskstest.RunTask(context.Background(), h, tc.task, opts...)
			} else {
				res, err = taskstest.Run(context.Background(), h, tasks.Payload{RolloutID: tableRollout, OrgID: tableOrg, ConnectorID: tableConnector, Version: "1.2.0"}, opts...)
			}
			if err != nil {
				t.Fatal(err)
			}

			if res.Kind != tc.kind {
				t.Fatalf("kind = %s (%v), want %s", res.Kind, res.Err, tc.kind)
			}
			switch tc.kind {
			case taskstest.Done:
				if res.Err != nil {
					t.Fatalf("done with an error: %v", res.Err)
				}
			case taskstest.RetryLater:
				var later *tasks.RetryLaterError
				if !errors.As(res.Err, &later) || tasks.IsFailure(res.Err) {
					t.Fatalf("err = %v, want a RetryLaterError that is no failure", res.Err)
				}
				if res.Delay != tc.delay || res.Class != tc.class || later.Delay != tc.delay {
					t.Fatalf("retry later in %s (%s), want %s (%s)", res.Delay, res.Class, tc.delay, tc.class)
				}
			case taskstest.Retry:
				if res.Err == nil || !tasks.IsFailure(res.Err) || errors.Is(res.Err, asynq.SkipRetry) {
					t.Fatalf("err = %v, want a failure asynq retries", res.Err)
				}
			case taskstest.Archived:
				if !errors.Is(res.Err, asynq.SkipRetry) || !tasks.IsFailure(res.Err) {
					t.Fatalf("err = %v, want one wrapping asynq.SkipRetry", res.Err)
				}
			}

			if got := led.Methods(); !slices.Equal(got, tc.methods) && !(len(got) == 0 && len(tc.methods) == 0) {
				t.Fatalf("ledger calls = %v, want %v", got, tc.methods)
			}
			if got := len(api.calls); got != tc.apiCalls {
				t.Fatalf("API calls = %d (%v), want %d", got, api.calls, tc.apiCalls)
			}
			if tc.apiCalls > 0 && api.calls[0] != tableOrg+" "+tableConnector+" 1.2.0" {
				t.Fatalf("API called with %q", api.calls[0])
			}
			if tc.paused != (len(pauser.paused) > 0) || (tc.paused && pauser.paused[0] != tasks.DefaultQueue) {
				t.Fatalf("paused = %v, want paused %v", pauser.paused, tc.paused)
			}

			rec, ok := led.Record(tableRollout, tableOrg)
			if tc.state == "" {
				if ok {
					t.Fatalf("record %+v, want none", rec)
				}
				return
			}
			if !ok {
				t.Fatal("no record")
			}
			if rec.State != tc.state || rec.Class != tc.recClass || rec.HTTPStatus != tc.status || rec.Attempts != tc.attempts {
				t.Fatalf("record = %+v, want state %s class %q status %d attempts %d", rec, tc.state, tc.recClass, tc.status, tc.attempts)
			}
			if !strings.Contains(rec.Error, tc.errHas) {
				t.Fatalf("record error %q, want it to hold %q", rec.Error, tc.errHas)
			}
			if tc.state == ledger.Failed && rec.Error == "" {
				t.Fatal("a failed record must keep the error message")
			}
			// The API answered with the rollout's own connector: the
			// record leaves it out (see ledger.Record.ConnectorID).
			if tc.status == 200 && tc.apiCalls > 0 && (rec.ConnectorID != "" || rec.Version != "1.2.0") {
				t.Fatalf("record keeps connector %q version %q, want no connector (the rollout's own) and the version the API returned", rec.ConnectorID, rec.Version)
			}
		})
	}
}

// Redis away for a moment before the call: the handler waits for it with
// the task (nothing was called yet) and imports once, instead of handing
// the task back to asynq, which could not write the retry either.
func TestHandlerWaitsForRedisBeforeTheCall(t *testing.T) {
	led := taskstest.NewLedger()
	led.Put(tableDef, ledger.Record{OrgID: tableOrg, State: ledger.Pending})
	var mu sync.Mutex
	fails := 3
	led.Fail = func(method, _ string, _ versori.OrgID) error {
		mu.Lock()
		defer mu.Unlock()
		if method == "Org" && fails > 0 {
			fails--
			return errors.New("dial tcp: connection refused")
		}
		return nil
	}
	api := &fakeImporter{}
	h, err := tasks.NewHandler(tasks.HandlerConfig{
		Client: api, Ledger: led, Pauser: &fakePauser{},
		Metrics: metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{}),
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := taskstest.Run(context.Background(), h, tasks.Payload{RolloutID: tableRollout, OrgID: tableOrg, ConnectorID: tableConnector, Version: "1.2.0"})
	if err != nil || res.Kind != taskstest.Done || len(api.calls) != 1 {
		t.Fatalf("kind %s (%v), %d API calls; want done after one call", res.Kind, res.Err, len(api.calls))
	}
	if got := led.Methods(); len(got) < 4 || got[0] != "Org" || got[3] != "Org" {
		t.Fatalf("ledger calls %v: want the read retried", got)
	}
}

// finishCounter counts the finish hook's calls by rollout.
type finishCounter struct {
	mu    sync.Mutex
	calls map[string]int
}

func (f *finishCounter) OrganisationFinished(_ context.Context, rolloutID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[rolloutID]++
	return nil
}

// The finish hook hears a rollout once its last organisation is recorded,
// not after each: the outcomes before the last leave something pending,
// and asking the rollout whether it is done after every one of them would
// cost a round trip per organisation. A re-delivered task of a finished
// organisation does not call it again.
func TestFinishHookAfterTheLastOrganisation(t *testing.T) {
	led := taskstest.NewLedger()
	orgs := []versori.OrgID{tableOrg, "01HZY00000000000000000000B", "01HZY00000000000000000000D"}
	for _, org := range orgs {
		led.Put(tableDef, ledger.Record{OrgID: org, State: ledger.Pending})
	}
	hook := &finishCounter{calls: map[string]int{}}
	h, err := tasks.NewHandler(tasks.HandlerConfig{
		Client: &fakeImporter{}, Ledger: led, OnFinish: hook,
		Metrics: metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{}),
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	run := func(org versori.OrgID) {
		t.Helper()
		res, err := taskstest.Run(context.Background(), h, tasks.Payload{RolloutID: tableRollout, OrgID: org, ConnectorID: tableConnector, Version: "1.2.0"})
		if err != nil || res.Kind != taskstest.Done {
			t.Fatalf("run %s: %s (%v)", org, res.Kind, err)
		}
	}
	for i, org := range orgs {
		run(org)
		want := 0
		if i == len(orgs)-1 {
			want = 1
		}
		if got := hook.calls[tableRollout]; got != want {
			t.Fatalf("after %d of %d organisations the hook ran %d times; want %d", i+1, len(orgs), got, want)
		}
	}
	run(orgs[0])
	if got := hook.calls[tableRollout]; got != 1 {
		t.Errorf("a re-delivered task ran the hook again: %d calls", got)
	}
}

// otherConnector answers every import with a connector other than the one
// asked for.
type otherConnector struct{}

func (otherConnector) ImportPublicConnectorVersion(context.Context, versori.OrgID, versori.ConnectorID, string) (*versori.Connector, error) {
	return &versori.Connector{ID: "01HZY0000000000000000000ZZ", Versions: []versori.ConnectorVersion{{Name: "1.2.0"}}}, nil
}

// A record keeps the connector the API returned only when it is not the
// rollout's own: then it is worth its 33 bytes.
func TestRecordKeepsAnUnexpectedConnector(t *testing.T) {
	led := taskstest.NewLedger()
	led.Put(tableDef, ledger.Record{OrgID: tableOrg, State: ledger.Pending})
	h, err := tasks.NewHandler(tasks.HandlerConfig{
		Client: otherConnector{}, Ledger: led,
		Metrics: metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{}),
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := taskstest.Run(context.Background(), h, tasks.Payload{RolloutID: tableRollout, OrgID: tableOrg, ConnectorID: tableConnector, Version: "1.2.0"}); err != nil || res.Kind != taskstest.Done {
		t.Fatalf("run: %s (%v)", res.Kind, err)
	}
	if rec, _ := led.Record(tableRollout, tableOrg); rec.ConnectorID != "01HZY0000000000000000000ZZ" {
		t.Errorf("record keeps connector %q; want the one the API returned", rec.ConnectorID)
	}
}

// unreplicated is a ledger whose first Finish is written but not
// acknowledged by the replicas (ledger.ErrNotReplicated).
type unreplicated struct {
	*taskstest.Ledger
	finishes int
}

func (u *unreplicated) Finish(ctx context.Context, rolloutID string, orgID versori.OrgID, o ledger.Outcome) (ledger.Finished, error) {
	f, err := u.Ledger.Finish(ctx, rolloutID, orgID, o)
	u.finishes++
	if err == nil && u.finishes == 1 {
		err = fmt.Errorf("ledger: 0 of 1 replicas: %w", ledger.ErrNotReplicated)
	}
	return f, err
}

// An outcome the replicas did not acknowledge is written again; the second
// write finds it finished, and the organisation still counts as finished
// once, with its hook.
func TestUnreplicatedOutcomeCountsOnce(t *testing.T) {
	led := &unreplicated{Ledger: taskstest.NewLedger()}
	led.Put(tableDef, ledger.Record{OrgID: tableOrg, State: ledger.Pending})
	hook := &finishCounter{calls: map[string]int{}}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.BuildInfo{})
	h, err := tasks.NewHandler(tasks.HandlerConfig{
		Client: &fakeImporter{}, Ledger: led, OnFinish: hook, Metrics: m,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := taskstest.Run(context.Background(), h, tasks.Payload{RolloutID: tableRollout, OrgID: tableOrg, ConnectorID: tableConnector, Version: "1.2.0"}); err != nil || res.Kind != taskstest.Done {
		t.Fatalf("run: %s (%v)", res.Kind, err)
	}
	if led.finishes != 2 {
		t.Errorf("%d Finish calls; want the unacknowledged one written again", led.finishes)
	}
	if hook.calls[tableRollout] != 1 {
		t.Errorf("the finish hook ran %d times; want once", hook.calls[tableRollout])
	}
	if got := testutil.ToFloat64(m.OrgsFinished.WithLabelValues("succeeded", "imported")); got != 1 {
		t.Errorf("orgs finished counted %v times; want 1", got)
	}
}
