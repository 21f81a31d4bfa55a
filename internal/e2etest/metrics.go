package e2etest

import (
	"strconv"
	"strings"
)

// MetricSum returns the sum of every sample of the metric name (all its
// label sets) in a Prometheus text exposition, and whether any sample with
// a number was found. Only the name before the labels must match, so
// "go_gor" finds nothing; an optional timestamp after the value is ignored.
// It reads the text line by line rather than with expfmt so that one bad
// line does not hide the rest.
func MetricSum(exposition, name string) (sum float64, found bool) {
	for _, line := range strings.Split(exposition, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if base, _, _ := strings.Cut(series, "{"); base != name {
			continue
		}
		value, _, _ = strings.Cut(strings.TrimSpace(value), " ")
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			sum += v
			found = true
		}
	}
	return sum, found
}
