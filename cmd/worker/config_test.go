package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/versori/versoritest"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func valid() map[string]string {
	return map[string]string{"REDIS_URL": "redis://127.0.0.1:6379/0", "VERSORI_API_KEY": "vk_live_abc123"}
}

func TestLoadConfigDefaults(t *testing.T) {
	c, err := loadConfig(env(valid()), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.RateLimit != 10 || c.RateBurst != 1 || c.Concurrency != 20 || c.MetricsAddr != ":9090" ||
		c.AuthScheme != "Bearer" || c.Queue != "imports" || c.CallTimeout != 30*time.Second ||
		c.ShutdownTimeout != 40*time.Second || c.BaseURL != "https://platform.versori.com/api/connect/v1" {
		t.Fatalf("defaults: %+v", c)
	}
}

// The burst leaves room in design.md's 1.05 x limit for the late callers
// and the calls' jitter (ratebudget.DefaultBurst): limit/40, rounded down.
func TestLoadConfigBurstStaysUnderTheWindow(t *testing.T) {
	for rate, burst := range map[string]int{"1": 1, "10": 1, "50": 1, "79": 1, "80": 2, "100": 2, "200": 5} {
		e := valid()
		e["IMPORT_RATE_LIMIT"] = rate
		c, err := loadConfig(env(e), false)
		if err != nil {
			t.Fatal(err)
		}
		if c.RateBurst != burst {
			t.Errorf("IMPORT_RATE_LIMIT=%s: burst %d, want %d", rate, c.RateBurst, burst)
		}
	}
}

func TestLoadConfigNamesEveryBadVariable(t *testing.T) {
	for _, tc := range []struct {
		set  map[string]string
		want string
	}{
		{map[string]string{"REDIS_URL": ""}, "REDIS_URL: is required"},
		{map[string]string{"REDIS_URL": "http://x"}, "REDIS_URL: unsupported scheme"},
		{map[string]string{"VERSORI_API_KEY": ""}, "VERSORI_API_KEY: is required"},
		{map[string]string{"VERSORI_API_KEY": "a b"}, "VERSORI_API_KEY:"},
		{map[string]string{"VERSORI_BASE_URL": "http://example.com"}, "VERSORI_BASE_URL:"},
		{map[string]string{"VERSORI_AUTH_SCHEME": "Basic"}, "VERSORI_AUTH_SCHEME:"},
		{map[string]string{"IMPORT_RATE_LIMIT": "-1"}, "IMPORT_RATE_LIMIT:"},
		{map[string]string{"IMPORT_RATE_LIMIT": "NaN"}, "IMPORT_RATE_LIMIT:"},
		{map[string]string{"IMPORT_RATE_BURST": "0"}, "IMPORT_RATE_BURST:"},
		{map[string]string{"WORKER_CONCURRENCY": "many"}, "WORKER_CONCURRENCY:"},
		{map[string]string{"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY:"},
		{map[string]string{"METRICS_ADDR": ""}, ""},
		{map[string]string{"VERSORI_TIMEOUT": "soon"}, "VERSORI_TIMEOUT:"},
		{map[string]string{"WORKER_SHUTDOWN_TIMEOUT": "10s"}, "WORKER_SHUTDOWN_TIMEOUT: 10s must exceed"},
		{map[string]string{"RETRY_BACKOFF_BASE": "2m", "RETRY_BACKOFF_CAP": "1m"}, "RETRY_BACKOFF_CAP:"},
		{map[string]string{"LOG_LEVEL": "chatty"}, "LOG_LEVEL:"},
		{map[string]string{"LEDGER_WAIT_REPLICAS": "-1"}, "LEDGER_WAIT_REPLICAS:"},
		{map[string]string{"LEDGER_WAIT_REPLICAS": "one"}, "LEDGER_WAIT_REPLICAS:"},
		{map[string]string{"LEDGER_WAIT_REPLICAS": "17"}, "LEDGER_WAIT_REPLICAS:"},
		{map[string]string{"LEDGER_WAIT_TIMEOUT": "3s"}, "LEDGER_WAIT_TIMEOUT: 3s is longer"},
		{map[string]string{"LEDGER_WAIT_TIMEOUT": "0"}, "LEDGER_WAIT_TIMEOUT:"},
		{map[string]string{"ENABLE_PPROF": "maybe"}, "ENABLE_PPROF:"},
		{map[string]string{"WORKER_QUEUE": "a b"}, "WORKER_QUEUE:"},
		{map[string]string{"VERSORI_API_KEY_FILE": "/nonexistent/key"}, "VERSORI_API_KEY_FILE:"},
	} {
		e := valid()
		for k, v := range tc.set {
			e[k] = v
		}
		_, err := loadConfig(env(e), false)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%v: unexpected error %v", tc.set, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %q", tc.set, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "vk_live_abc123") {
			t.Errorf("%v: the error repeats the key: %v", tc.set, err)
		}
	}
}

func TestLoadConfigKeyFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "key")
	os.WriteFile(good, []byte("vk_from_file\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	two := filepath.Join(dir, "two")
	os.WriteFile(two, []byte("a\nb\n"), 0o600)

	// The key read from the file is the one the client sends: a fake API
	// that accepts only it imports.
	api := versoritest.NewServer(versoritest.WithAPIKey("vk_from_file"))
	defer api.Close()
	e := valid()
	delete(e, "VERSORI_API_KEY")
	e["VERSORI_API_KEY_FILE"] = good
	e["VERSORI_BASE_URL"] = api.URL
	c, err := loadConfig(env(e), false)
	if err != nil || c.client == nil {
		t.Fatalf("key file: %v", err)
	}
	if _, err := c.client.ImportPublicConnectorVersion(context.Background(), "01HZY00000000000000000000A", "01HZY00000000000000000000C", "1.0"); err != nil {
		t.Fatalf("import with the key from the file: %v", err)
	}
	for _, path := range []string{empty, two} {
		e["VERSORI_API_KEY_FILE"] = path
		if _, err := loadConfig(env(e), false); err == nil || !strings.Contains(err.Error(), "VERSORI_API_KEY_FILE") {
			t.Errorf("%s: %v", path, err)
		}
	}
	e["VERSORI_API_KEY"] = "vk_both"
	e["VERSORI_API_KEY_FILE"] = good
	if _, err := loadConfig(env(e), false); err == nil || !strings.Contains(err.Error(), "only one") {
		t.Errorf("key and key file together: %v", err)
	}
}

func TestDemoRefusesRealSettings(t *testing.T) {
	if _, err := loadConfig(env(map[string]string{}), true); err != nil {
		t.Fatalf("demo on an empty environment: %v", err)
	}
	for _, name := range []string{"REDIS_URL", "VERSORI_BASE_URL", "VERSORI_API_KEY", "VERSORI_API_KEY_FILE"} {
		_, err := loadConfig(env(map[string]string{name: "redis://prod:6379"}), true)
		if err == nil || !strings.Contains(err.Error(), name+": is set, but --demo") {
			t.Errorf("--demo with %s set: %v", name, err)
		}
	}
}

func TestRunPrintsOneLinePerProblemAndExits2(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(nil, env(map[string]string{"IMPORT_RATE_LIMIT": "x"}), &out, &errb)
	if code != exitConfig {
		t.Fatalf("exit %d, want %d", code, exitConfig)
	}
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want one line for each of the 3 problems, got:\n%s", errb.String())
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "worker: configuration: ") {
			t.Errorf("line %q", l)
		}
	}
	if code := run([]string{"--version"}, env(nil), &out, &errb); code != exitOK || !strings.Contains(out.String(), "worker ") {
		t.Errorf("--version: exit %d, %q", code, out.String())
	}
	if code := run([]string{"stray"}, env(nil), &out, &errb); code != exitConfig {
		t.Errorf("a stray argument: exit %d", code)
	}
}

