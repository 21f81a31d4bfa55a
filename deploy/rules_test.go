package deploy_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// promtool returns the path of Debian's promtool (package prometheus). A
// missing promtool skips the test, or fails it under REDISTEST_REQUIRED=1,
// which `make test` sets after `make deps` installed it.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("REDISTEST_REQUIRED") == "1" {
			t.Fatal("promtool not found (apt-get install prometheus, or make deps)")
		}
		t.Skip("promtool not found; install Debian's prometheus package to run this test")
	}
	return p
}

// runPromtool runs promtool in dir and fails the test with its output when
// it exits non-zero.
func runPromtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestPromtoolCheckRules(t *testing.T) {
	out := runPromtool(t, ".", "check", "rules", rulesPath)
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool check rules said:\n%s", out)
	}
}

// TestPromtoolTestRules runs the alerts' unit tests (rules_test.yml): each
// alert fires on its input series and stays quiet on the negative cases.
func TestPromtoolTestRules(t *testing.T) {
	out := runPromtool(t, "prometheus", "test", "rules", filepath.Base(rulesTestPath))
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules said:\n%s", out)
	}
}

// TestPromtoolTestRulesCatchesBrokenRule guards the guard: a rules file
// whose threshold is wrong must fail the same unit tests.
func TestPromtoolTestRulesCatchesBrokenRule(t *testing.T) {
	dir := t.TempDir()
	rules := string(readFile(t, rulesPath))
	broken := strings.Replace(rules, "max by (job) (versori_import_queue_paused) > 0", "max by (job) (versori_import_queue_paused) > 1", 1)
	if broken == rules {
		t.Fatal("the paused alert's expression moved; update this test")
	}
	must(t, os.WriteFile(filepath.Join(dir, "rules.yml"), []byte(broken), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "rules_test.yml"), readFile(t, rulesTestPath), 0o644))
	cmd := exec.Command(promtool(t), "test", "rules", "rules_test.yml")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "VersoriImportQueuePaused") {
		t.Fatalf("promtool test rules passed a broken rule: %v\n%s", err, out)
	}
}

// TestPromtoolCheckConfig checks the compose Prometheus configuration, with
// the rules path it mounts rewritten to a local copy.
func TestPromtoolCheckConfig(t *testing.T) {
	dir := t.TempDir()
	conf := string(readFile(t, prometheusConfPath))
	const mounted = "/etc/prometheus/rules.yml"
	if !strings.Contains(conf, mounted) {
		t.Fatalf("%s does not load %s", prometheusConfPath, mounted)
	}
	must(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(strings.ReplaceAll(conf, mounted, "rules.yml")), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "rules.yml"), readFile(t, rulesPath), 0o644))
	out := runPromtool(t, dir, "check", "config", "prometheus.yml")
	if !strings.Contains(out, "SUCCESS: 1 rule files found") {
		t.Fatalf("promtool check config did not load the rules:\n%s", out)
	}
}

// TestQueriesParse hands every dashboard and KEDA expression, with the
// dashboard's variables substituted, to promtool as a recording rule, so
// PromQL syntax errors in panels fail here rather than in Grafana.
func TestQueriesParse(t *testing.T) {
	targets, variables := dashboardQueries(t)
	queries := append(targets, scaledObjectQueries(t)...)
	for _, v := range variables {
		m := labelValuesQuery.FindStringSubmatch(v.expr)
		if m == nil {
			t.Fatalf("%s: %q is not label_values(selector, label)", v.where, v.expr)
		}
		queries = append(queries, query{where: v.where, expr: m[1]})
	}
	type recording struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []recording
	var index strings.Builder
	for i, q := range queries {
		rules = append(rules, recording{Record: fmt.Sprintf("q%d", i), Expr: grafanaVars.Replace(q.expr)})
		fmt.Fprintf(&index, "q%d: %s\n", i, q.where)
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "queries", "rules": rules}}})
	must(t, err)
	path := filepath.Join(t.TempDir(), "queries.yml")
	must(t, os.WriteFile(path, b, 0o644))
	cmd := exec.Command(promtool(t), "check", "rules", path)
	out, err := cmd.CombinedOutput()
	if want := fmt.Sprintf("SUCCESS: %d rules found", len(queries)); err != nil || !strings.Contains(string(out), want) {
		t.Fatalf("promtool check rules: %v, want %q in\n%s\nwhere\n%s", err, want, out, index.String())
	}
}

// TestAlertsDocumentedAndTested checks that every alert has a severity, a
// summary, a description and a runbook_url whose anchor is a heading of
// deploy/README.md, and that rules_test.yml makes it both fire and stay
// quiet.
func TestAlertsDocumentedAndTested(t *testing.T) {
	anchors := markdownAnchors(string(readFile(t, readmePath)))
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(readFile(t, rulesTestPath), &tests); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	const runbookBase = "https://github.com/versori/import-worker/blob/main/deploy/README.md#"
	n := 0
	for _, g := range readRules(t, rulesPath).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbookBase)
			if !ok {
				t.Errorf("%s: runbook_url %q does not point into deploy/README.md", r.Alert, r.Annotations["runbook_url"])
			} else if !anchors[anchor] {
				t.Errorf("%s: deploy/README.md has no heading with anchor #%s", r.Alert, anchor)
			}
			if !fires[r.Alert] {
				t.Errorf("%s: no test in %s expects it to fire", r.Alert, rulesTestPath)
			}
			if !quiet[r.Alert] {
				t.Errorf("%s: no test in %s expects it to stay quiet", r.Alert, rulesTestPath)
			}
		}
	}
	if n < 6 {
		t.Errorf("%d alerts, want at least the six of the issue", n)
	}
}

// markdownAnchors returns the anchors GitHub gives a document's headings:
// lower case, punctuation dropped, spaces turned into hyphens.
func markdownAnchors(doc string) map[string]bool {
	out := map[string]bool{}
	heading := regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*$`)
	drop := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	for _, m := range heading.FindAllStringSubmatch(doc, -1) {
		a := strings.ToLower(drop.ReplaceAllString(m[1], ""))
		out[strings.ReplaceAll(a, " ", "-")] = true
	}
	return out
}

// TestPrometheusRuleMatchesRules checks that the Kubernetes PrometheusRule
// carries exactly the groups of rules.yml, so compose and the Prometheus
// Operator alert alike.
func TestPrometheusRuleMatchesRules(t *testing.T) {
	var file struct {
		Groups any `json:"groups"`
	}
	must(t, yaml.Unmarshal(readFile(t, rulesPath), &file))
	var cr struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Spec       struct {
			Groups any `json:"groups"`
		} `json:"spec"`
	}
	must(t, yaml.Unmarshal(readFile(t, prometheusRulePath), &cr))
	if cr.APIVersion != "monitoring.coreos.com/v1" || cr.Kind != "PrometheusRule" {
		t.Errorf("%s is %s %s, want monitoring.coreos.com/v1 PrometheusRule", prometheusRulePath, cr.APIVersion, cr.Kind)
	}
	if !reflect.DeepEqual(file.Groups, cr.Spec.Groups) {
		t.Errorf("%s differs from %s: run go generate ./deploy/...", prometheusRulePath, rulesPath)
	}
	if !bytes.HasPrefix(readFile(t, prometheusRulePath), []byte("# Code generated")) {
		t.Errorf("%s lacks its generated-code header", prometheusRulePath)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
