package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/versori/import-worker/versori"
	"github.com/versori/import-worker/versori/versoritest"
)

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs the binary's run function and returns its address.
func start(t *testing.T, args ...string) (addr string, logs *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs = &syncBuffer{}
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"--addr", "127.0.0.1:0"}, args...), logs, func(a string) { ready <- a })
	}()
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run: %v\n%s", err, logs)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run after shutdown: %v", err)
		}
	})
	return addr, logs
}

func TestServesTheFake(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("file-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, logs := start(t, "--api-key-file", keyFile, "--latency", "1ms", "--latency-distribution", "uniform", "--latency-jitter", "1ms",
		"--rate-limit", "1000", "--rate-burst", "10", "--fault-rate", "server_error=0.0,invalid=0", "--seed", "7")
	if strings.Contains(logs.String(), "file-key") {
		t.Errorf("a key given by the operator was logged: %s", logs)
	}
	c, err := versori.New(versori.Config{BaseURL: "http://" + addr + versoritest.DefaultPrefix, APIKey: "file-key"})
	if err != nil {
		t.Fatal(err)
	}
	org := "01J8Z3K4M5N6P7Q8R9S0T1V2W3"
	for range 2 {
		_, err = c.ImportPublicConnectorVersion(t.Context(), versori.OrgID(org), versori.ConnectorID(org), "1.0.0")
	}
	if versori.Classify(err) != versori.ClassAlreadyPresent {
		t.Fatalf("second import: %v", err)
	}
	resp, err := http.Get("http://" + addr + "/_stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st versoritest.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Calls != 2 || st.Imports != 1 || st.Conflicts != 1 {
		t.Errorf("/_stats: %+v %v", st, err)
	}
	if err := check(addr); err != nil {
		t.Errorf("health check: %v", err)
	}
}

func TestGeneratedKeyIsLogged(t *testing.T) {
	t.Setenv("FAKEAPI_API_KEY", "")
	_, logs := start(t)
	if !strings.Contains(logs.String(), "generated_api_key=vk_test_") {
		t.Errorf("logs do not show the generated key: %s", logs)
	}
}

func TestRefusesBadUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--addr", "0.0.0.0:0"},
		{"--addr", "192.168.1.1:8081"},
		{"--addr", "nonsense"},
		{"--fault-rate", "bogus=0.1"},
		{"--fault-rate", "server_error"},
		{"--fault-rate", "server_error=x"},
		{"--fault-rate", "server_error=0.8,reset=0.8"},
		{"--latency-distribution", "pareto"},
		{"--rate-limit-headers", "draft"},
		{"--rate-limit-schedule", "50"},
		{"--rate-limit-schedule", "50@soon"},
		{"--rate-limit-schedule", "-1@0s"},
		{"--rate-burst", "-1"},
		{"--api-key-file", "/nonexistent/key"},
		{"--no-such-flag"},
		{"extra"},
	} {
		err := run(context.Background(), args, &syncBuffer{}, nil)
		var u usageError
		if !errors.As(err, &u) {
			t.Errorf("run(%v) = %v, want a usage error", args, err)
		}
	}
	if err := check("127.0.0.1:1"); err == nil {
		t.Error("health check of nothing succeeded")
	}
	if err := run(context.Background(), []string{"--healthcheck", "--addr", "127.0.0.1:1"}, &syncBuffer{}, nil); err == nil {
		t.Error("--healthcheck of nothing succeeded")
	}
	if err := run(context.Background(), []string{"-h"}, &syncBuffer{}, nil); err != nil {
		t.Errorf("-h: %v", err)
	}
}

func TestAllowRemote(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--addr", "0.0.0.0:0", "--allow-remote", "--api-key", "k"}, &syncBuffer{}, func(a string) { ready <- a })
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("--allow-remote refused: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestRateLimitFlags: the headers and schedule flags reach the fake: the
// schedule's first step is in force, with its headers, and the stats count
// the 429s.
func TestRateLimitFlags(t *testing.T) {
	addr, _ := start(t, "--api-key", "k", "--rate-limit", "100", "--rate-burst", "2",
		"--rate-limit-headers", "ietf", "--rate-limit-schedule", "3@0s,100@1h", "--rate-limit-omit-retry-after")
	c, err := versori.New(versori.Config{BaseURL: "http://" + addr + versoritest.DefaultPrefix, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.ImportPublicConnectorVersion(t.Context(), "01J8Z3K4M5N6P7Q8R9S0T1V2W4", "01J8Z3K4M5N6P7Q8R9S0T1V2W3", "1")
	if err != nil || conn.RateLimit.Rate != 3 || conn.RateLimit.Remaining != 1 {
		t.Fatalf("first call: %v %+v", err, conn)
	}
	_, _ = c.ImportPublicConnectorVersion(t.Context(), "01J8Z3K4M5N6P7Q8R9S0T1V2W5", "01J8Z3K4M5N6P7Q8R9S0T1V2W3", "1")
	_, err = c.ImportPublicConnectorVersion(t.Context(), "01J8Z3K4M5N6P7Q8R9S0T1V2W6", "01J8Z3K4M5N6P7Q8R9S0T1V2W3", "1")
	if _, ok := versori.RetryAfter(err); versori.Classify(err) != versori.ClassRateLimited || ok || versori.RateLimitOf(nil, err).Rate != 3 {
		t.Fatalf("third call: %v", err)
	}
	resp, err := http.Get("http://" + addr + "/_stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st versoritest.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.RateLimited != 1 {
		t.Errorf("stats: %v %+v", err, st)
	}
}

// TestRateBurstDefault: without --rate-burst the fake's limit allows a
// gateway's burst (GatewayBurst: 2 at 10/s, for each step of a schedule
// too), so two calls at once pass and the third is refused; --rate-burst 1
// refuses the second.
func TestRateBurstDefault(t *testing.T) {
	for _, c := range []struct {
		args     []string
		accepted int
	}{
		{[]string{"--rate-limit", "10"}, 2},
		{[]string{"--rate-limit-schedule", "10@0s"}, 2},
		{[]string{"--rate-limit", "10", "--rate-burst", "1"}, 1},
	} {
		addr, _ := start(t, append([]string{"--api-key", "k"}, c.args...)...)
		cl, err := versori.New(versori.Config{BaseURL: "http://" + addr + versoritest.DefaultPrefix, APIKey: "k"})
		if err != nil {
			t.Fatal(err)
		}
		ok := 0
		for _, org := range []versori.OrgID{"01J8Z3K4M5N6P7Q8R9S0T1V2W4", "01J8Z3K4M5N6P7Q8R9S0T1V2W5", "01J8Z3K4M5N6P7Q8R9S0T1V2W6"} {
			_, err := cl.ImportPublicConnectorVersion(t.Context(), org, "01J8Z3K4M5N6P7Q8R9S0T1V2W3", "1")
			switch {
			case err == nil:
				ok++
			case versori.Classify(err) != versori.ClassRateLimited:
				t.Fatalf("%v: %v", c.args, err)
			}
		}
		if ok != c.accepted {
			t.Errorf("%v: %d of 3 calls at once accepted, want %d", c.args, ok, c.accepted)
		}
	}
}
