package deploy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// Paths of the files under test, relative to deploy/ (the tests' working
// directory).
const (
	dashboardPath      = "grafana/dashboards/versori-import.json"
	rulesPath          = "prometheus/rules.yml"
	rulesTestPath      = "prometheus/rules_test.yml"
	prometheusConfPath = "prometheus/prometheus.yml"
	prometheusRulePath = "kubernetes/prometheusrule.yaml"
	scaledObjectPath   = "kubernetes/scaledobject.yaml"
	readmePath         = "README.md"
)

// query is one PromQL expression found in a deploy file, with where it came
// from for error messages.
type query struct {
	where string
	expr  string
}

// rulesFile is the part of a Prometheus rules file the tests read.
type rulesFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Alert       string            `json:"alert"`
	Record      string            `json:"record"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

func readRules(t *testing.T, path string) rulesFile {
	t.Helper()
	var f rulesFile
	if err := yaml.Unmarshal(readFile(t, path), &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(f.Groups) == 0 {
		t.Fatalf("%s: no rule groups", path)
	}
	return f
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.FromSlash(path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ruleQueries returns the expression of every rule in rules.yml.
func ruleQueries(t *testing.T) []query {
	t.Helper()
	var out []query
	for _, g := range readRules(t, rulesPath).Groups {
		for _, r := range g.Rules {
			out = append(out, query{where: rulesPath + ": " + r.Alert + r.Record, expr: r.Expr})
		}
	}
	return out
}

// dashboardQueries walks the committed dashboard JSON (not the generator:
// what Grafana loads is what must be right) and returns every panel target's
// expression and every variable's label_values query.
func dashboardQueries(t *testing.T) (targets, variables []query) {
	t.Helper()
	var d struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(readFile(t, dashboardPath), &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	var walk func(raw []json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p struct {
				Title   string            `json:"title"`
				Panels  []json.RawMessage `json:"panels"`
				Targets []struct {
					RefID string `json:"refId"`
					Expr  string `json:"expr"`
				} `json:"targets"`
			}
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("%s: panel: %v", dashboardPath, err)
			}
			for _, tg := range p.Targets {
				targets = append(targets, query{where: dashboardPath + ": panel " + p.Title + " " + tg.RefID, expr: tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			// The older form: the query as a plain string.
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Fatalf("%s: variable %s: query: %v", dashboardPath, v.Name, err)
			}
		}
		variables = append(variables, query{where: dashboardPath + ": variable " + v.Name, expr: q.Query})
	}
	return targets, variables
}

// scaledObjectQueries returns the PromQL of the KEDA ScaledObject's
// Prometheus triggers.
func scaledObjectQueries(t *testing.T) []query {
	t.Helper()
	var so struct {
		Spec struct {
			Triggers []struct {
				Type     string            `json:"type"`
				Metadata map[string]string `json:"metadata"`
			} `json:"triggers"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(readFile(t, scaledObjectPath), &so); err != nil {
		t.Fatalf("%s: %v", scaledObjectPath, err)
	}
	var out []query
	for _, tr := range so.Spec.Triggers {
		if tr.Type == "prometheus" {
			out = append(out, query{where: scaledObjectPath, expr: tr.Metadata["query"]})
		}
	}
	return out
}

// allQueries returns every PromQL expression deploy/ ships. label_values
// variable queries are reduced to their series selector.
func allQueries(t *testing.T) []query {
	t.Helper()
	targets, variables := dashboardQueries(t)
	out := append(ruleQueries(t), targets...)
	for _, v := range variables {
		m := labelValuesQuery.FindStringSubmatch(v.expr)
		if m == nil {
			t.Fatalf("%s: %q is not label_values(selector, label)", v.where, v.expr)
		}
		// Turn it into a selector whose matchers name the label, so the
		// label is checked like any matcher's.
		out = append(out, query{where: v.where, expr: strings.TrimSpace(m[1])})
		out = append(out, query{where: v.where + " (label " + m[2] + ")", expr: withMatcher(m[1], m[2])})
	}
	return append(out, scaledObjectQueries(t)...)
}

// withMatcher adds label!="" to a bare or braced selector.
func withMatcher(sel, label string) string {
	sel = strings.TrimSpace(sel)
	if strings.HasSuffix(sel, "}") {
		return strings.TrimSuffix(sel, "}") + "," + label + `!=""}`
	}
	return sel + "{" + label + `!=""}`
}
