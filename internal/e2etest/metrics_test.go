package e2etest

import "testing"

func TestMetricSum(t *testing.T) {
	const text = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
go_goroutines_extra 7
versori_import_calls_total{class="imported",status="2xx"} 1.5e+06 1700000000000
versori_import_rate_deferred_total{reason="budget"} 12
versori_import_rate_deferred_total{reason="cooldown"} 3
versori_import_rate_deferred_totals 100
# versori_import_rate_deferred_total 1000
bad_value x
`
	for _, tc := range []struct {
		name string
		want float64
		ok   bool
	}{
		{"go_goroutines", 42, true},
		{"versori_import_calls_total", 1.5e6, true},
		{"versori_import_rate_deferred_total", 15, true},
		{"go_gor", 0, false},
		{"bad_value", 0, false},
		{"missing", 0, false},
	} {
		got, ok := MetricSum(text, tc.name)
		if got != tc.want || ok != tc.ok {
			t.Errorf("MetricSum(%q) = %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}
