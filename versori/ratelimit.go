package versori

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// RateLimit is what an API response said about the caller's rate limit.
// The Connect API documents no rate-limit header, but gateways in front of
// it send one of several conventions; the worker's adaptive rate learns
// from whichever arrives. The unknown value is RateLimit{Remaining: -1}
// (what this package always returns when the headers say nothing); note
// that the zero value RateLimit{} claims Remaining 0.
type RateLimit struct {
	// Rate is the sustained limit in calls per second the headers state (a policy's quota over its window, e.g. q=10;w=1 gives 10); 0 when they do not say.
	Rate float64
	// Remaining is how many calls the current window still allows; -1 when unknown.
	Remaining int
	// Reset is how long until the window resets; 0 when unknown.
	Reset time.Duration
	// Quota is the calls one window allows when the headers state a limit
	// but no window (X-RateLimit-Limit alone, as GitHub and many gateways
	// send it); 0 otherwise. A window is at least as long as any Reset it
	// states, so a client that keeps the longest Reset it has seen can
	// bound the rate by Quota over it (ratebudget does).
	Quota float64
}

// Known reports whether any field is known, so a caller can tell "the
// server said nothing" from "the server said zero calls remain".
func (r RateLimit) Known() bool { return r.Rate > 0 || r.Remaining >= 0 || r.Reset > 0 || r.Quota > 0 }

// unknownRateLimit is the RateLimit of a response without usable headers.
var unknownRateLimit = RateLimit{Remaining: -1}

// RateLimitOf returns the rate limit the response behind conn or err
// stated: err's when err is (or wraps) an [*Error], else conn's, else the
// unknown RateLimit (Remaining -1). Transport failures carry none.
func RateLimitOf(conn *Connector, err error) RateLimit {
	if err != nil {
		var apiErr *Error
		if errors.As(err, &apiErr) {
			return apiErr.RateLimit
		}
		return unknownRateLimit
	}
	if conn != nil {
		return conn.RateLimit
	}
	return unknownRateLimit
}

// Bounds on what the rate-limit headers may claim, so a hostile or broken
// gateway cannot make the worker compute with absurd numbers.
const (
	// maxRate caps Rate: no gateway grants a million calls a second.
	maxRate = 1e6
	// maxRemaining caps Remaining.
	maxRemaining = math.MaxInt32
	// maxWindow caps a policy's window; a longer one is not a rate a
	// worker can pace to.
	maxWindow = 24 * time.Hour
	// maxRateLimitMembers bounds how many comma-separated members of one
	// header are looked at; the rest are ignored.
	maxRateLimitMembers = 64
	// maxRateLimitHeaderLen bounds how much of one header's value is read.
	maxRateLimitHeaderLen = 4 << 10
	// epochThreshold tells a Unix time from delta seconds in
	// X-RateLimit-Reset: no window is 30 years long.
	epochThreshold = 1e9
)

// rateAcc collects what the headers state, keeping the most restrictive
// claim of each kind: the lowest rate, the fewest remaining calls and the
// longest reset.
type rateAcc struct {
	rl RateLimit
}

func (a *rateAcc) rate(r float64) {
	if !(r > 0) || math.IsInf(r, 0) {
		return
	}
	r = math.Min(r, maxRate)
	if a.rl.Rate == 0 || r < a.rl.Rate {
		a.rl.Rate = r
	}
}

func (a *rateAcc) quota(q float64) {
	if !(q > 0) || math.IsInf(q, 0) {
		return
	}
	q = math.Min(q, maxRemaining)
	if a.rl.Quota == 0 || q < a.rl.Quota {
		a.rl.Quota = q
	}
}

func (a *rateAcc) remaining(f float64) {
	if !(f >= 0) {
		return
	}
	n := maxRemaining
	if f < maxRemaining {
		n = int(f)
	}
	if a.rl.Remaining < 0 || n < a.rl.Remaining {
		a.rl.Remaining = n
	}
}

