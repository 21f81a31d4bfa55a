package rollout_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/versori"
)

const (
	testConnector = "01HZY3K8W0V6Q1B2C3D4E5F6G7"
	secret        = "0123456789abcdef0123456789abcdef"
)

func org(i int) string { return fmt.Sprintf("01J%023d", i) }

// finishedRollout creates rollout id with a callback to u and settles its
// organisations.
func finishedRollout(t *testing.T, m *rollout.Manager, id, u string, n int) {
	t.Helper()
	ctx := context.Background()
	orgs := make([]string, n)
	for i := range orgs {
		orgs[i] = org(i)
	}
	if _, _, err := m.EnqueueList(ctx, rollout.Spec{ID: id, ConnectorID: testConnector, Version: "1.0.0", CallbackURL: u}, slices.Values(orgs)); err != nil {
		t.Fatal(err)
	}
	for _, o := range orgs {
		if _, err := m.Ledger().Finish(ctx, id, versori.OrgID(o), ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, CountAttempt: true}); err != nil {
			t.Fatal(err)
		}
	}
}

// callbackTask returns the callback task NotifyIfDone enqueued.
func callbackTask(t *testing.T, rs *redistest.Server, id string) *asynq.Task {
	t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(rs.Client()).GetTaskInfo(rollout.DefaultQueue, rollout.CallbackTaskID(id))
	if err != nil {
		t.Fatalf("callback task: %v", err)
	}
	return asynq.NewTask(info.Type, info.Payload)
}

func allowed(t *testing.T, srvURL string) rollout.AllowedHosts {
	u, _ := url.Parse(srvURL)
	a, err := rollout.ParseAllowedHosts(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A receiver answering 500 for a while, then 200: the callback is
// delivered, once, with the same delivery ID and a valid signature every
// time; after the 2xx it is never sent again, nor enqueued again.
func TestCallbackRetriedUntil2xxThenNever(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	m := rollout.New(rs.Client(), rollout.Options{})
	var (
		mu         sync.Mutex
		calls      int
		deliveries []string
		bodies     [][]byte
	)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		calls++
		if !rollout.Verify([]byte(secret), body, r.Header.Get(rollout.HeaderSignature)) {
			t.Errorf("bad signature %q", r.Header.Get(rollout.HeaderSignature))
		}
		deliveries = append(deliveries, r.Header.Get(rollout.HeaderDeliveryID))
		if calls <= 3 {
			w.WriteHeader(500)
			return
		}
		bodies = append(bodies, body)
	}))
	defer recv.Close()
	finishedRollout(t, m, "cb1", recv.URL+"/hook", 3)

	ctx := context.Background()
	enq, err := m.NotifyIfDone(ctx, "cb1")
	if err != nil || !enq {
		t.Fatalf("NotifyIfDone: %v %v", enq, err)
	}
	if enq, _ := m.NotifyIfDone(ctx, "cb1"); enq {
		t.Fatal("enqueued twice")
	}
	h := m.NewCallbackHandler(rollout.CallbackConfig{Secret: []byte(secret), Allowed: allowed(t, recv.URL)})
	task := callbackTask(t, rs, "cb1")
	for i := range 3 {
		if err := h.ProcessTask(ctx, task); err == nil {
			t.Fatalf("attempt %d: no error for a 500", i+1)
		}
	}
	if err := h.ProcessTask(ctx, task); err != nil {
		t.Fatalf("attempt 4: %v", err)
	}
	// A re-delivered task (asynq is at-least-once) sends nothing.
	if err := h.ProcessTask(ctx, task); err != nil {
		t.Fatal(err)
	}
	if enq, _ := m.NotifyIfDone(ctx, "cb1"); enq {
		t.Fatal("enqueued after delivery")
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 4 || len(bodies) != 1 {
		t.Fatalf("calls %d, delivered %d; want 4 calls, 1 delivery", calls, len(bodies))
	}
	for _, d := range deliveries {
		if d == "" || d != deliveries[0] {
			t.Fatalf("delivery IDs not stable: %v", deliveries)
		}
	}
	var st rollout.Status
	if err := json.Unmarshal(bodies[0], &st); err != nil || st.RolloutID != "cb1" || !st.Done || st.Succeeded != 3 {
		t.Fatalf("body %s: %v", bodies[0], err)
	}
}

