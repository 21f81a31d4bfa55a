package versori

import (
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "1", "120", "-1", "1.5", "3601", "99999999999999999999",
		"Sat, 01 Mar 2025 12:00:30 GMT", "Saturday, 01-Mar-25 12:00:30 GMT", "Sat Mar  1 12:00:30 2025", "soon", " 7 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := ParseRetryAfter(v, now)
		if !ok && d != 0 {
			t.Fatalf("ParseRetryAfter(%q) = %s with ok false", v, d)
		}
		if ok && (d < 0 || d > MaxRetryAfter) {
			t.Fatalf("ParseRetryAfter(%q) = %s, outside 0..%s", v, d, MaxRetryAfter)
		}
		if s := strings.TrimSpace(v); isDigits(s) && !ok {
			t.Fatalf("ParseRetryAfter(%q) refused delta-seconds", v)
		}
		if strings.HasPrefix(strings.TrimSpace(v), "-") && ok {
			t.Fatalf("ParseRetryAfter(%q) accepted a negative value", v)
		}
	})
}

func FuzzDecodeError(f *testing.F) {
	const key = "sk_fuzz_KEY_0123456789"
	seeds := []struct {
		status             int
		body, retry, reqID string
	}{
		{400, `{"code":"validation_error","message":"bad","fields":[{"field":"version","message":"unknown"}],"details":"d"}`, "", "r1"},
		{429, `{"code":"rate_limited","message":"slow down"}`, "3", ""},
		{502, "<html><body><h1>502 Bad Gateway</h1></body></html>", "", ""},
		{500, "Authorization: Bearer " + key, "", key},
		{503, `{"code":"x","message":"` + key + `","details":{"k":"` + key + `"}}`, "Sat, 01 Mar 2025 12:00:30 GMT", ""},
		{404, "", "-1", ""},
		{0, "\xff\xfe\x00", "", "\r\n"},
	}
	for _, s := range seeds {
		f.Add(s.status, []byte(s.body), s.retry, s.reqID)
	}
	scrub := newScrubber(key).Replace
	f.Fuzz(func(t *testing.T, status int, body []byte, retry, reqID string) {
		h := http.Header{}
		h.Set("Retry-After", retry)
		h.Set("X-Request-Id", reqID)
		e := decodeError("op", status, h, body, now, scrub)
		if e.Class != ClassForStatus(status) {
			t.Fatalf("class %s for status %d", e.Class, status)
		}
		if e.HasRetryAfter && (e.RetryAfter < 0 || e.RetryAfter > MaxRetryAfter) {
			t.Fatalf("retry after %s", e.RetryAfter)
		}
		if utf8.RuneCountInString(e.BodyExcerpt) > maxExcerptRunes || utf8.RuneCountInString(e.Message) > maxFieldLen ||
			utf8.RuneCountInString(e.RequestID) > maxRequestIDLen || len(e.Fields) > maxFields {
			t.Fatalf("unbounded error: %#v", e)
		}
		msg := e.Error()
		if !utf8.ValidString(msg) {
			t.Fatalf("Error() is not valid UTF-8: %q", msg)
		}
		for _, s := range []string{e.BodyExcerpt, e.Message, e.Code, e.Details, e.RequestID} {
			if strings.ContainsAny(s, "\r\n\x00") {
				t.Fatalf("multi-line or control text kept: %q", s)
			}
		}
		if strings.Contains(msg, key) {
			t.Fatalf("key in %q", msg)
		}
	})
}
