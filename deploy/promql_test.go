package deploy_test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The Prometheus module's own PromQL parser drags in a module graph whose
// `go mod tidy` fails here (an ambiguous genproto import), so the deploy
// tests read PromQL with the small scanner below. It needs to know only
// enough of the language to tell metric names from functions, keywords and
// label names; promtool (check rules) validates the full syntax.

// selector is one vector selector of an expression: a metric name and the
// label names its matchers use.
type selector struct {
	name   string
	labels []string
}

// promqlFunctions are the functions and aggregation operators the scanner
// accepts before "(" or as aggregations; a name outside this list followed by
// "(" is an error, so a misspelt function cannot pass for a metric.
var promqlFunctions = map[string]bool{}

func init() {
	for _, f := range strings.Fields(`
		sum avg min max count stddev stdvar topk bottomk quantile count_values group limitk limit_ratio
		abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month day_of_week
		day_of_year days_in_month delta deriv exp floor histogram_quantile histogram_count histogram_sum
		histogram_fraction histogram_avg histogram_stddev histogram_stdvar holt_winters hour idelta increase
		irate label_join label_replace ln log10 log2 minute month predict_linear rate resets round scalar
		sgn sort sort_desc sort_by_label sort_by_label_desc sqrt time timestamp vector year
		avg_over_time min_over_time max_over_time sum_over_time count_over_time quantile_over_time
		stddev_over_time stdvar_over_time last_over_time present_over_time mad_over_time
		acos acosh asin asinh atan atanh cos cosh sin sinh tan tanh deg rad pi`) {
		promqlFunctions[f] = true
	}
}

// aggregations may be followed by "by (...)" or "without (...)" instead of
// their argument list.
var aggregations = map[string]bool{
	"sum": true, "avg": true, "min": true, "max": true, "count": true, "stddev": true, "stdvar": true,
	"topk": true, "bottomk": true, "quantile": true, "count_values": true, "group": true,
}

// labelListKeywords are followed by a parenthesised list of label names.
var labelListKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// plainKeywords are binary operators and modifiers spelt as words, and the
// float literals Inf and NaN.
var plainKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "offset": true, "bool": true, "atan2": true,
	"inf": true, "nan": true, "start": true, "end": true,
}

// grafanaVars stands in for the dashboard's variables so an expression can
// be scanned and handed to promtool.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h",
	"$datasource", "prometheus", "$job", ".*", "$instance", ".*", "$rollout", ".*",
)

// selectors returns the vector selectors of a PromQL expression, after
// substituting the dashboard's variables.
func selectors(expr string) ([]selector, error) {
	s := grafanaVars.Replace(expr)
	var out []selector
	i := 0
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	skipSpace := func(j int) int {
		for j < len(s) && strings.IndexByte(" \t\r\n", s[j]) >= 0 {
			j++
		}
		return j
	}
	// skipString returns the index after the string literal starting at j.
	skipString := func(j int) (int, error) {
		quote := s[j]
		for j++; j < len(s); j++ {
			if s[j] == '\\' && quote != '`' {
				j++
				continue
			}
			if s[j] == quote {
				return j + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated string at %d in %q", j, expr)
	}
	// skipTo returns the index after the first closing byte at or after j,
	// skipping strings.
	skipTo := func(j int, closing byte) (int, error) {
		for j < len(s) {
			switch c := s[j]; {
			case c == '"' || c == '\'' || c == '`':
				var err error
				if j, err = skipString(j); err != nil {
					return 0, err
				}
			case c == closing:
				return j + 1, nil
			default:
				j++
			}
		}
		return 0, fmt.Errorf("missing %q in %q", closing, expr)
	}
	// matchers reads a {...} block starting at j and returns its label names.
	matchers := func(j int) ([]string, int, error) {
		var labels []string
		j++ // {
		for {
			j = skipSpace(j)
			if j >= len(s) {
				return nil, 0, fmt.Errorf("unterminated matchers in %q", expr)
			}
			if s[j] == '}' {
				return labels, j + 1, nil
			}
			if s[j] == ',' {
				j++
				continue
			}
			start := j
			for j < len(s) && isIdent(s[j]) {
				j++
			}
			if start == j {
				return nil, 0, fmt.Errorf("bad matcher at %d in %q", start, expr)
			}
			labels = append(labels, s[start:j])
			j = skipSpace(j)
			for j < len(s) && strings.IndexByte("=!~", s[j]) >= 0 {
				j++
			}
			j = skipSpace(j)
			if j >= len(s) || s[j] != '"' && s[j] != '\'' && s[j] != '`' {
				return nil, 0, fmt.Errorf("matcher %s without a string value in %q", labels[len(labels)-1], expr)
			}
			var err error
			if j, err = skipString(j); err != nil {
				return nil, 0, err
			}
		}
	}

	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			var err error
			if i, err = skipString(i); err != nil {
				return nil, err
			}
		case c >= '0' && c <= '9' || c == '.':
			// Numbers and durations (5m, 1h30m, 0.95, 1e3).
			for i < len(s) && (isIdent(s[i]) || s[i] == '.') {
				i++
			}
		case c == '[':
			// Range or subquery: durations only.
			var err error
			if i, err = skipTo(i, ']'); err != nil {
				return nil, err
			}
		case c == '{':
			return nil, fmt.Errorf("selector without a metric name at %d in %q", i, expr)
		case c == '$':
			return nil, fmt.Errorf("unknown variable at %d in %q", i, expr)
		case isIdentStart(c):
			start := i
			for i < len(s) && isIdent(s[i]) {
				i++
			}
			word := s[start:i]
			next := skipSpace(i)
			lower := strings.ToLower(word)
			switch {
			case labelListKeywords[lower]:
				if next < len(s) && s[next] == '(' {
					var err error
					if i, err = skipTo(next, ')'); err != nil {
						return nil, err
					}
				} else if lower != "group_left" && lower != "group_right" {
					return nil, fmt.Errorf("%s without a label list in %q", word, expr)
				}
			case plainKeywords[lower]:
			case aggregations[word]:
			case next < len(s) && s[next] == '(':
				if !promqlFunctions[word] {
					return nil, fmt.Errorf("unknown function %s in %q", word, expr)
				}
			default:
				sel := selector{name: word}
				if next < len(s) && s[next] == '{' {
					labels, j, err := matchers(next)
					if err != nil {
						return nil, err
					}
					sel.labels, i = labels, j
				}
				out = append(out, sel)
			}
		default:
			i++ // operators, parentheses, commas
		}
	}
	return out, nil
}

