package versori_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/versori/import-worker/versori"
	"github.com/versori/import-worker/versori/versoritest"
)

// leakKey holds "/" and "+", which PHP's json_encode escapes, and is long
// enough that every 8-byte fragment of it is distinctive.
const leakKey = "sk_live_Ab/9+Qz/Xy+0123456789abcdefGH"

// fragments returns every run of 8 consecutive bytes of key.
func fragments(key string) []string {
	var out []string
	for i := 0; i+8 <= len(key); i++ {
		out = append(out, key[i:i+8])
	}
	return out
}

// assertNoKey fails when err's text, in any fmt form, holds the key or any
// 8-byte fragment of it, raw or in the escaped forms a server could echo.
func assertNoKey(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	var apiErr *versori.Error
	errors.As(err, &apiErr)
	outs := []string{err.Error(), fmt.Sprintf("%v|%+v|%#v", err, err, err), fmt.Sprintf("%#v", apiErr)}
	for _, out := range outs {
		for _, f := range fragments(leakKey) {
			for _, form := range []string{f, strings.ReplaceAll(f, "/", `\/`), strings.ReplaceAll(f, "+", `\u002b`)} {
				if strings.Contains(out, form) {
					t.Fatalf("error shows a fragment of the key (%q): %s", form, out)
				}
			}
		}
	}
}

// TestEchoedKeyEscapedOrPastTheCut covers the two reported leaks, through
// the fake: a PHP-escaped JSON echo, and a key just past the 64 KiB read.
func TestEchoedKeyEscapedOrPastTheCut(t *testing.T) {
	for _, f := range []versoritest.Fault{
		{Kind: versoritest.FaultEchoPHP},
		{Kind: versoritest.FaultEchoPadded},
		{Kind: versoritest.FaultEchoPadded, Size: int64(65_536 - len("Authorization: Bearer ") - 20)},
		{Kind: versoritest.FaultEchoPadded, Size: 100},
	} {
		t.Run(fmt.Sprintf("%s/%d", f.Kind, f.Size), func(t *testing.T) {
			s := versoritest.NewServer(versoritest.WithAPIKey(leakKey))
			defer s.Close()
			s.SetFault("", f)
			c, err := versori.New(versori.Config{BaseURL: s.URL, APIKey: leakKey})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.ImportPublicConnectorVersion(t.Context(), newID(), fixedConnector, "1.0.0")
			assertNoKey(t, err)
			if !strings.Contains(err.Error(), "[REDAC") {
				t.Errorf("error %q: the echo should show where the key was", err)
			}
		})
	}
}

// TestEchoedKeyEncodings: every encoding a server or proxy might echo the
// key in is redacted, as are fragments of it.
func TestEchoedKeyEncodings(t *testing.T) {
	bearer := "Bearer " + leakKey
	bodies := map[string]string{
		"json \\u escapes, upper case": `{"h":"` + strings.NewReplacer("+", `\u002B`, "/", `\u002F`).Replace(bearer) + `"}`,
		"json every byte escaped":      `{"h":"` + uEscapeAll(leakKey) + `"}`,
		"percent upper":                "auth=" + strings.NewReplacer("+", "%2B", "/", "%2F").Replace(leakKey),
		"percent every byte":           "auth=" + pctAll(leakKey),
		"html numeric entities":        "<p>" + strings.NewReplacer("+", "&#43;", "/", "&#x2F;").Replace(leakKey) + "</p>",
		"base64 of bearer":             "X-Echo: " + base64.StdEncoding.EncodeToString([]byte(bearer)),
		"base64url of bearer, shifted": "X-Echo: " + base64.RawURLEncoding.EncodeToString([]byte("Authorization: "+bearer)),
		"base64, php escaped":          `{"b":"` + strings.ReplaceAll(base64.StdEncoding.EncodeToString([]byte("x"+bearer)), "/", `\/`) + `"}`,
		"fragment only":                "saw ..." + leakKey[5:20] + "...",
		"double escaped":               `{"h":"` + strings.ReplaceAll(strings.ReplaceAll(leakKey, "/", `\\/`), "+", `%5Cu002b`) + `"}`,
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			c, err := versori.New(versori.Config{BaseURL: "https://api.example.com/v1", APIKey: leakKey, HTTPClient: fixedBody(502, body)})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.ImportPublicConnectorVersion(t.Context(), newID(), fixedConnector, "1.0.0")
			assertNoKey(t, err)
			var apiErr *versori.Error
			if !errors.As(err, &apiErr) || !strings.Contains(apiErr.BodyExcerpt+apiErr.Message, "[REDACTED]") {
				t.Errorf("no redaction marker in %v", err)
			}
		})
	}
}

// TestScrubKeepsInnocentText: text without the key (or a run of 8 of its
// bytes) is left alone, escapes included.
func TestScrubKeepsInnocentText(t *testing.T) {
	body := `upstream said: a\/b \u002b 100%25 &amp; sk_live (7 bytes of the key only) QWxhZGRpbjpvcGVu`
	c, _ := versori.New(versori.Config{BaseURL: "https://api.example.com/v1", APIKey: leakKey, HTTPClient: fixedBody(502, body)})
	_, err := c.ImportPublicConnectorVersion(t.Context(), newID(), fixedConnector, "1.0.0")
	var apiErr *versori.Error
	if !errors.As(err, &apiErr) || apiErr.BodyExcerpt != body {
		t.Errorf("excerpt %q, want the body unchanged", apiErr.BodyExcerpt)
	}
}

func uEscapeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, `\u%04x`, s[i])
	}
	return b.String()
}

func pctAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02x", s[i])
	}
	return b.String()
}

// fixedBody is an HTTP client whose every request is answered with status
// and a text body, without a network.
func fixedBody(status int, body string) *http.Client {
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{
			StatusCode: status, Header: http.Header{"Content-Type": {"text/plain"}},
			Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: r,
		}, nil
	})}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
