package bench

import (
	"fmt"
	"io"
	"strings"
)

// Mark says whether a measured figure met its target.
type Mark string

// Marks.
const (
	// Pass: the target was met.
	Pass Mark = "pass"
	// Miss: the target was missed; BENCHMARKS.md says why.
	Miss Mark = "MISS"
	// Info: the figure has no target; it is reported for comparison.
	Info Mark = "info"
)

// AtLeast marks v against a lower bound.
func AtLeast(v, min float64) Mark {
	if v >= min {
		return Pass
	}
	return Miss
}

// AtMost marks v against an upper bound.
func AtMost(v, max float64) Mark {
	if v <= max {
		return Pass
	}
	return Miss
}

// Row is one line of the results table: one measured figure, its baseline
// from the same run, its target and whether it was met.
type Row struct {
	// Figure numbers and names the figure, e.g. "1 rate fidelity".
	Figure string
	// Metric names what was measured, e.g. "worst 1-s window / R".
	Metric string
	// Value is the measured figure, formatted.
	Value string
	// Baseline is the same figure for the baseline in the same run, or
	// what it is compared with; "-" when there is none.
	Baseline string
	// Target is the target, e.g. "<= 1.05"; "-" when there is none.
	Target string
	// Mark is Pass, Miss or Info.
	Mark Mark
}

// Table is the results of a run, in the order measured.
type Table struct {
	Rows []Row
}

// Add appends a row.
func (t *Table) Add(r Row) { t.Rows = append(t.Rows, r) }

// Misses returns the rows whose target was missed.
func (t *Table) Misses() []Row {
	var out []Row
	for _, r := range t.Rows {
		if r.Mark == Miss {
			out = append(out, r)
		}
	}
	return out
}

// WriteMarkdown writes the table as a Markdown table whose columns line up
// in a terminal too.
func (t *Table) WriteMarkdown(w io.Writer) error {
	header := []string{"figure", "metric", "measured", "baseline (same run)", "target", "mark"}
	cells := [][]string{header}
	for _, r := range t.Rows {
		cells = append(cells, []string{r.Figure, r.Metric, r.Value, dash(r.Baseline), dash(r.Target), string(r.Mark)})
	}
	width := make([]int, len(header))
	for _, row := range cells {
		for i, c := range row {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	line := func(row []string) {
		b.WriteString("|")
		for i, c := range row {
			fmt.Fprintf(&b, " %s%s |", c, strings.Repeat(" ", width[i]-len([]rune(c))))
		}
		b.WriteString("\n")
	}
	line(cells[0])
	b.WriteString("|")
	for _, n := range width {
		b.WriteString(strings.Repeat("-", n+2) + "|")
	}
	b.WriteString("\n")
	for _, row := range cells[1:] {
		line(row)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
