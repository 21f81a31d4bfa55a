package versori

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	const key = "sk_fuzz/KEY+0123456789" // "/" and "+" have escaped forms
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
		{502, `{"error":"Bad Gateway","headers":{"Authorization":"Bearer sk_fuzz\/KEY\u002b0123456789"}}`, "", ""},
		{500, strings.Repeat(" ", 65_500) + "Authorization: Bearer " + key, "", ""},
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
		for k := 0; k+fragmentLen <= len(key); k++ {
			if strings.Contains(msg, key[k:k+fragmentLen]) {
				t.Fatalf("a fragment of the key (%q) in %q", key[k:k+fragmentLen], msg)
			}
		}
	})
}

// bodyTransport answers every request with status and body, without a
// network, so the fuzzer drives the client's whole response path.
type bodyTransport struct {
	status int
	body   []byte
}

func (b bodyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode: b.status, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(bytes.NewReader(b.body)), ContentLength: int64(len(b.body)), Request: r,
	}, nil
}

// FuzzDecodeConnector feeds arbitrary 200 bodies to a real import call: the
// result is a Connector or a server_error, never a panic, and an error never
// carries the key even when the body holds it.
func FuzzDecodeConnector(f *testing.F) {
	const key = "sk_fuzz_KEY_0123456789"
	for _, s := range []string{
		`{"id":"01HZY00000000000000000000C","organisationId":"o","name":"n","public":false,"protocol":"http","baseUrl":"https://x","authSchemeConfigs":[{"type":"api-key"}],"connections":[],"versions":[{"id":"v","name":"1.0","isLatest":true,"isDefault":false,"createdAt":"2025-01-01T00:00:00Z","updatedAt":"2025-01-01T00:00:00Z","publishedAt":null,"messages":[{"text":"t","severity":"info","detail":[1]}]}],"createdAt":"2025-01-01T00:00:00Z","updatedAt":"2025-01-01T00:00:00Z","unknown":{"x":1}}`,
		`{"versions":null,"tags":{"a":["b"]}}`,
		`{"createdAt":"yesterday"}`,
		`[]`, `null`, ``, `<html>` + key + `</html>`, `{"name":"` + key + `"}` + "\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := New(Config{BaseURL: "https://api.example.com/v1", APIKey: key, HTTPClient: &http.Client{Transport: bodyTransport{200, body}}})
		if err != nil {
			t.Fatal(err)
		}
		conn, err := c.ImportPublicConnectorVersion(context.Background(), "01HZY00000000000000000000A", "01HZY00000000000000000000C", "1.0")
		if err != nil {
			if Classify(err) != ClassServerError {
				t.Fatalf("a bad 200 body classed %s: %v", Classify(err), err)
			}
			if strings.Contains(err.Error(), key) || strings.Contains(fmt.Sprintf("%+v", err), key) {
				t.Fatalf("the key leaked into the error: %v", err)
			}
			return
		}
		if conn == nil {
			t.Fatal("nil connector without an error")
		}
		if _, err := json.Marshal(conn); err != nil {
			t.Fatalf("a decoded connector does not encode: %v", err)
		}
	})
}

// FuzzParseOrgID checks the parser at the edge: no panic; an accepted ID is
// a canonical ULID (26 upper-case Crockford characters, first 0-7) equal to
// the input but for case, parsing it again gives it back, and its lower-case
// spelling parses to the same ID; a refused one is an *InvalidIDError of
// the right kind, short enough for a log line, whose message is valid UTF-8.
func FuzzParseOrgID(f *testing.F) {
	for _, s := range []string{"", "01J8Z3K4M5N6P7Q8R9S0T1V2W3", "01j8z3k4m5n6p7q8r9s0t1v2w3", "7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
		"8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "01J8Z3K4M5N6P7Q8R9S0T1V2WI", "01J8Z3K4M5N6P7Q8R9S0T1V2W\uff13", "../../etc/passwd",
		"01J8Z3K4M5N6P7Q8R9S0T1V2W3\n", "01J8Z3K4M5N6P7Q8R9S0T1V2W\xff", strings.Repeat("0", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseOrgID(s)
		cid, cerr := ParseConnectorID(s)
		if (err == nil) != (cerr == nil) || string(id) != string(cid) {
			t.Fatalf("ParseOrgID(%q) = %q, %v but ParseConnectorID = %q, %v", s, id, err, cid, cerr)
		}
		if err != nil {
			var ie *InvalidIDError
			if !errors.As(err, &ie) || ie.Kind != "organisation ID" || id != "" {
				t.Fatalf("ParseOrgID(%q) = %q, %v: want \"\" and an *InvalidIDError", s, id, err)
			}
			var ce *InvalidIDError
			if !errors.As(cerr, &ce) || ce.Kind != "connector ID" || ce.Problem != ie.Problem {
				t.Fatalf("ParseConnectorID(%q) = %v; ParseOrgID %v", s, cerr, err)
			}
			if msg := err.Error(); len(msg) > 200 || !utf8.ValidString(msg) {
				t.Fatalf("error for %q is %d bytes or not UTF-8: %q", s, len(msg), msg)
			}
			if ValidateID("organisation ID", s) == nil {
				t.Fatalf("ParseOrgID refused %q, which ValidateID accepts", s)
			}
			return
		}
		if ValidateID("organisation ID", s) != nil {
			t.Fatalf("ParseOrgID accepted %q, which ValidateID refuses", s)
		}
		if len(id) != 26 || id[0] < '0' || id[0] > '7' || !strings.EqualFold(string(id), s) || string(id) != strings.ToUpper(string(id)) {
			t.Fatalf("ParseOrgID(%q) = %q: not the canonical form of the input", s, id)
		}
		for _, c := range []byte(id) {
			if !strings.ContainsRune("0123456789ABCDEFGHJKMNPQRSTVWXYZ", rune(c)) {
				t.Fatalf("ParseOrgID(%q) = %q holds %q", s, id, c)
			}
		}
		if again, err := ParseOrgID(string(id)); err != nil || again != id {
			t.Fatalf("ParseOrgID(%q) = %q, %v; want it back", id, again, err)
		}
		if lower, err := ParseOrgID(strings.ToLower(s)); err != nil || lower != id {
			t.Fatalf("ParseOrgID(lower %q) = %q, %v; want %q", s, lower, err, id)
		}
	})
}
