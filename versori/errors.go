package versori

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/versori/import-worker/internal/textline"
)

// MaxRetryAfter caps the delay taken from a Retry-After header. A gateway
// that asks for a day is misconfigured; holding a task that long helps no one,
// and the worker's own backoff takes over after the capped wait.
const MaxRetryAfter = time.Hour

// Limits on what an [Error] keeps from a response, so a hostile or broken
// server cannot fill the ledger or the logs.
const (
	maxExcerptRunes = 200
	maxFieldLen     = 1024
	maxFields       = 32
	maxRequestIDLen = 128
	// maxErrorBodyBytes bounds how much of an error response is read; the
	// error body is only ever kept as a short record.
	maxErrorBodyBytes = 64 << 10
)

// FieldError is one entry of the API's "fields" list: a validation problem
// with one input field.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error is a failed call that reached the server, or a response that could
// not be used. It carries the facts a ledger or a report needs. It never
// holds the API key: anything the server sent back is scrubbed of it.
type Error struct {
	// Op names the call, e.g. "import connector version".
	Op string
	// StatusCode is the HTTP status; 0 never occurs in an Error (transport
	// failures are returned as the underlying error, see Classify).
	StatusCode int
	// Code and Message are the API's error code and message, when the body
	// was the API's JSON error shape. Code values are not documented, so
	// branch on StatusCode or Class, never on Code.
	Code    string
	Message string
	// Fields lists per-field validation problems (400).
	Fields []FieldError
	// Details is the API's free-form "details" string.
	Details string
	// RetryAfter is the delay from the Retry-After header, capped at
	// MaxRetryAfter; HasRetryAfter says whether the header was present and
	// usable.
	RetryAfter    time.Duration
	HasRetryAfter bool
	// RequestID is the request ID the server or its gateway sent, if any.
	RequestID string
	// Class is the outcome class; see ClassForStatus.
	Class Class
	// BodyExcerpt is a short, sanitised excerpt of a body that was not the
	// API's JSON error shape (an HTML page from a proxy, plain text).
	BodyExcerpt string
	// RateLimit is what the response's rate-limit headers said, so a 429
	// (or any error) still teaches the caller the server's real limit;
	// Remaining is -1 when they said nothing.
	RateLimit RateLimit
}

// Error formats the facts on one line. It contains only what the server
// sent (already scrubbed of the key) and what the client knows about the
// call; never the key or the Authorization header.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("versori: ")
	if e.Op != "" {
		b.WriteString(e.Op)
		b.WriteString(": ")
	}
	b.WriteString(strconv.Itoa(e.StatusCode))
	if t := http.StatusText(e.StatusCode); t != "" {
		b.WriteByte(' ')
		b.WriteString(t)
	}
	fmt.Fprintf(&b, " (%s)", e.Class)
	if e.Code != "" {
		b.WriteString(": ")
		b.WriteString(e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	for i, f := range e.Fields {
		if i == 0 {
			b.WriteString(" [")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(f.Field)
		b.WriteString(": ")
		b.WriteString(f.Message)
		if i == len(e.Fields)-1 {
			b.WriteByte(']')
		}
	}
	if e.Details != "" {
		b.WriteString(" (")
		b.WriteString(e.Details)
		b.WriteByte(')')
	}
	if e.BodyExcerpt != "" {
		fmt.Fprintf(&b, ": body %q", e.BodyExcerpt)
	}
	if e.HasRetryAfter {
		fmt.Fprintf(&b, ", retry after %s", e.RetryAfter)
	}
	if e.RequestID != "" {
		b.WriteString(", request id ")
		b.WriteString(e.RequestID)
	}
	return b.String()
}

// ParseRetryAfter parses a Retry-After header value: delta-seconds or an
// HTTP-date, as of now. Absent, malformed and negative values give false, as
// does a date that is not in the future: a past date most likely means the
// clocks disagree, and retrying at once would hammer the server, so the
// caller's own backoff is the better choice. Delays above MaxRetryAfter are
// capped to it. "0" is a valid delay of zero.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil || secs > uint64(MaxRetryAfter/time.Second) {
			// Only overflow can fail here: the value is all digits.
			return MaxRetryAfter, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0, false
	}
	if d > MaxRetryAfter {
		d = MaxRetryAfter
	}
	return d, true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return len(s) > 0
}

