package versori

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestParseRateLimit(t *testing.T) {
	unknown := RateLimit{Remaining: -1}
	epoch := strconv.FormatInt(now.Add(30*time.Second).Unix(), 10)
	cases := []struct {
		name string
		h    http.Header
		want RateLimit
	}{
		{"none", nil, unknown},
		{"unrelated headers", hdr("Content-Type", "application/json"), unknown},
		{"policy old form", hdr("RateLimit-Policy", "10;w=1"), RateLimit{Rate: 10, Remaining: -1}},
		{"policy structured", hdr("RateLimit-Policy", `"default";q=10;w=1`), RateLimit{Rate: 10, Remaining: -1}},
		{"policy over a minute", hdr("RateLimit-Policy", `"burst";q=600;w=60`), RateLimit{Rate: 10, Remaining: -1}},
		{"policy without window", hdr("RateLimit-Policy", `"default";q=10`), unknown},
		{"many policies: most restrictive", hdr("RateLimit-Policy", `"a";q=100;w=1, "b";q=600;w=60, "c";q=50;w=1`), RateLimit{Rate: 10, Remaining: -1}},
		{"policy in other unit ignored", hdr("RateLimit-Policy", `"bytes";q=1;w=1;qu="content-bytes", "req";q=20;w=1`), RateLimit{Rate: 20, Remaining: -1}},
		{"policy with comment", hdr("RateLimit-Policy", `10;w=1;comment="fixed, window; yes"`), RateLimit{Rate: 10, Remaining: -1}},
		{"ratelimit dictionary", hdr("RateLimit", "limit=10, remaining=3, reset=1"), RateLimit{Remaining: 3, Reset: time.Second}},
		{"ratelimit structured", hdr("RateLimit", `"default";r=3;t=1`), RateLimit{Remaining: 3, Reset: time.Second}},
		{"ratelimit and policy", hdr("RateLimit", `"default";r=0;t=2`, "RateLimit-Policy", `"default";q=10;w=1`), RateLimit{Rate: 10, Remaining: 0, Reset: 2 * time.Second}},
		{"ratelimit several items", hdr("RateLimit", `"a";r=9;t=1, "b";r=2;t=30`), RateLimit{Remaining: 2, Reset: 30 * time.Second}},
		{"draft-03 headers", hdr("RateLimit-Limit", "10", "RateLimit-Remaining", "4", "RateLimit-Reset", "1"), RateLimit{Remaining: 4, Reset: time.Second}},
		{"draft-03 limit with policies", hdr("RateLimit-Limit", "10, 10;w=1, 50;w=60"), RateLimit{Rate: 50.0 / 60, Remaining: -1}},
		{"x headers without window", hdr("X-RateLimit-Limit", "10", "X-RateLimit-Remaining", "7", "X-RateLimit-Reset", "1"), RateLimit{Remaining: 7, Reset: time.Second, Quota: 10}},
		{"x headers with window", hdr("X-RateLimit-Limit", "120", "X-RateLimit-Window", "60", "X-RateLimit-Remaining", "7"), RateLimit{Rate: 2, Remaining: 7}},
		{"x window as duration", hdr("X-RateLimit-Limit", "120", "X-RateLimit-Window", "1m"), RateLimit{Rate: 2, Remaining: -1}},
		{"x limit with w param", hdr("X-RateLimit-Limit", "5;w=1"), RateLimit{Rate: 5, Remaining: -1}},
		{"x reset as epoch", hdr("X-RateLimit-Reset", epoch), RateLimit{Remaining: -1, Reset: 30 * time.Second}},
		{"x reset epoch in the past", hdr("X-RateLimit-Reset", strconv.FormatInt(now.Add(-time.Minute).Unix(), 10)), unknown},
		{"x reset fractional", hdr("X-RateLimit-Reset", "0.5"), RateLimit{Remaining: -1, Reset: 500 * time.Millisecond}},
		{"negative values", hdr("RateLimit-Policy", "-10;w=1", "X-RateLimit-Remaining", "-3", "X-RateLimit-Reset", "-1"), unknown},
		{"nan and inf", hdr("RateLimit-Policy", "NaN;w=1, inf;w=1, 10;w=NaN", "RateLimit", "remaining=NaN, reset=Inf"), unknown},
		{"garbage", hdr("RateLimit-Policy", `;;=,,"`, "RateLimit", `"x";r=;t=abc`, "X-RateLimit-Remaining", "lots", "X-RateLimit-Reset", "0x10"), unknown},
		{"exponents refused", hdr("RateLimit-Policy", "1e9;w=1", "X-RateLimit-Remaining", "1e3"), unknown},
		{"zero quota is no rate", hdr("RateLimit-Policy", "0;w=1"), unknown},
		{"zero window is no rate", hdr("RateLimit-Policy", "10;w=0"), unknown},
		{"huge values bounded", hdr("RateLimit-Policy", "99999999999999999999999999999999999999999;w=1", "X-RateLimit-Remaining", "99999999999999999999", "RateLimit-Reset", "99999999999"),
			RateLimit{Rate: maxRate, Remaining: maxRemaining, Reset: MaxRetryAfter}},
		{"huge epoch bounded", hdr("X-RateLimit-Reset", "999999999999999999999"), RateLimit{Remaining: -1, Reset: MaxRetryAfter}},
		{"window too long", hdr("RateLimit-Policy", "10;w=999999999"), unknown},
		{"conventions disagree: most restrictive", hdr("RateLimit-Policy", "50;w=1", "X-RateLimit-Limit", "20;w=1", "RateLimit-Remaining", "9", "X-RateLimit-Remaining", "2", "RateLimit-Reset", "1", "X-RateLimit-Reset", "3"),
			RateLimit{Rate: 20, Remaining: 2, Reset: 3 * time.Second}},
		{"repeated header lines", hdr("RateLimit-Policy", "50;w=1", "RateLimit-Policy", "5;w=1"), RateLimit{Rate: 5, Remaining: -1}},
		{"quoted numbers", hdr("X-RateLimit-Remaining", `"4"`), RateLimit{Remaining: 4}},
		{"remaining zero is known", hdr("X-RateLimit-Remaining", "0"), RateLimit{Remaining: 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := parseRateLimit(tc.h, now)
			if math.Abs(got.Rate-tc.want.Rate) > 1e-9 || got.Remaining != tc.want.Remaining || got.Reset != tc.want.Reset {
				t.Fatalf("parseRateLimit(%v) = %+v, want %+v", tc.h, got, tc.want)
			}
			if got.Known() != (tc.want != unknown) {
				t.Fatalf("Known() = %v for %+v", got.Known(), got)
			}
		})
	}
}