func (a *rateAcc) reset(d time.Duration) {
	if d <= 0 {
		return
	}
	d = min(d, MaxRetryAfter)
	if d > a.rl.Reset {
		a.rl.Reset = d
	}
}

// quotaRate turns a quota over a window in seconds into calls per second;
// 0 unless both are usable.
func quotaRate(quota, window float64) float64 {
	if !(quota > 0) || !(window > 0) || window > maxWindow.Seconds() {
		return 0
	}
	return quota / window
}

// secondsDuration converts non-negative seconds into a duration capped at
// MaxRetryAfter; 0 for anything else.
func secondsDuration(s float64) time.Duration {
	if !(s > 0) {
		return 0
	}
	if s >= MaxRetryAfter.Seconds() {
		return MaxRetryAfter
	}
	return time.Duration(s * float64(time.Second))
}

// parseRateLimit reads every rate-limit header convention in h:
//
//   - RateLimit-Policy, in the IETF httpapi draft's older form (10;w=1) and
//     its structured form ("default";q=10;w=1);
//   - RateLimit, as a dictionary (remaining=3, reset=1) or structured items
//     ("default";r=3;t=1);
//   - the draft-03 RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset;
//   - the de-facto X-RateLimit-Limit, X-RateLimit-Remaining,
//     X-RateLimit-Reset (delta seconds, or a Unix time when above 1e9) and
//     X-RateLimit-Window.
//
// A rate is only derived where a window is stated; a bare
// X-RateLimit-Limit is kept as Quota, for the caller to pace by with the
// window the resets it sees imply. Malformed, negative, NaN and
// infinite values are ignored; where several policies or conventions
// disagree the most restrictive wins. Policies counted in another unit
// than requests (qu="content-bytes") are ignored.
func parseRateLimit(h http.Header, now time.Time) RateLimit {
	a := rateAcc{rl: unknownRateLimit}
	if h == nil {
		return a.rl
	}
	// Policies: a quota over a window.
	for _, m := range members(h, "RateLimit-Policy") {
		a.rate(m.policyRate())
	}
	// draft-03 RateLimit-Limit may carry policies too: "10, 10;w=1".
	for _, m := range members(h, "RateLimit-Limit") {
		a.rate(m.policyRate())
	}
	for _, m := range members(h, "RateLimit") {
		if m.key != "" { // dictionary form: limit=10, remaining=3, reset=1
			switch m.key {
			case "remaining", "r":
				a.remaining(m.num)
			case "reset", "t":
				a.reset(secondsDuration(m.num))
			}
			continue
		}
		if v, ok := m.params["r"]; ok {
			a.remaining(v)
		}
		if v, ok := m.params["t"]; ok {
			a.reset(secondsDuration(v))
		}
	}
	for _, m := range members(h, "RateLimit-Remaining") {
		a.remaining(m.num)
	}
	for _, m := range members(h, "RateLimit-Reset") {
		a.reset(secondsDuration(m.num))
	}

	window := math.NaN()
	for _, m := range members(h, "X-RateLimit-Window") {
		if w := windowSeconds(m); w > 0 && (math.IsNaN(window) || w > window) {
			window = w // the longest stated window gives the lowest rate
		}
	}
	for _, m := range members(h, "X-RateLimit-Limit") {
		w := window
		if pw, ok := m.params["w"]; ok {
			w = pw
		}
		if !m.hasNum {
			continue
		}
		if math.IsNaN(w) {
			a.quota(m.num)
			continue
		}
		a.rate(quotaRate(m.num, w))
	}
	for _, m := range members(h, "X-RateLimit-Remaining") {
		a.remaining(m.num)
	}
	for _, m := range members(h, "X-RateLimit-Reset") {
		if !m.hasNum {
			continue
		}
		if m.num > epochThreshold {
			if m.num < float64(math.MaxInt64)/float64(time.Second) {
				sec, frac := math.Modf(m.num)
				a.reset(time.Unix(int64(sec), int64(frac*1e9)).Sub(now))
			} else {
				a.reset(MaxRetryAfter)
			}
			continue
		}
		a.reset(secondsDuration(m.num))
	}
	return a.rl
}

