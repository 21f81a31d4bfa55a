package bench

import (
	"os"
	"strings"
	"testing"
)

func pid() int { return os.Getpid() }

func TestMarks(t *testing.T) {
	for _, tc := range []struct {
		got, want Mark
	}{
		{AtLeast(0.97, 0.97), Pass},
		{AtLeast(0.969, 0.97), Miss},
		{AtMost(1.05, 1.05), Pass},
		{AtMost(1.051, 1.05), Miss},
	} {
		if tc.got != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
	}
}

func TestTableWriteMarkdown(t *testing.T) {
	var tab Table
	tab.Add(Row{Figure: "1 rate", Metric: "worst 1-s window / R", Value: "1.01", Baseline: "3.02", Target: "<= 1.05", Mark: Pass})
	tab.Add(Row{Figure: "2 overhead", Metric: "orgs/s full / bare", Value: "0.65 (1300 / 2000)", Target: ">= 0.70", Mark: Miss})
	tab.Add(Row{Figure: "6 footprint", Metric: "goroutines at rest", Value: "58", Baseline: "41", Mark: Info})
	var b strings.Builder
	if err := tab.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines, want header, rule and 3 rows:\n%s", len(lines), b.String())
	}
	for i, l := range lines {
		if len(l) != len(lines[0]) {
			t.Errorf("line %d is %d wide, header %d: columns do not line up:\n%s", i, len(l), len(lines[0]), b.String())
		}
		if strings.Count(l, "|") != 7 {
			t.Errorf("line %d has %d bars, want 7: %q", i, strings.Count(l, "|"), l)
		}
	}
	if !strings.Contains(lines[4], "| -  ") && !strings.Contains(lines[4], " - ") {
		t.Errorf("empty target not shown as '-': %q", lines[4])
	}
	if m := tab.Misses(); len(m) != 1 || m[0].Figure != "2 overhead" {
		t.Errorf("Misses = %+v", m)
	}
}