// requestIDHeaders are the headers, in order of preference, that gateways
// commonly use for a request ID.
var requestIDHeaders = [...]string{
	"X-Request-Id", "Request-Id", "X-Correlation-Id", "X-Amzn-Requestid",
	"X-Amz-Cf-Id", "Cf-Ray", "X-Cloud-Trace-Context",
}

func requestID(h http.Header) string {
	for _, k := range requestIDHeaders {
		if v := h.Get(k); v != "" {
			return v
		}
	}
	return ""
}

// apiErrorBody is the API's documented error shape.
type apiErrorBody struct {
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Fields  []FieldError    `json:"fields"`
	Details json.RawMessage `json:"details"`
}

// decodeError builds the Error for a non-2xx response from its status,
// headers and (already size-limited) body. scrub removes secrets from any
// text taken from the response. It never fails: whatever the body, the
// status decides the class.
func decodeError(op string, status int, h http.Header, body []byte, now time.Time, scrub func(string) string) *Error {
	e := &Error{
		Op:         op,
		StatusCode: status,
		Class:      ClassForStatus(status),
		RequestID:  keep(requestID(h), maxRequestIDLen, scrub),
		RateLimit:  parseRateLimit(h, now),
	}
	if h != nil {
		e.RetryAfter, e.HasRetryAfter = ParseRetryAfter(h.Get("Retry-After"), now)
	}
	var eb apiErrorBody
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '{' && json.Unmarshal(trimmed, &eb) == nil && (eb.Code != "" || eb.Message != "") {
		e.Code = keep(eb.Code, maxFieldLen, scrub)
		e.Message = keep(eb.Message, maxFieldLen, scrub)
		e.Details = keep(detailsString(eb.Details), maxFieldLen, scrub)
		for i, f := range eb.Fields {
			if i == maxFields {
				break
			}
			e.Fields = append(e.Fields, FieldError{
				Field:   keep(f.Field, maxFieldLen, scrub),
				Message: keep(f.Message, maxFieldLen, scrub),
			})
		}
		return e
	}
	e.BodyExcerpt = excerpt(body, scrub)
	return e
}

// detailsString accepts "details" as the documented string, and keeps any
// other JSON value as its text rather than losing the whole error body.
func detailsString(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// excerpt turns an arbitrary body into a short single-line text: markup
// tags and scripts dropped, entities left alone, control characters and
// invalid UTF-8 removed, whitespace collapsed, and secrets scrubbed before
// any cut so a key cut in half cannot survive: the first maxErrorBodyBytes
// are kept only after scrubbing them with maxScrubMargin more bytes.
func excerpt(body []byte, scrub func(string) string) string {
	if len(body) > maxErrorBodyBytes+maxScrubMargin {
		body = body[:maxErrorBodyBytes+maxScrubMargin]
	}
	// Scrub before stripping tags too: a key containing "<" would
	// otherwise be cut apart by the stripping and escape the scrubber.
	s := scrub(string(body))
	if len(s) > maxErrorBodyBytes {
		s = s[:maxErrorBodyBytes]
	}
	return keep(stripTags(s), maxExcerptRunes, scrub)
}

// keep prepares text from a response for an Error: secrets scrubbed both
// before and after cleaning (cleaning could join a key split by control
// characters), and only then truncated, so a key cut in half cannot survive.
func keep(s string, n int, scrub func(string) string) string {
	return truncateRunes(scrub(textline.Collapse(scrub(s))), n)
}

// stripTags removes <...> markup and the contents of <script> and <style>
// elements. It is a cleaner for error excerpts, not an HTML parser.
func stripTags(s string) string {
	if !strings.Contains(s, "<") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for len(s) > 0 {
		i := strings.IndexByte(s, '<')
		if i < 0 {
			b.WriteString(s)
			break
		}
		b.WriteString(s[:i])
		b.WriteByte(' ')
		s = s[i:]
		j := strings.IndexByte(s, '>')
		if j < 0 {
			break // unterminated tag: drop the rest
		}
		tag := strings.ToLower(s[1:j])
		s = s[j+1:]
		for _, el := range [...]string{"script", "style"} {
			if strings.HasPrefix(tag, el) {
				end := strings.Index(strings.ToLower(s), "</"+el)
				if end < 0 {
					s = ""
				} else {
					s = s[end:]
				}
			}
		}
	}
	return b.String()
}

func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i := 0
	for k := 0; k < n-1; k++ {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return s[:i] + "…"
}
