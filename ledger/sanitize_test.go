package ledger

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestSanitize(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		want     string
	}{
		{"empty", "", 10, ""},
		{"fits", "not found", 10, "not found"},
		{"exact", "0123456789", 10, "0123456789"},
		{"cut with ellipsis", "0123456789abc", 10, "0123456…"},
		{"cut inside a rune", "ééééé", 8, "éé…"},
		{"newlines and tabs become one space", "a\r\n\tb", 10, "a b"},
		{"leading and trailing space dropped", "  a  ", 10, "a"},
		{"NUL and escape dropped as space", "a\x00\x1b[0mb", 10, "a [0mb"},
		{"C1 control", "a\u0085b", 10, "a b"},
		{"invalid UTF-8 replaced", "a\xffb", 10, "a\uFFFDb"},
		{"truncated multi-byte sequence", "ab\xe2\x82", 10, "ab\uFFFD"},
		{"max below ellipsis", "abcdef", 2, "ab"},
		{"max zero", "abc", 0, ""},
		{"emoji kept whole", "🙂🙂🙂", 9, "🙂…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sanitize(tt.in, tt.max); got != tt.want {
				t.Errorf("sanitize(%q, %d) = %q; want %q", tt.in, tt.max, got, tt.want)
			}
		})
	}
}

func FuzzSanitize(f *testing.F) {
	for _, s := range []string{"", "plain", "a\r\nb", "\xff\xfe", strings.Repeat("é", 300), "<html>\x00</html>"} {
		f.Add(s, 512)
		f.Add(s, 5)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		max %= 2048
		got := sanitize(s, max)
		if max <= 0 {
			if got != "" {
				t.Fatalf("sanitize(%q, %d) = %q; want empty", s, max, got)
			}
			return
		}
		if len(got) > max {
			t.Fatalf("sanitize(%q, %d) = %q: %d bytes", s, max, got, len(got))
		}
		if !utf8.ValidString(got) {
			t.Fatalf("sanitize(%q, %d) = %q: invalid UTF-8", s, max, got)
		}
		for _, r := range got {
			if unicode.IsControl(r) || (r != ' ' && unicode.IsSpace(r)) {
				t.Fatalf("sanitize(%q, %d) = %q: holds %U", s, max, got, r)
			}
		}
		if strings.HasPrefix(got, " ") || strings.HasSuffix(got, " ") || strings.Contains(got, "  ") {
			t.Fatalf("sanitize(%q, %d) = %q: stray spaces", s, max, got)
		}
		// Idempotent: what is stored sanitises to itself.
		if again := sanitize(got, max); again != got {
			t.Fatalf("sanitize not idempotent: %q -> %q", got, again)
		}
	})
}
