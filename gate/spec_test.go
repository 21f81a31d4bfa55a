package gate

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

const errorRatio = `sum(rate(import_failures_total{job="import-worker"}[5m])) / sum(rate(import_total{job="import-worker"}[5m]))`

func TestValidateGood(t *testing.T) {
	for _, q := range []string{
		errorRatio,
		`up`,
		`1`,
		`scalar(sum(up))`,
		`histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))`,
		`avg_over_time(up[10m:1m])`,
		"sum(\n  rate(x[5m])\n)",
		`limitk(1, up)`, // experimental: accepted locally, Prometheus decides
	} {
		s := Spec{Query: q, Condition: "< 0.05"}.WithDefaults()
		if err := s.Validate(); err != nil {
			t.Errorf("Validate(%q): %v", q, err)
		}
	}
	for _, s := range []Spec{
		{Query: "up", Condition: "== 1", Count: 1, Interval: Duration(time.Second)},
		{Query: "up", Condition: "== 1", Count: 100, Interval: Duration(time.Hour)},
	} {
		if err := s.Validate(); err != nil {
			t.Errorf("Validate(%+v): %v", s, err)
		}
	}
}

func TestValidateBad(t *testing.T) {
	ok := Spec{Query: "up", Condition: "== 1"}.WithDefaults()
	cases := []struct {
		name string
		edit func(*Spec)
		want string
	}{
		{"empty query", func(s *Spec) { s.Query = "" }, "gate query: empty; want a PromQL instant query"},
		{"blank query", func(s *Spec) { s.Query = " \n\t" }, "gate query: empty"},
		{"unbalanced", func(s *Spec) { s.Query = "sum(rate(x[5m])" }, "gate query: 1:16: parse error: unclosed left parenthesis"},
		{"bad duration", func(s *Spec) { s.Query = "rate(x[5y5])" }, "gate query: 1:"},
		{"unknown function", func(s *Spec) { s.Query = "rates(x[5m])" }, `gate query: 1:1: parse error: unknown function with name "rates"`},
		{"trailing junk", func(s *Spec) { s.Query = "up up" }, "gate query: 1:4: parse error:"},
		{"second line", func(s *Spec) { s.Query = "sum(\n  up{)" }, "gate query: 2:"},
		{"range vector", func(s *Spec) { s.Query = "x[5m]" }, `gate query "x[5m]": is a range vector; want an instant vector or a scalar`},
		{"subquery", func(s *Spec) { s.Query = "rate(x[5m])[1m:]" }, "is a range vector"},
		{"string", func(s *Spec) { s.Query = `"up"` }, `gate query "\"up\"": is a string; want an instant vector or a scalar`},
		{"bad condition", func(s *Spec) { s.Condition = "=> 1" }, `gate condition "=> 1": want an operator (<, <=, >, >=, ==, !=) and a number`},
		{"no condition", func(s *Spec) { s.Condition = "" }, `gate condition "": want an operator`},
		{"count 0", func(s *Spec) { s.Count = 0 }, "gate count 0: want 1 to 100"},
		{"count 101", func(s *Spec) { s.Count = 101 }, "gate count 101: want 1 to 100"},
		{"count -1", func(s *Spec) { s.Count = -1 }, "gate count -1: want 1 to 100"},
		{"interval 0", func(s *Spec) { s.Interval = 0 }, "gate interval 0s: want 1s to 1h0m0s"},
		{"interval 0.5s", func(s *Spec) { s.Interval = Duration(500 * time.Millisecond) }, "gate interval 500ms: want 1s to 1h0m0s"},
		{"interval 2h", func(s *Spec) { s.Interval = Duration(2 * time.Hour) }, "gate interval 2h0m0s: want 1s to 1h0m0s"},
		{"interval negative", func(s *Spec) { s.Interval = Duration(-time.Second) }, "gate interval -1s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			tc.edit(&s)
			err := s.Validate()
			if err == nil {
				t.Fatalf("Validate(%+v) succeeded", s)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate(%+v) = %q, want it to contain %q", s, err, tc.want)
			}
		})
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	err := Spec{Query: "x[5m]", Condition: "=> 1", Count: 101, Interval: Duration(2 * time.Hour)}.Validate()
	if err == nil {
		t.Fatal("Validate succeeded")
	}
	for _, want := range []string{"gate query", "gate condition", "gate count", "gate interval"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %q: nothing about %s", err, want)
		}
	}
}

func TestWithDefaults(t *testing.T) {
	s := Spec{Query: "up", Condition: "== 1"}.WithDefaults()
	if s.Count != DefaultCount || time.Duration(s.Interval) != DefaultInterval {
		t.Fatalf("WithDefaults = %+v", s)
	}
	s = Spec{Query: "up", Condition: "== 1", Count: 7, Interval: Duration(time.Minute)}.WithDefaults()
	if s.Count != 7 || time.Duration(s.Interval) != time.Minute {
		t.Fatalf("WithDefaults changed set fields: %+v", s)
	}
}

func TestSpecJSON(t *testing.T) {
	in := Spec{Query: errorRatio, Condition: "< 0.05", Count: 5, Interval: Duration(90 * time.Second)}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"interval":"1m30s"`) || !strings.Contains(string(b), `"count":5`) {
		t.Fatalf("JSON %s", b)
	}
	var out Spec
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("round trip: %+v, want %+v", out, in)
	}

	b, _ = json.Marshal(Spec{Query: "up", Condition: "== 1"})
	if string(b) != `{"query":"up","condition":"== 1"}` {
		t.Fatalf("unset count and interval: %s, want them left out", b)
	}
	if err := json.Unmarshal([]byte(`{"query":"up","condition":"== 1","interval":"1m"}`), &out); err != nil || time.Duration(out.Interval) != time.Minute {
		t.Fatalf("interval \"1m\": %+v, %v", out, err)
	}
	if err := json.Unmarshal([]byte(`{"interval":""}`), &out); err != nil || out.Interval != 0 {
		t.Fatalf("interval \"\": %+v, %v", out, err)
	}
	for _, bad := range []string{`{"interval":30}`, `{"interval":"30"}`, `{"interval":"soon"}`, `{"interval":true}`} {
		if err := json.Unmarshal([]byte(bad), &out); err == nil || !strings.Contains(err.Error(), "gate interval") {
			t.Errorf("Unmarshal(%s) = %v, want a gate interval error", bad, err)
		}
	}
}