func TestRunRedisUnreachableExits1(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(nil, env(map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0", "VERSORI_API_KEY": "k", "METRICS_ADDR": "127.0.0.1:0"}), &out, &errb)
	if code != exitRuntime || !strings.Contains(errb.String(), "redis unreachable") {
		t.Fatalf("exit %d:\n%s", code, errb.String())
	}
}

// TestLoadConfigBounds covers values that used to pass the check and fail
// later (or overflow): each must be refused at start, naming its variable.
func TestLoadConfigBounds(t *testing.T) {
	for _, tc := range []struct {
		set  map[string]string
		want string // "" means accepted
	}{
		{map[string]string{"IMPORT_RATE_LIMIT": "20000"}, "IMPORT_RATE_LIMIT: \"20000\" is not a number of calls per second from 0.001 to 10000"},
		{map[string]string{"IMPORT_RATE_LIMIT": "0.0001"}, "IMPORT_RATE_LIMIT:"},
		{map[string]string{"IMPORT_RATE_LIMIT": "Inf"}, "IMPORT_RATE_LIMIT:"},
		{map[string]string{"IMPORT_RATE_LIMIT": "0"}, ""},
		{map[string]string{"IMPORT_RATE_LIMIT": "10000"}, ""},
		{map[string]string{"IMPORT_RATE_LIMIT": "0.001"}, ""},
		{map[string]string{"IMPORT_RATE_MAX_WAIT": "2562047h", "VERSORI_TIMEOUT": "2562047h"}, "IMPORT_RATE_MAX_WAIT: 2562047h is longer than the 1h0m0s allowed"},
		{map[string]string{"VERSORI_TIMEOUT": "2562047h"}, "VERSORI_TIMEOUT: 2562047h is longer"},
		{map[string]string{"VERSORI_TIMEOUT": "1e300"}, "VERSORI_TIMEOUT: 1e300 is longer"},
		{map[string]string{"IMPORT_RATE_MAX_WAIT": "1h", "VERSORI_TIMEOUT": "1h"}, ""},
		{map[string]string{"WORKER_SHUTDOWN_TIMEOUT": "100000h"}, "WORKER_SHUTDOWN_TIMEOUT: 100000h is longer"},
		{map[string]string{"IMPORT_RATE_BURST": "100000"}, "IMPORT_RATE_BURST: 100000 is above IMPORT_RATE_LIMIT 10"},
		{map[string]string{"IMPORT_RATE_BURST": "11"}, "IMPORT_RATE_BURST: 11 is above"},
		{map[string]string{"IMPORT_RATE_BURST": "10"}, ""},
		{map[string]string{"IMPORT_RATE_BURST": "1", "IMPORT_RATE_LIMIT": "0.5"}, ""},
		{map[string]string{"IMPORT_RATE_BURST": "500", "IMPORT_RATE_LIMIT": "0"}, ""},
	} {
		e := valid()
		for k, v := range tc.set {
			e[k] = v
		}
		c, err := loadConfig(env(e), false)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: unexpected error %v", tc.set, err)
		case tc.want == "" && c.ShutdownTimeout <= 0:
			t.Errorf("%v: shutdown timeout %s", tc.set, c.ShutdownTimeout)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: error %v, want one saying %q", tc.set, err, tc.want)
		}
	}
}

// TestLoadConfigKeyFileBounded: a key file that never ends is refused at
// start, naming the variable, within a moment.
func TestLoadConfigKeyFileBounded(t *testing.T) {
	e := valid()
	delete(e, "VERSORI_API_KEY")
	e["VERSORI_API_KEY_FILE"] = "/dev/zero"
	start := time.Now()
	_, err := loadConfig(env(e), false)
	if err == nil || !strings.HasPrefix(err.Error(), "VERSORI_API_KEY_FILE:") || !strings.Contains(err.Error(), "API key file /dev/zero: longer than 4096 bytes") {
		t.Errorf("error %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s", d)
	}
}

// TestLoadConfigMessages: each problem is reported once, every problem at
// once, and in words that say what is wrong.
func TestLoadConfigMessages(t *testing.T) {
	e := valid()
	e["VERSORI_AUTH_SCHEME"] = "Basic"
	_, err := loadConfig(env(e), false)
	if err == nil || strings.Count(err.Error(), "VERSORI_AUTH_SCHEME") != 1 {
		t.Errorf("Basic scheme reported %d times: %v", strings.Count(fmt.Sprint(err), "VERSORI_AUTH_SCHEME"), err)
	}

	e = valid()
	e["VERSORI_BASE_URL"] = "http://example.com"
	e["VERSORI_API_KEY"] = "a b"
	_, err = loadConfig(env(e), false)
	if err == nil || !strings.Contains(err.Error(), "VERSORI_BASE_URL:") || !strings.Contains(err.Error(), "VERSORI_API_KEY:") {
		t.Errorf("a bad base URL hides a bad key: %v", err)
	}

	e = valid()
	e["WORKER_QUEUE"] = strings.Repeat("q", 100)
	if _, err = loadConfig(env(e), false); err == nil || !strings.Contains(err.Error(), "100 characters long, at most 64") {
		t.Errorf("long queue: %v", err)
	}

	e = valid()
	e["REDIS_URL"] = "garbage"
	if _, err = loadConfig(env(e), false); err == nil || !strings.Contains(err.Error(), "REDIS_URL: not a Redis URL (want redis://") {
		t.Errorf("garbage REDIS_URL: %v", err)
	}
}

func TestLoadConfigRetention(t *testing.T) {
	for v, want := range map[string]time.Duration{
		"": 720 * time.Hour, "720h": 720 * time.Hour, "2s": 2 * time.Second, "168h30m": 168*time.Hour + 30*time.Minute,
		"off": rollout.NoRetention, "OFF": rollout.NoRetention, "0": rollout.NoRetention, "0s": rollout.NoRetention,
	} {
		e := valid()
		e["ROLLOUT_RETENTION"] = v
		c, err := loadConfig(env(e), false)
		if err != nil {
			t.Fatalf("ROLLOUT_RETENTION=%q: %v", v, err)
		}
		if c.Retention != want {
			t.Errorf("ROLLOUT_RETENTION=%q: %s, want %s", v, c.Retention, want)
		}
	}
	for _, v := range []string{"-1h", "30", "30d", "forever", "500ms", "1e3"} {
		e := valid()
		e["ROLLOUT_RETENTION"] = v
		_, err := loadConfig(env(e), false)
		if err == nil {
			t.Errorf("ROLLOUT_RETENTION=%q accepted", v)
			continue
		}
		lines := strings.Split(err.Error(), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "ROLLOUT_RETENTION: ") {
			t.Errorf("ROLLOUT_RETENTION=%q: %q, want one line naming the variable", v, err)
		}
	}
}