// A receiver that hangs cannot hold the worker past the timeout.
func TestCallbackReceiverHangs(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	m := rollout.New(rs.Client(), rollout.Options{})
	release := make(chan struct{})
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer recv.Close()
	defer close(release)
	finishedRollout(t, m, "hang", recv.URL, 1)
	if _, err := m.NotifyIfDone(context.Background(), "hang"); err != nil {
		t.Fatal(err)
	}
	h := m.NewCallbackHandler(rollout.CallbackConfig{Secret: []byte(secret), Allowed: allowed(t, recv.URL), Timeout: 300 * time.Millisecond})
	start := time.Now()
	err := h.ProcessTask(context.Background(), callbackTask(t, rs, "hang"))
	if err == nil {
		t.Fatal("no error for a receiver that hangs")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("held the worker %s", took)
	}
}

// The worker refuses a host not allowed even if the URL got into Redis.
func TestCallbackHostNotAllowedByWorker(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	m := rollout.New(rs.Client(), rollout.Options{})
	var called atomic.Bool
	recv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called.Store(true) }))
	defer recv.Close()
	finishedRollout(t, m, "evil", recv.URL, 1)
	m.NotifyIfDone(context.Background(), "evil")
	other, _ := rollout.ParseAllowedHosts("hooks.example.com")
	h := m.NewCallbackHandler(rollout.CallbackConfig{Secret: []byte(secret), Allowed: other})
	err := h.ProcessTask(context.Background(), callbackTask(t, rs, "evil"))
	if err == nil || called.Load() {
		t.Fatalf("called a host not allowed: err %v, called %v", err, called.Load())
	}
}

