package textline

import "testing"

func TestCollapse(t *testing.T) {
	for in, want := range map[string]string{
		"":                       "",
		"  plain  ":              "plain",
		"a\r\nb\tc\x00d":         "a b c d",
		"bad \xff\xfe bytes":     "bad bytes",
		"<html>\n  <b>502</b>\n": "<html> <b>502</b>",
		"é\u200bx":               "é x",
	} {
		if got := Collapse(in); got != want {
			t.Errorf("Collapse(%q) = %q, want %q", in, got, want)
		}
	}
}
