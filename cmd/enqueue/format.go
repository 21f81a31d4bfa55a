package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// thousands formats n with comma separators: 100,000.
func thousands[T int | int64](n T) string {
	return message.NewPrinter(language.English).Sprint(int64(n))
}

func plural[T int | int64](n T) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// counted is n with its noun, pluralised: "1 organisation",
// "2,000 organisations".
func counted[T int | int64](n T, noun string) string {
	return thousands(n) + " " + noun + plural(n)
}

// about says how long d takes: "about 3m20s", or "under a second" (never
// "about under a second").
func about(d time.Duration) string {
	if d < time.Second {
		return humanDuration(d)
	}
	return "about " + humanDuration(d)
}

func joinAnd(items []string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " and " + items[len(items)-1]
}

// humanDuration rounds d to what a person wants to read: seconds under an
// hour, minutes above.
func humanDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return "under a second"
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

// classList formats counters by class, largest first: "imported 2,950,
// already_present 40".
func classList(m map[string]int64) string {
	type kv struct {
		k string
		v int64
	}
	var kvs []kv
	for k, v := range m {
		if v != 0 {
			kvs = append(kvs, kv{k, v})
		}
	}
	sort.Slice(kvs, func(i, j int) bool {
		if kvs[i].v != kvs[j].v {
			return kvs[i].v > kvs[j].v
		}
		return kvs[i].k < kvs[j].k
	})
	parts := make([]string, len(kvs))
	for i, x := range kvs {
		parts[i] = fmt.Sprintf("%s %s", x.k, thousands(x.v))
	}
	return strings.Join(parts, ", ")
}

// newBar returns a progress bar on stderr, or nil when stderr is not a
// terminal or the output is JSON: a bar is for a person watching.
func (a *app) newBar(max int, desc string) *progressbar.ProgressBar {
	if a.jsonOut || !a.isTerminal(a.stderr) {
		return nil
	}
	return newBarOn(a.stderr, max, desc)
}

func newBarOn(w io.Writer, max int, desc string) *progressbar.ProgressBar {
	return progressbar.NewOptions(max,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("orgs"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionUseANSICodes(true),
	)
}