// windowSeconds reads X-RateLimit-Window: seconds, or a Go duration ("1m").
func windowSeconds(m member) float64 {
	if m.hasNum {
		return m.num
	}
	if d, err := time.ParseDuration(m.token); err == nil && d > 0 && d <= maxWindow {
		return d.Seconds()
	}
	return 0
}

// member is one comma-separated member of a rate-limit header: a bare item
// (a number, a token or a quoted string) or a dictionary key=value, with
// ;key=value parameters. Only numeric values are kept; a malformed number
// leaves hasNum false (num is NaN), so it is never mistaken for zero.
type member struct {
	key    string // dictionary key, lower case; "" for a bare item
	num    float64
	hasNum bool
	token  string
	params map[string]float64
	unit   string // the qu parameter, lower case
}

// policyRate is a policy member's calls per second: its q parameter, or
// its bare number, over its w parameter; 0 when either is missing or the
// policy counts something other than requests.
func (m member) policyRate() float64 {
	if m.unit != "" && m.unit != "requests" {
		return 0
	}
	w, ok := m.params["w"]
	if !ok {
		return 0
	}
	q, ok := m.params["q"]
	if !ok {
		if !m.hasNum || m.key != "" {
			return 0
		}
		q = m.num
	}
	return quotaRate(q, w)
}

// members splits every value of header name into members, bounded in
// length and count.
func members(h http.Header, name string) []member {
	vals := h.Values(name)
	if len(vals) == 0 {
		return nil
	}
	var out []member
	budget := maxRateLimitHeaderLen
	for _, v := range vals {
		if len(v) > budget {
			v = v[:budget]
		}
		budget -= len(v)
		for _, part := range splitOutsideQuotes(v, ',') {
			if len(out) == maxRateLimitMembers {
				return out
			}
			if m, ok := parseMember(part); ok {
				out = append(out, m)
			}
		}
		if budget <= 0 {
			break
		}
	}
	return out
}

// parseMember parses `item;k=v;k2=v2` or `key=value;k=v`.
func parseMember(s string) (member, bool) {
	parts := splitOutsideQuotes(s, ';')
	head := strings.TrimSpace(parts[0])
	if head == "" {
		return member{}, false
	}
	m := member{num: math.NaN()}
	value := head
	if k, v, ok := strings.Cut(head, "="); ok && !strings.HasPrefix(head, `"`) {
		m.key = strings.ToLower(strings.TrimSpace(k))
		value = strings.TrimSpace(v)
	}
	m.num, m.hasNum = parseNumber(value)
	m.token = unquote(value)
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" {
			continue
		}
		v = strings.TrimSpace(v)
		if k == "qu" {
			m.unit = strings.ToLower(unquote(v))
			continue
		}
		if n, ok := parseNumber(v); ok {
			if m.params == nil {
				m.params = map[string]float64{}
			}
			if _, dup := m.params[k]; !dup {
				m.params[k] = n
			}
		}
	}
	return m, true
}

// parseNumber accepts a plain non-negative decimal (digits, at most one
// dot, optionally quoted): no sign, exponent, hex, NaN or infinity. A value
// too large for a float64 is refused as well.
func parseNumber(s string) (float64, bool) {
	s = unquote(strings.TrimSpace(s))
	if s == "" || len(s) > 32 {
		if len(s) > 32 && isDigits(s) {
			return math.MaxFloat64, true // huge but well formed: bounded later
		}
		return math.NaN(), false
	}
	dot := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
		case c == '.' && !dot && i > 0 && i < len(s)-1:
			dot = true
		default:
			return math.NaN(), false
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return math.NaN(), false
	}
	return f, true
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// splitOutsideQuotes splits s at sep, except inside double-quoted strings
// (a policy's comment may hold commas and semicolons).
func splitOutsideQuotes(s string, sep byte) []string {
	var out []string
	quoted, escaped, start := false, false, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case escaped:
			escaped = false
		case quoted && c == '\\':
			escaped = true
		case c == '"':
			quoted = !quoted
		case !quoted && c == sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