// Cancel ends a rollout: its callback is enqueued.
func TestCancelEnqueuesCallback(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	m := rollout.New(rs.Client(), rollout.Options{})
	ctx := context.Background()
	if _, _, err := m.EnqueueList(ctx, rollout.Spec{ID: "c1", ConnectorID: testConnector, Version: "1", CallbackURL: "https://hooks.example.com/x"}, slices.Values([]string{org(1), org(2)})); err != nil {
		t.Fatal(err)
	}
	if enq, _ := m.NotifyIfDone(ctx, "c1"); enq {
		t.Fatal("enqueued while pending")
	}
	if _, err := m.Cancel(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	callbackTask(t, rs, "c1")
}

func TestAllowedHosts(t *testing.T) {
	a, err := rollout.ParseAllowedHosts(" Hooks.Example.com , 10.0.0.5:8443,[::1]:9000")
	if err != nil {
		t.Fatal(err)
	}
	for u, ok := range map[string]bool{
		"https://hooks.example.com/x":        true,
		"http://HOOKS.example.com:8080/x":    true,
		"https://10.0.0.5:8443/cb":           true,
		"https://10.0.0.5/cb":                false,
		"http://[::1]:9000/":                 true,
		"http://169.254.169.254/":            false,
		"https://hooks.example.com.evil.io/": false,
		"https://u:p@hooks.example.com/":     false,
		"file:///etc/passwd":                 false,
		"/relative":                          false,
	} {
		if _, err := a.Check(u); (err == nil) != ok {
			t.Errorf("Check(%q) = %v, want allowed %v", u, err, ok)
		}
	}
	for _, bad := range []string{"http://x", "a/b", "host:0", "host:99999"} {
		if _, err := rollout.ParseAllowedHosts(bad); err == nil {
			t.Errorf("ParseAllowedHosts(%q): no error", bad)
		}
	}
}

func TestCallbackSecret(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if s, err := rollout.CallbackSecret(env(nil)); s != nil || err != nil {
		t.Fatalf("unset: %q %v", s, err)
	}
	if _, err := rollout.CallbackSecret(env(map[string]string{"CALLBACK_SECRET": "short"})); err == nil {
		t.Fatal("short secret accepted")
	}
	if _, err := rollout.CallbackSecret(env(map[string]string{"CALLBACK_SECRET": secret, "CALLBACK_SECRET_FILE": "/x"})); err == nil {
		t.Fatal("both accepted")
	}
	f := t.TempDir() + "/s"
	if err := writeFile(f, secret+"\n"); err != nil {
		t.Fatal(err)
	}
	if s, err := rollout.CallbackSecret(env(map[string]string{"CALLBACK_SECRET_FILE": f})); err != nil || string(s) != secret {
		t.Fatalf("file: %q %v", s, err)
	}
}

// A rollout retried after its callback was delivered is called back again
// when it finishes again, with a new delivery ID; a re-delivered task of
// either round sends nothing more.
func TestCallbackSecondRoundAfterRetry(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	m := rollout.New(rs.Client(), rollout.Options{})
	ctx := context.Background()
	var (
		mu     sync.Mutex
		ids    []string
		bodies []rollout.Status
	)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var st rollout.Status
		json.NewDecoder(r.Body).Decode(&st)
		mu.Lock()
		ids, bodies = append(ids, r.Header.Get(rollout.HeaderDeliveryID)), append(bodies, st)
		mu.Unlock()
	}))
	defer recv.Close()
	h := m.NewCallbackHandler(rollout.CallbackConfig{Secret: []byte(secret), Allowed: allowed(t, recv.URL)})
	orgs := []string{org(1), org(2)}
	if _, _, err := m.EnqueueList(ctx, rollout.Spec{ID: "cb2", ConnectorID: testConnector, Version: "1", CallbackURL: recv.URL + "/hook"}, slices.Values(orgs)); err != nil {
		t.Fatal(err)
	}
	m.Ledger().Finish(ctx, "cb2", versori.OrgID(orgs[0]), ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, CountAttempt: true})
	m.Ledger().Finish(ctx, "cb2", versori.OrgID(orgs[1]), ledger.Outcome{State: ledger.Failed, Class: "server_error", HTTPStatus: 503, CountAttempt: true})
	if enq, err := m.NotifyIfDone(ctx, "cb2"); !enq || err != nil {
		t.Fatalf("first round: %v %v", enq, err)
	}
	first := callbackTask(t, rs, "cb2")
	if err := h.ProcessTask(ctx, first); err != nil {
		t.Fatal(err)
	}
	if res, err := m.Retry(ctx, "cb2", nil); err != nil || res.Requeued != 1 {
		t.Fatalf("retry: %+v %v", res, err)
	}
	m.Ledger().Finish(ctx, "cb2", versori.OrgID(orgs[1]), ledger.Outcome{State: ledger.Succeeded, Class: "imported", HTTPStatus: 200, CountAttempt: true})
	if enq, err := m.NotifyIfDone(ctx, "cb2"); !enq || err != nil {
		t.Fatalf("second round: %v %v", enq, err)
	}
	info, err := asynq.NewInspectorFromRedisClient(rs.Client()).GetTaskInfo(rollout.DefaultQueue, rollout.CallbackTaskIDOf("cb2", 1))
	if err != nil {
		t.Fatal(err)
	}
	second := asynq.NewTask(info.Type, info.Payload)
	for _, task := range []*asynq.Task{second, second, first} {
		if err := h.ProcessTask(ctx, task); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2 || ids[0] == ids[1] || bodies[0].Failed != 1 || bodies[1].Succeeded != 2 {
		t.Fatalf("deliveries %v, bodies %+v", ids, bodies)
	}
}
