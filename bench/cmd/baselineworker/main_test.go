package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
	"github.com/versori/import-worker/versori/versoritest"
)

const (
	connectorID = "01HZY0000000000000000C0NN0"
	orgA        = "01HZY00000000000000000RGA1"
	orgB        = "01HZY00000000000000000RGB2"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadConfig(t *testing.T) {
	base := map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0", "VERSORI_BASE_URL": "http://127.0.0.1:1", "VERSORI_API_KEY": "k"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    config
		wantErr string
	}{
		{name: "bare defaults", env: base, want: config{Mode: modeBare, Concurrency: 20, Queue: "imports", MetricsAddr: "127.0.0.1:9091"}},
		{name: "per process, default burst is the worker's", env: with("MODE", modePerProcess, "IMPORT_RATE_LIMIT", "200", "WORKER_CONCURRENCY", "50"),
			want: config{Mode: modePerProcess, RateLimit: 200, RateBurst: 5, Limiter: limiterWait, Concurrency: 50, Queue: "imports", MetricsAddr: "127.0.0.1:9091"}},
		{name: "per process, small limit, burst at least 1", env: with("MODE", modePerProcess, "IMPORT_RATE_LIMIT", "3.5"),
			want: config{Mode: modePerProcess, RateLimit: 3.5, RateBurst: 1, Limiter: limiterWait, Concurrency: 20, Queue: "imports", MetricsAddr: "127.0.0.1:9091"}},
		{name: "per process, burst set, the wiki's Allow", env: with("MODE", modePerProcess, "IMPORT_RATE_LIMIT", "100", "IMPORT_RATE_BURST", "30", "RATE_LIMITER", "allow"),
			want: config{Mode: modePerProcess, RateLimit: 100, RateBurst: 30, Limiter: limiterAllow, Concurrency: 20, Queue: "imports", MetricsAddr: "127.0.0.1:9091"}},
		{name: "unknown limiter", env: with("MODE", modePerProcess, "IMPORT_RATE_LIMIT", "1", "RATE_LIMITER", "sleep"), wantErr: "RATE_LIMITER"},
		{name: "unknown mode", env: with("MODE", "fast"), wantErr: "MODE"},
		{name: "per process needs a limit", env: with("MODE", modePerProcess), wantErr: "IMPORT_RATE_LIMIT"},
		{name: "negative limit", env: with("MODE", modePerProcess, "IMPORT_RATE_LIMIT", "-1"), wantErr: "IMPORT_RATE_LIMIT"},
		{name: "bad burst", env: with("MODE", modePerProcess, "IMPORT_RATE_LIMIT", "1", "IMPORT_RATE_BURST", "0"), wantErr: "IMPORT_RATE_BURST"},
		{name: "pprof", env: with("ENABLE_PPROF", "true"), want: config{Mode: modeBare, Concurrency: 20, Queue: "imports", MetricsAddr: "127.0.0.1:9091", EnablePprof: true}},
		{name: "bad pprof", env: with("ENABLE_PPROF", "sometimes"), wantErr: "ENABLE_PPROF"},
		{name: "bad concurrency", env: with("WORKER_CONCURRENCY", "many"), wantErr: "WORKER_CONCURRENCY"},
		{name: "missing everything", env: map[string]string{}, wantErr: "REDIS_URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := loadConfig(env(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.RedisURL, got.BaseURL, got.APIKey = "", "", ""
			if got != tc.want {
				t.Errorf("config = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func importTask(t *testing.T, org string) *asynq.Task {
	t.Helper()
	task, err := tasks.NewImportTask(tasks.Payload{RolloutID: "r1", OrgID: versori.OrgID(org), ConnectorID: connectorID, Version: "1.0.0"}, tasks.TaskOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return task
}

func newClient(t *testing.T, api *versoritest.Server) *versori.Client {
	t.Helper()
	c, err := versori.New(api.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestHandlerBare(t *testing.T) {
	api := versoritest.NewServer()
	defer api.Close()
	h := newHandler(config{Mode: modeBare}, newClient(t, api))
	ctx := context.Background()

	if err := h.ProcessTask(ctx, importTask(t, orgA)); err != nil {
		t.Fatalf("first import: %v", err)
	}
	if err := h.ProcessTask(ctx, importTask(t, orgA)); err != nil {
		t.Errorf("409 on a re-delivered task: %v, want nil (the organisation holds the version)", err)
	}
	api.FailNext(orgB, 1, versoritest.Fault{Kind: versoritest.FaultServerError, Status: 503})
	err := h.ProcessTask(ctx, importTask(t, orgB))
	if err == nil || !isFailure(err) {
		t.Errorf("503: err = %v, want a failure retried with asynq's default delay", err)
	}
	if d := retryDelay(0, err, nil); d < 15*time.Second {
		t.Errorf("retry delay after a 503 = %s, want asynq's default (15 s or more)", d)
	}
	err = h.ProcessTask(ctx, asynq.NewTask(tasks.TypeImport, []byte("{")))
	if !errors.Is(err, asynq.SkipRetry) {
		t.Errorf("bad payload: err = %v, want SkipRetry", err)
	}
	if api.Imports() != 1 || api.TotalCalls() != 3 {
		t.Errorf("fake saw %d calls, %d imports; want 3 and 1", api.TotalCalls(), api.Imports())
	}
}

func TestHandlerPerProcessLimiter(t *testing.T) {
	api := versoritest.NewServer()
	defer api.Close()
	// A limit so low that the burst of 2 is all this test can spend.
	h := newHandler(config{Mode: modePerProcess, RateLimit: 0.001, RateBurst: 2, Limiter: limiterAllow}, newClient(t, api))
	h.retryIn = func() time.Duration { return 7 * time.Second }
	ctx := context.Background()
	for _, org := range []string{orgA, orgB} {
		if err := h.ProcessTask(ctx, importTask(t, org)); err != nil {
			t.Fatalf("within the burst: %v", err)
		}
	}
	err := h.ProcessTask(ctx, importTask(t, orgA))
	var rl *RateLimitError
	if !errors.As(err, &rl) {
		t.Fatalf("over the limit: err = %v, want a RateLimitError", err)
	}
	if isFailure(err) {
		t.Error("a refusal by the limiter counts as a failure; the recipe says it must not")
	}
	if d := retryDelay(3, err, nil); d != 7*time.Second {
		t.Errorf("retry delay = %s, want the limiter's 7s", d)
	}
	if api.TotalCalls() != 2 {
		t.Errorf("fake saw %d calls, want 2: a refused task must not call", api.TotalCalls())
	}
}

func TestHandlerPerProcessLimiterWaits(t *testing.T) {
	api := versoritest.NewServer()
	defer api.Close()
	// 20 per second, burst 1: the third call waits about 100 ms in all.
	h := newHandler(config{Mode: modePerProcess, RateLimit: 20, RateBurst: 1, Limiter: limiterWait}, newClient(t, api))
	ctx := context.Background()
	start := time.Now()
	for _, org := range []string{orgA, orgB, "01HZY00000000000000000RGC3"} {
		if err := h.ProcessTask(ctx, importTask(t, org)); err != nil {
			t.Fatalf("waiting limiter: %v", err)
		}
	}
	if took := time.Since(start); took < 90*time.Millisecond {
		t.Errorf("three calls at 20/s with burst 1 took %s, want at least the two 50 ms waits", took)
	}
	// A cancelled context ends the wait as a refusal, not a failure.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	h.limiter.SetBurst(0)
	if err := h.ProcessTask(cctx, importTask(t, orgA)); isFailure(err) {
		t.Errorf("cancelled wait: err = %v, want a RateLimitError", err)
	}
	if api.TotalCalls() != 3 {
		t.Errorf("fake saw %d calls, want 3", api.TotalCalls())
	}
}

func TestRecipeRetryInIsWholeSecondsBelowTen(t *testing.T) {
	h := newHandler(config{Mode: modePerProcess, RateLimit: 1, RateBurst: 1, Limiter: limiterAllow}, nil)
	seen := map[time.Duration]bool{}
	for range 2000 {
		d := h.retryIn()
		if d < 0 || d > 9*time.Second || d%time.Second != 0 {
			t.Fatalf("retryIn = %s, want 0..9 whole seconds", d)
		}
		seen[d] = true
	}
	if len(seen) != 10 {
		t.Errorf("retryIn took %d distinct values in 2000 draws, want all 10", len(seen))
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestServeImportsEveryTask runs the server on a real Redis: every task
// enqueued is imported once, and the listener answers.
func TestServeImportsEveryTask(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	red := redistest.Start(t, redistest.Options{})
	api := versoritest.NewServer()
	defer api.Close()
	cfg, err := loadConfig(env(map[string]string{
		"REDIS_URL": red.URL(), "VERSORI_BASE_URL": api.URL, "VERSORI_API_KEY": api.APIKey(),
		"MODE": modePerProcess, "IMPORT_RATE_LIMIT": "1000", "WORKER_CONCURRENCY": "4", "METRICS_ADDR": freeAddr(t),
	}))
	if err != nil {
		t.Fatal(err)
	}
	rdb := red.Client()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, rdb, newClient(t, api)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	const n = 20
	ac := asynq.NewClientFromRedisClient(rdb)
	for i := range n {
		org := fmt.Sprintf("01HZY00000000000000000%04d", i)
		if _, err := ac.Enqueue(importTask(t, org)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for api.Imports() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d imported after 30 s", api.Imports(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if api.TotalCalls() != n {
		t.Errorf("%d calls for %d tasks", api.TotalCalls(), n)
	}
	for _, path := range []string{"/readyz", "/goroutines"} {
		resp, err := http.Get("http://" + cfg.MetricsAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(b) == 0 {
			t.Errorf("GET %s = %d %q", path, resp.StatusCode, b)
		}
	}
}

func TestRunRejectsBadConfiguration(t *testing.T) {
	var stderr strings.Builder
	if code := run(env(map[string]string{"MODE": "fast"}), &stderr); code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), "MODE") || !strings.Contains(stderr.String(), "REDIS_URL") {
		t.Errorf("stderr does not name every bad variable:\n%s", stderr.String())
	}
}
