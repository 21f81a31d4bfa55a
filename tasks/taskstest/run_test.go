package taskstest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/metrics"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/tasks/taskstest"
	"github.com/versori/import-worker/versori"
)

const (
	testOrg       = "01HZY00000000000000000000A"
	testConnector = "01HZY00000000000000000000C"
)

var testPayload = tasks.Payload{RolloutID: "r1", OrgID: testOrg, ConnectorID: testConnector, Version: "1.2.0"}

func TestClassify(t *testing.T) {
	later := &tasks.RetryLaterError{Class: versori.ClassRateLimited, Delay: 3 * time.Second}
	plain := errors.New("boom")
	for _, tc := range []struct {
		name              string
		err               error
		retried, maxRetry int
		want              taskstest.Result
	}{
		{"nil", nil, 0, 3, taskstest.Result{Kind: taskstest.Done}},
		{"retry later", later, 0, 3, taskstest.Result{Kind: taskstest.RetryLater, Err: later, Delay: 3 * time.Second, Class: versori.ClassRateLimited}},
		{"retry later on the last attempt", later, 3, 3, taskstest.Result{Kind: taskstest.RetryLater, Err: later, Delay: 3 * time.Second, Class: versori.ClassRateLimited}},
		{"failure", plain, 0, 3, taskstest.Result{Kind: taskstest.Retry, Err: plain}},
		{"failure on the last attempt", plain, 3, 3, taskstest.Result{Kind: taskstest.Archived, Err: plain}},
		{"skip retry", asynq.SkipRetry, 0, 3, taskstest.Result{Kind: taskstest.Archived, Err: asynq.SkipRetry}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := taskstest.Classify(tc.err, tc.retried, tc.maxRetry); got != tc.want {
				t.Fatalf("Classify = %+v, want %+v", got, tc.want)
			}
		})
	}
	wrapped := fmt.Errorf("outer: %w", later)
	if got := taskstest.Classify(wrapped, 0, 1); got.Kind != taskstest.RetryLater || got.Delay != 3*time.Second {
		t.Fatalf("a wrapped RetryLaterError: %+v", got)
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[taskstest.Kind]string{taskstest.Done: "done", taskstest.RetryLater: "retry_later", taskstest.Retry: "retry", taskstest.Archived: "archived", 9: "Kind(9)"} {
		if k.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(k), k.String(), want)
		}
	}
}

func TestRunRefusesWhatCannotRun(t *testing.T) {
	ok := asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })
	ctx := context.Background()
	for _, opts := range [][]taskstest.Option{
		{taskstest.WithAttempt(-1, 3)},
		{taskstest.WithAttempt(4, 3)},
		{taskstest.WithAttempt(0, -1)},
	} {
		if _, err := taskstest.Run(ctx, ok, testPayload, opts...); err == nil {
			t.Error("Run accepted an impossible attempt")
		}
	}
	bad := testPayload
	bad.OrgID = "" // unset
	if _, err := taskstest.Run(ctx, ok, bad); err == nil {
		t.Error("Run accepted an invalid payload")
	}
	if _, err := taskstest.RunTask(ctx, ok, nil); err == nil {
		t.Error("RunTask accepted a nil task")
	}
	if res, err := taskstest.RunTask(ctx, ok, asynq.NewTask(tasks.TypeImport, []byte("x"))); err != nil || res.Kind != taskstest.Done {
		t.Errorf("RunTask = %+v, %v", res, err)
	}
}

func TestRunGivesTheTaskToTheHandler(t *testing.T) {
	var got tasks.Payload
	h := asynq.HandlerFunc(func(_ context.Context, task *asynq.Task) error {
		if task.Type() != tasks.TypeImport {
			return fmt.Errorf("type %q", task.Type())
		}
		var err error
		got, err = tasks.DecodePayload(task.Payload())
		return err
	})
	if res, err := taskstest.Run(context.Background(), h, testPayload); err != nil || res.Kind != taskstest.Done {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if got != testPayload {
		t.Fatalf("handler got %+v, want %+v", got, testPayload)
	}
}

func TestRunRecoversPanics(t *testing.T) {
	h := asynq.HandlerFunc(func(context.Context, *asynq.Task) error { panic("oops") })
	res, err := taskstest.Run(context.Background(), h, testPayload, taskstest.WithAttempt(0, 1))
	if err != nil || res.Kind != taskstest.Retry || res.Err == nil || !strings.Contains(res.Err.Error(), "oops") {
		t.Fatalf("first attempt: %+v, %v; want a retry naming the panic", res, err)
	}
	res, _ = taskstest.Run(context.Background(), h, testPayload, taskstest.WithAttempt(1, 1))
	if res.Kind != taskstest.Archived {
		t.Fatalf("last attempt: %+v, want archived", res)
	}
}

type refusing struct{ status int }

func (r refusing) ImportPublicConnectorVersion(context.Context, versori.OrgID, versori.ConnectorID, string) (*versori.Connector, error) {
	return nil, &versori.Error{Op: "import", StatusCode: r.status, Message: http.StatusText(r.status), Class: versori.ClassForStatus(r.status)}
}

// TestRunSetsTheAttemptAndTaskID: the real handler sees the attempt and
// task ID Run was given, as it would see asynq's.
func TestRunSetsTheAttemptAndTaskID(t *testing.T) {
	var buf bytes.Buffer
	led := taskstest.NewLedger()
	h, err := tasks.NewHandler(tasks.HandlerConfig{
		Client: refusing{503}, Ledger: led,
		Metrics: metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{}),
		Logger:  slog.New(slog.NewJSONHandler(&buf, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := taskstest.Run(ctx, h, testPayload, taskstest.WithAttempt(4, 5))
	if err != nil || res.Kind != taskstest.Retry {
		t.Fatalf("attempt 5 of 6: %+v, %v; want a retry", res, err)
	}
	res, err = taskstest.Run(ctx, h, testPayload, taskstest.WithAttempt(5, 5), taskstest.WithTaskID("my-task"))
	if err != nil || res.Kind != taskstest.Archived || !errors.Is(res.Err, asynq.SkipRetry) {
		t.Fatalf("attempt 6 of 6: %+v, %v; want archived", res, err)
	}
	if rec, _ := led.Record(testPayload.RolloutID, testOrg); rec.State != ledger.Failed || rec.Class != "exhausted" || !strings.Contains(rec.Error, "6 attempts failed") {
		t.Fatalf("record = %+v, want exhausted after 6 attempts", rec)
	}
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var ev struct {
			TaskID string `json:"task_id"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.TaskID)
	}
	if len(ids) != 2 || ids[0] != tasks.TaskID("r1", testOrg) || ids[1] != "my-task" {
		t.Fatalf("task IDs logged = %q, want the default then my-task", ids)
	}
}
