package versori

import (
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var now = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func TestParseRetryAfter(t *testing.T) {
	tests := []struct {
		v    string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"   ", 0, false},
		{"0", 0, true},
		{"1", time.Second, true},
		{" 120 ", 2 * time.Minute, true},
		{"3600", time.Hour, true},
		{"3601", MaxRetryAfter, true},
		{"99999999999999999999999", MaxRetryAfter, true},
		{"-5", 0, false},
		{"+5", 0, false},
		{"1.5", 0, false},
		{"5s", 0, false},
		{"soon", 0, false},
		{"0x10", 0, false},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second, true},
		{now.Add(30 * time.Second).Format(time.RFC850), 30 * time.Second, true},
		{now.Add(30 * time.Second).Format(time.ANSIC), 30 * time.Second, true},
		{now.Add(48 * time.Hour).Format(http.TimeFormat), MaxRetryAfter, true},
		{now.Format(http.TimeFormat), 0, false},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, false},
		{"Sat, 01 Mar 2025 12:00:30 PST", 0, false}, // zone must be GMT
		{"Sat, 32 Mar 2025 12:00:30 GMT", 0, false},
	}
	for _, tc := range tests {
		got, ok := ParseRetryAfter(tc.v, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseRetryAfter(%q) = %s, %t; want %s, %t", tc.v, got, ok, tc.want, tc.ok)
		}
	}
}

func noScrub(s string) string { return s }

func TestDecodeErrorJSON(t *testing.T) {
	h := http.Header{}
	h.Set("Retry-After", "12")
	h.Set("X-Request-Id", "req-123\r\n\tinjected")
	body := `{"code":"validation_error","message":"bad\ninput","fields":[{"field":"version","message":"unknown"}],"details":"see docs","extra":1}`
	e := decodeError("import connector version", 400, h, []byte(body), now, noScrub)
	if e.Class != ClassInvalid || e.StatusCode != 400 || e.Code != "validation_error" || e.Message != "bad input" ||
		len(e.Fields) != 1 || e.Fields[0] != (FieldError{"version", "unknown"}) || e.Details != "see docs" ||
		!e.HasRetryAfter || e.RetryAfter != 12*time.Second || e.RequestID != "req-123 injected" || e.BodyExcerpt != "" {
		t.Fatalf("decoded %#v", e)
	}
	want := `versori: import connector version: 400 Bad Request (invalid): validation_error: bad input [version: unknown] (see docs), retry after 12s, request id req-123 injected`
	if got := e.Error(); got != want {
		t.Errorf("Error() =\n%s\nwant\n%s", got, want)
	}
}

func TestDecodeErrorShapes(t *testing.T) {
	tests := []struct {
		name, body       string
		message, excerpt string
		details          string
	}{
		{"details not a string", `{"code":"x","message":"m","details":{"a":1}}`, "m", "", `{"a":1}`},
		{"only message", `{"message":"m"}`, "m", "", ""},
		{"json without code or message", `{"error":"boom"}`, "", `{"error":"boom"}`, ""},
		{"broken json", `{"code":"x"`, "", `{"code":"x"`, ""},
		{"json array", `["x"]`, "", `["x"]`, ""},
		{"empty", ``, "", "", ""},
		{"plain text", "upstream connect error or disconnect/reset before headers", "", "upstream connect error or disconnect/reset before headers", ""},
		{"html", "<html><head><title>502 Bad Gateway</title><script>var secret=1;</script><style>p{}</style></head>\n<body>\n<h1>502   Bad Gateway</h1><hr>nginx</body></html>", "", "502 Bad Gateway 502 Bad Gateway nginx", ""},
		{"unterminated tag", "oops <b", "", "oops", ""},
		{"binary", "\x00\x01\xff\xfeok\x7f", "", "ok", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := decodeError("op", 502, nil, []byte(tc.body), now, noScrub)
			if e.Message != tc.message || e.BodyExcerpt != tc.excerpt || e.Details != tc.details || e.Class != ClassServerError {
				t.Errorf("message %q excerpt %q details %q class %s; want %q %q %q", e.Message, e.BodyExcerpt, e.Details, e.Class, tc.message, tc.excerpt, tc.details)
			}
		})
	}
}

func TestDecodeErrorBounds(t *testing.T) {
	long := strings.Repeat("é", 5000)
	var fields []string
	for range 100 {
		fields = append(fields, `{"field":"f","message":"m"}`)
	}
	body := `{"code":"` + long + `","message":"` + long + `","fields":[` + strings.Join(fields, ",") + `]}`
	e := decodeError("op", 400, nil, []byte(body), now, noScrub)
	if n := utf8.RuneCountInString(e.Message); n != maxFieldLen {
		t.Errorf("message kept %d runes, want %d", n, maxFieldLen)
	}
	if len(e.Fields) != maxFields {
		t.Errorf("kept %d fields, want %d", len(e.Fields), maxFields)
	}
	e = decodeError("op", 502, nil, []byte("<p>"+long+"</p>"), now, noScrub)
	if n := utf8.RuneCountInString(e.BodyExcerpt); n != maxExcerptRunes || !strings.HasSuffix(e.BodyExcerpt, "…") {
		t.Errorf("excerpt kept %d runes: %q", n, e.BodyExcerpt)
	}
}

func TestErrorStringMinimal(t *testing.T) {
	e := &Error{StatusCode: 599, Class: ClassServerError, BodyExcerpt: "x"}
	if got, want := e.Error(), `versori: 599 (server_error): body "x"`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e = &Error{Op: "op", StatusCode: 400, Class: ClassInvalid, Fields: []FieldError{{"a", "1"}, {"b", "2"}}}
	if got, want := e.Error(), `versori: op: 400 Bad Request (invalid) [a: 1; b: 2]`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestScrubBeforeTruncate(t *testing.T) {
	key := "sk_live_0123456789abcdef"
	scrub := newScrubber(key).Replace
	// The key straddles the excerpt cut: truncating first would keep
	// its first half.
	body := strings.Repeat("a", maxExcerptRunes-10) + key
	e := decodeError("op", 500, nil, []byte(body), now, scrub)
	if strings.Contains(e.BodyExcerpt, key[:8]) {
		t.Errorf("excerpt %q keeps part of the key", e.BodyExcerpt)
	}
}
