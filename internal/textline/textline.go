// Package textline makes text from outside (an API's error body, a
// Prometheus error) fit one line of a log, a status field or a report cell.
package textline

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Collapse keeps the printable characters of valid UTF-8 and turns every
// run of whitespace, control characters and invalid bytes into one space,
// with none at either end.
func Collapse(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	return b.String()
}
