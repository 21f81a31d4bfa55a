package deploy_test

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/versori/import-worker/deploy/dashboard"
	"github.com/versori/import-worker/metrics"
)

// TestDashboardGenerated checks that the committed JSON is exactly what the
// generator writes, so an edit to one without the other cannot land.
func TestDashboardGenerated(t *testing.T) {
	want, err := dashboard.New().JSON()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, dashboardPath), want) {
		t.Fatalf("%s is not the generator's output: run go generate ./deploy/...", dashboardPath)
	}
}

// TestDashboardVariables checks the datasource, job, instance and rollout
// variables.
func TestDashboardVariables(t *testing.T) {
	d := dashboard.New()
	vars := map[string]*dashboard.Variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	ds := vars["datasource"]
	if ds == nil || ds.Type != "datasource" || ds.Query != "prometheus" {
		t.Errorf("datasource variable = %+v, want type datasource, query prometheus", ds)
	}
	for name, want := range map[string]string{
		"job":      "label_values(" + metrics.NameBuildInfo + ", job)",
		"instance": "label_values(" + metrics.NameBuildInfo + `{job=~"$job"}, instance)`,
		"rollout":  "label_values(" + metrics.NameRolloutOrgs + `{job=~"$job"}, rollout)`,
	} {
		v := vars[name]
		if v == nil {
			t.Errorf("no %s variable", name)
			continue
		}
		q, _ := v.Query.(dashboard.VariableQuery)
		if v.Type != "query" || q.Query != want || v.Datasource == nil || v.Datasource.UID != "${datasource}" {
			t.Errorf("variable %s = %+v, want a query variable %q on ${datasource}", name, v, want)
		}
		if !v.Multi || !v.IncludeAll || v.AllValue != ".*" {
			t.Errorf("variable %s: want multi-value with an All of .*", name)
		}
	}
}

// wantPanels maps each view the issue asks for to the panel showing it.
var wantPanels = map[string]string{
	"rollout progress":             "Rollout progress",
	"import rate versus the limit": "Import rate vs the fleet limit",
	"outcome classes over time":    "Outcome classes",
	"error ratio":                  "Error ratio",
	"latency p50/p95/p99":          "Import call latency",
	"rate-limit waits":             "Waiting for the budget",
	"cool-downs":                   "Shared cool-down",
	"queue depth":                  "Queue depth by state",
	"oldest-task age":              "Oldest pending task age",
	"busy handlers vs max":         "Busy handlers vs concurrency",
	"retries":                      "Retries and skips",
	"memory":                       "Memory",
	"goroutines":                   "Goroutines",
	"401 pause":                    "Queue paused (401)",
	"fleet rate vs ceiling":        "Fleet rate vs ceiling",
	"429 share":                    "429 share",
	"breaker state":                "Breaker state",
	"rate decisions and breaker":   "Rate decisions and breaker transitions",
}

// TestDashboardPanels checks the panel list, the grid and each panel's
// datasource and filters.
func TestDashboardPanels(t *testing.T) {
	d := dashboard.New()
	titles := map[string]*dashboard.Panel{}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	taken := map[cell]string{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if titles[p.Title] != nil {
			t.Errorf("panel title %q used twice", p.Title)
		}
		titles[p.Title] = p
		g := p.GridPos
		if g.X < 0 || g.W <= 0 || g.X+g.W > 24 || g.H <= 0 {
			t.Errorf("panel %q: grid position %+v off the 24-column grid", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[cell{x, y}]; ok {
					t.Errorf("panels %q and %q overlap at %d,%d", other, p.Title, x, y)
				}
				taken[cell{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Description == "" {
			t.Errorf("panel %q has no description", p.Title)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the $datasource variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q target %s does not use the $datasource variable", p.Title, tg.RefID)
			}
			sels, err := selectors(tg.Expr)
			if err != nil {
				t.Errorf("panel %q: %v", p.Title, err)
				continue
			}
			for _, s := range sels {
				if !slices.Contains(s.labels, "job") || !slices.Contains(s.labels, "instance") {
					t.Errorf("panel %q: selector %s lacks the job/instance filter in %q", p.Title, s.name, tg.Expr)
				}
				if s.name == metrics.NameRolloutOrgs && !slices.Contains(s.labels, "rollout") {
					t.Errorf("panel %q: %s ignores the rollout variable", p.Title, s.name)
				}
			}
		}
	}
	for view, title := range wantPanels {
		if titles[title] == nil {
			t.Errorf("no panel %q for %s", title, view)
		}
	}
}

// sharedState are families every replica reports identically (they are
// read from Redis at scrape time): summing them across replicas multiplies
// them.
var sharedState = []string{
	"asynq_", metrics.NameRolloutOrgs, metrics.NameRolloutsStarted, metrics.NameRolloutsFinished,
	metrics.NamePaused, metrics.NameCoolDownActive, metrics.NameCoolDownRemaining,
	metrics.NameFleetRate, metrics.NameRateAccepted, metrics.NameRateFloor, metrics.NameRateAdaptive,
	metrics.NameBreakerState,
}

// TestSharedStateNeverSummed checks every query of the dashboard, the
// alerts and the autoscaler: a sum directly over shared-state series (with
// or without rate) is wrong; max is right.
func TestSharedStateNeverSummed(t *testing.T) {
	summed := regexp.MustCompile(`\bsum\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\(\s*(?:(?:rate|increase|irate|delta)\s*\(\s*)?([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	for _, q := range allQueries(t) {
		for _, m := range summed.FindAllStringSubmatch(q.expr, -1) {
			for _, prefix := range sharedState {
				if strings.HasPrefix(m[1], prefix) {
					t.Errorf("%s: sums shared-state series %s; aggregate with max: %q", q.where, m[1], q.expr)
				}
			}
		}
	}
	// The check itself must catch the mistake it is for.
	if !summed.MatchString(`sum by (queue) (asynq_queue_size)`) || !summed.MatchString(`sum(rate(asynq_tasks_processed_total[5m]))`) {
		t.Fatal("shared-state check misses a sum")
	}
}

// TestDashboardJSONShape checks what Grafana needs of the file itself.
func TestDashboardJSONShape(t *testing.T) {
	var d map[string]any
	if err := json.Unmarshal(readFile(t, dashboardPath), &d); err != nil {
		t.Fatal(err)
	}
	if d["uid"] != dashboard.UID || d["title"] == "" {
		t.Errorf("uid %v title %v", d["uid"], d["title"])
	}
	if _, ok := d["id"]; ok {
		t.Error("a provisioned dashboard must not carry a database id")
	}
}