// labelValuesQuery matches a Grafana variable query label_values(expr, label).
var labelValuesQuery = regexp.MustCompile(`^\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

func TestSelectors(t *testing.T) {
	tests := []struct {
		expr    string
		want    []selector
		wantErr string
	}{
		{expr: `up`, want: []selector{{name: "up"}}},
		{expr: `sum by (le) (rate(foo_bucket{job=~"$job",le!="+Inf"}[$__rate_interval]))`,
			want: []selector{{name: "foo_bucket", labels: []string{"job", "le"}}}},
		{expr: `sum(rate(a_total{class!~"x|y"}[5m])) / ignoring (class) group_left sum(rate(b_total[5m]))`,
			want: []selector{{name: "a_total", labels: []string{"class"}}, {name: "b_total"}}},
		{expr: `max(x) - max(y offset 30m) > bool 0.5 and on (job) z unless w`,
			want: []selector{{name: "x"}, {name: "y"}, {name: "z"}, {name: "w"}}},
		{expr: `histogram_quantile(0.95, sum(rate(h_bucket[1m])) by (le))`,
			want: []selector{{name: "h_bucket"}}},
		{expr: `label_replace(m{a="b,c}"}, "dst", "$1", "src", "(.*)")`,
			want: []selector{{name: "m", labels: []string{"a"}}}},
		{expr: `avg_over_time(max by (job) (g)[15m:1m]) > 1e3`, want: []selector{{name: "g"}}},
		{expr: "m{a=`raw\"`} # comment names_no_metric", want: []selector{{name: "m", labels: []string{"a"}}}},
		{expr: `sum without (instance) (m) or vector(0)`, want: []selector{{name: "m"}}},
		{expr: `{__name__="foo"}`, wantErr: "without a metric name"},
		{expr: `rte(foo[5m])`, wantErr: "unknown function rte"},
		{expr: `foo{job="x"`, wantErr: "unterminated"},
		{expr: `foo{job}`, wantErr: "without a string value"},
		{expr: `foo{job="$unknown"} + $bar`, wantErr: "unknown variable"},
		{expr: `sum by le (foo)`, wantErr: "without a label list"},
		{expr: `rate(foo[5m)`, wantErr: "missing"},
	}
	for _, tc := range tests {
		got, err := selectors(tc.expr)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("selectors(%q) error = %v, want one containing %q", tc.expr, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("selectors(%q): %v", tc.expr, err)
			continue
		}
		if !slices.EqualFunc(got, tc.want, func(a, b selector) bool {
			return a.name == b.name && slices.Equal(a.labels, b.labels)
		}) {
			t.Errorf("selectors(%q) = %v, want %v", tc.expr, got, tc.want)
		}
	}
}
