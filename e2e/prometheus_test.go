package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/versori/import-worker/internal/e2etest"
	"github.com/versori/import-worker/internal/redistest"
	"github.com/versori/import-worker/versori/versoritest"
)

// TestPrometheusScrapesARollout runs Debian's real Prometheus against two
// real workers during a rollout, with the project's alert rules loaded, and
// runs every query of the Grafana dashboard through its HTTP API: the main
// panels must return data, and no query may fail.
func TestPrometheusScrapesARollout(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("REDISTEST_REQUIRED") == "1" {
			t.Fatal("prometheus not on PATH (make deps installs Debian's package)")
		}
		t.Skip("prometheus not on PATH")
	}
	root := repoRoot(t)
	api := versoritest.NewServer(
		versoritest.WithLatency(versoritest.Latency{Distribution: versoritest.Normal, Mean: 20 * time.Millisecond, Jitter: 5 * time.Millisecond}),
		versoritest.WithFaultRates(map[versoritest.FaultKind]float64{versoritest.FaultServerError: 0.05, versoritest.FaultRateLimited: 0.01}),
	)
	f := newFleet(t, api, redistest.Options{})
	f.start(2, map[string]string{"IMPORT_RATE_LIMIT": "40", "RETRY_BACKOFF_CAP": "3s"})

	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: versori-import
    static_configs:
      - targets: [%q, %q]
`, filepath.Join(root, "deploy/prometheus/rules.yml"), f.workers[0].Addr, f.workers[1].Addr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	promAddr := e2etest.FreeAddr(t)
	prom := exec.Command(promBin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr)
	logf, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	prom.Stdout, prom.Stderr = logf, logf
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = prom.Process.Kill()
		_ = prom.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", b)
		}
	})
	waitHTTP(t, "http://"+promAddr+"/-/ready", 30*time.Second)

	f.enqueue("prom", 800)
	// Let Prometheus see the rollout under way for a while.
	time.Sleep(12 * time.Second)
	queries := dashboardQueries(t, root)
	during := map[string]int{}
	for _, q := range queries {
		during[q] = len(promQuery(t, promAddr, q))
	}
	f.waitDone("prom", 3*time.Minute)
	time.Sleep(3 * time.Second)

	// Panels that must show data while a rollout runs.
	must := []string{
		"versori_import_rollout_orgs", "versori_import_imports_total", "versori_import_call_duration_seconds_bucket",
		"versori_import_rate_wait_seconds_bucket", "versori_import_rate_limit_calls_per_second",
		"asynq_queue_size", "asynq_queue_latency_seconds", "versori_import_handlers_busy",
		"process_resident_memory_bytes", "go_goroutines", "versori_import_orgs_finished_total",
	}
	withData := 0
	for _, q := range queries {
		if during[q] > 0 {
			withData++
		}
	}
	for _, metric := range must {
		found := false
		for _, q := range queries {
			if strings.Contains(q, metric) && during[q] > 0 {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("no dashboard query on %s returned data during the rollout", metric)
		}
	}
	// The rules loaded and evaluate without error.
	var rules struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name, Health, LastError string
				}
			}
		}
	}
	getJSON(t, "http://"+promAddr+"/api/v1/rules", &rules)
	nRules := 0
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			nRules++
			if r.Health != "ok" && r.Health != "unknown" {
				t.Errorf("rule %s: health %s: %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	if nRules == 0 {
		t.Error("prometheus loaded no rules")
	}
	figure(t, "%d dashboard queries, %d returned data during the rollout; %d rules loaded and healthy", len(queries), withData, nRules)
}

func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// dashboardQueries returns every target expression of the dashboard with its
// variables filled in as Grafana would for "All".
func dashboardQueries(t *testing.T, root string) []string {
	b, err := os.ReadFile(filepath.Join(root, "deploy/grafana/dashboards/versori-import.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	r := strings.NewReplacer("$job", ".*", "$instance", ".*", "$rollout", ".*", "$__rate_interval", "10s", "$__range", "5m", "$__interval", "1s")
	var out []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			if tg.Expr != "" {
				out = append(out, r.Replace(tg.Expr))
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	return out
}

// promQuery runs an instant query and returns its result vector; a query
// Prometheus rejects fails the test.
func promQuery(t *testing.T, addr, q string) []json.RawMessage {
	t.Helper()
	var resp struct {
		Status, Error string
		Data          struct {
			Result []json.RawMessage
		}
	}
	getJSON(t, "http://"+addr+"/api/v1/query?query="+url.QueryEscape(q), &resp)
	if resp.Status != "success" {
		t.Errorf("query %s: %s", q, resp.Error)
	}
	return resp.Data.Result
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

func waitHTTP(t *testing.T, u string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %s", u, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