func TestParseRateLimitBoundsMembers(t *testing.T) {
	// The most restrictive policy comes after the member bound: ignored,
	// and the parse stays cheap whatever the header holds.
	policies := strings.Repeat("100;w=1, ", maxRateLimitMembers) + "1;w=1"
	if got := parseRateLimit(hdr("RateLimit-Policy", policies), now); got.Rate != 100 {
		t.Fatalf("rate %v, want 100 (members past the bound ignored)", got.Rate)
	}
	long := strings.Repeat(" ", maxRateLimitHeaderLen) + "1;w=1"
	if got := parseRateLimit(hdr("RateLimit-Policy", long), now); got.Known() {
		t.Fatalf("a policy past the length bound was read: %+v", got)
	}
}

func TestRateLimitOf(t *testing.T) {
	unknown := RateLimit{Remaining: -1}
	conn := &Connector{RateLimit: RateLimit{Rate: 5, Remaining: 1}}
	apiErr := &Error{StatusCode: 429, RateLimit: RateLimit{Remaining: 0, Reset: time.Second}}
	cases := []struct {
		name string
		conn *Connector
		err  error
		want RateLimit
	}{
		{"connector", conn, nil, conn.RateLimit},
		{"error", nil, apiErr, apiErr.RateLimit},
		{"wrapped error wins over connector", conn, fmt.Errorf("wrap: %w", apiErr), apiErr.RateLimit},
		{"transport error", nil, errors.New("connection reset"), unknown},
		{"nothing", nil, nil, unknown},
	}
	for _, tc := range cases {
		if got := RateLimitOf(tc.conn, tc.err); got != tc.want {
			t.Errorf("%s: RateLimitOf = %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if (RateLimit{Remaining: -1}).Known() {
		t.Error("the unknown RateLimit reports Known")
	}
}

// FuzzParseRateLimit feeds arbitrary values to every header the parser
// reads: it never panics and its result is always within bounds.
func FuzzParseRateLimit(f *testing.F) {
	for _, s := range [][4]string{
		{"10;w=1", `"default";r=3;t=1`, "10", "1"},
		{`"default";q=10;w=1`, "remaining=3, reset=1", "", "1740830430"},
		{"NaN;w=1", "remaining=-1", "-5", "1e99"},
		{strings.Repeat("1;w=1,", 100), `"a";r=99999999999999999999;t=0.000000001`, "99999999999999999999999999999999999", "0x1p3"},
		{`"x";q=1;w=1;qu="content-bytes"`, `;;;"`, `"7"`, "1m"},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, policy, rl, limit, reset string) {
		h := http.Header{}
		h.Set("RateLimit-Policy", policy)
		h.Set("RateLimit", rl)
		h.Set("RateLimit-Limit", limit)
		h.Set("RateLimit-Remaining", limit)
		h.Set("RateLimit-Reset", reset)
		h.Set("X-RateLimit-Limit", limit)
		h.Set("X-RateLimit-Remaining", rl)
		h.Set("X-RateLimit-Reset", reset)
		h.Set("X-RateLimit-Window", reset)
		got := parseRateLimit(h, now)
		if math.IsNaN(got.Rate) || got.Rate < 0 || got.Rate > maxRate {
			t.Fatalf("rate %v out of bounds", got.Rate)
		}
		if got.Remaining < -1 || got.Remaining > maxRemaining {
			t.Fatalf("remaining %d out of bounds", got.Remaining)
		}
		if got.Reset < 0 || got.Reset > MaxRetryAfter {
			t.Fatalf("reset %s out of bounds", got.Reset)
		}
	})
}
