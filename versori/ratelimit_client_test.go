package versori_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/versori/import-worker/versori"
)

// TestImportReportsRateLimitHeaders checks that the headers are read on a
// 200 (into the Connector), on a 429 and on a 500 (into the Error), and that
// RateLimitOf finds them in either.
func TestImportReportsRateLimitHeaders(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("RateLimit-Policy", `"default";q=10;w=1`)
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Header.Get("X-Test") == "429":
			w.Header().Set("RateLimit", `"default";r=0;t=1`)
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"code":"rate_limited","message":"slow down"}`))
		case r.Header.Get("X-Test") == "500":
			w.Header().Set("X-RateLimit-Remaining", "4")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`oops`))
		default:
			w.Header().Set("RateLimit", `"default";r=7;t=1`)
			_, _ = w.Write([]byte(`{"id":"01J8Z3K4M5N6P7Q8R9S0T1V2W4"}`))
		}
	}))
	defer srv.Close()
	call := func(test string) (*versori.Connector, error) {
		hc := &http.Client{Transport: headerTransport{"X-Test", test}}
		c, err := versori.New(versori.Config{BaseURL: srv.URL, APIKey: "k", HTTPClient: hc})
		if err != nil {
			t.Fatal(err)
		}
		return c.ImportPublicConnectorVersion(t.Context(), newID(), fixedConnector, "1.0")
	}

	conn, err := call("200")
	if err != nil {
		t.Fatal(err)
	}
	want := versori.RateLimit{Rate: 10, Remaining: 7, Reset: time.Second}
	if conn.RateLimit != want || versori.RateLimitOf(conn, nil) != want {
		t.Errorf("200: %+v, want %+v", conn.RateLimit, want)
	}

	_, err = call("429")
	var apiErr *versori.Error
	want = versori.RateLimit{Rate: 10, Remaining: 0, Reset: time.Second}
	if !errors.As(err, &apiErr) || apiErr.RateLimit != want || versori.RateLimitOf(nil, err) != want {
		t.Errorf("429: %#v, want rate limit %+v", err, want)
	}
	if !apiErr.HasRetryAfter || apiErr.RetryAfter != time.Second {
		t.Errorf("429 lost its Retry-After: %+v", apiErr)
	}

	_, err = call("500")
	want = versori.RateLimit{Rate: 10, Remaining: 4}
	if got := versori.RateLimitOf(nil, err); got != want {
		t.Errorf("500: %+v, want %+v", got, want)
	}
}

// TestImportWithoutRateLimitHeaders: a response that says nothing gives
// the unknown RateLimit, not a claim of zero remaining calls.
func TestImportWithoutRateLimitHeaders(t *testing.T) {
	_, c := newPair(t)
	conn, err := c.ImportPublicConnectorVersion(t.Context(), newID(), fixedConnector, "1.0")
	if err != nil {
		t.Fatal(err)
	}
	if conn.RateLimit.Known() || conn.RateLimit.Remaining != -1 {
		t.Errorf("no headers, yet %+v", conn.RateLimit)
	}
}

// headerTransport adds one request header, so a test server can tell
// which answer a call wants.
type headerTransport struct{ k, v string }

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.k, h.v)
	return http.DefaultTransport.RoundTrip(r)
}
