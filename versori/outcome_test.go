package versori_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/versori/import-worker/versori"
	"github.com/versori/import-worker/versori/versoritest"
)

func newID() versori.OrgID { return versori.OrgID(ulid.Make().String()) }

// fixedConnector is the public connector the tests import.
const fixedConnector = "01J8Z3K4M5N6P7Q8R9S0T1V2W3"

// newPair starts a fake and a client pointed at it.
func newPair(t *testing.T, opts ...versoritest.Option) (*versoritest.Server, *versori.Client) {
	t.Helper()
	s := versoritest.NewServer(opts...)
	t.Cleanup(s.Close)
	cfg := s.ClientConfig()
	cfg.Timeout = 2 * time.Second
	c, err := versori.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

// TestOutcomeClasses drives every row of the design's outcome table through
// the real client against the fake, and checks the class, its properties,
// the status kept in the error, and whether the fake carried the import out.
func TestOutcomeClasses(t *testing.T) {
	type row struct {
		name       string
		class      versori.Class
		status     int // in the *Error; 0 when no response
		setup      func(s *versoritest.Server, org string)
		timeout    time.Duration // client timeout override
		retryAfter time.Duration // -1: must have none
		imported   int           // imports the fake carried out for org
	}
	fault := func(f versoritest.Fault) func(*versoritest.Server, string) {
		return func(s *versoritest.Server, org string) { s.FailNext(string(org), 1, f) }
	}
	rows := []row{
		{name: "200 imported", class: versori.ClassImported, status: 0, imported: 1, retryAfter: -1},
		{name: "409 already present", class: versori.ClassAlreadyPresent, status: 409, imported: 1, retryAfter: -1,
			setup: func(s *versoritest.Server, org string) { preImport(t, s, org) }},
		{name: "429 with Retry-After seconds", class: versori.ClassRateLimited, status: 429, retryAfter: 7 * time.Second,
			setup: fault(versoritest.Fault{Kind: versoritest.FaultRateLimited, RetryAfter: "7"})},
		{name: "429 with Retry-After date", class: versori.ClassRateLimited, status: 429, retryAfter: 32 * time.Second,
			setup: func(s *versoritest.Server, org string) {
				s.FailNext(string(org), 1, versoritest.Fault{Kind: versoritest.FaultRateLimited, RetryAfter: time.Now().Add(32 * time.Second).UTC().Format(http.TimeFormat)})
			}},
		{name: "429 without Retry-After", class: versori.ClassRateLimited, status: 429, retryAfter: -1,
			setup: fault(versoritest.Fault{Kind: versoritest.FaultRateLimitedNoRetryAfter})},
		{name: "429 with malformed Retry-After", class: versori.ClassRateLimited, status: 429, retryAfter: -1,
			setup: fault(versoritest.Fault{Kind: versoritest.FaultRateLimited, RetryAfter: "soon"})},
		{name: "429 from the server's rate limit", class: versori.ClassRateLimited, status: 429, retryAfter: time.Second,
			setup: func(s *versoritest.Server, org string) {
				s.SetRateLimit(1, 1)
				preImport(t, s, string(newID())) // spends the only token
			}},
		{name: "500", class: versori.ClassServerError, status: 500, retryAfter: -1,
			setup: fault(versoritest.Fault{Kind: versoritest.FaultServerError})},
		{name: "502 HTML from a proxy", class: versori.ClassServerError, status: 502, retryAfter: -1,
			setup: fault(versoritest.Fault{Kind: versoritest.FaultHTML})},
		{name: "503 overloaded", class: versori.ClassServerError, status: 503, retryAfter: -1,
			setup: fault(versoritest.Fault{Kind: versoritest.FaultUnavailable})},
		{name: "503 outage", class: versori.ClassServerError, status: 503, retryAfter: time.Second,
			setup: func(s *versoritest.Server, org string) { s.SetOutage(true) }},
		{name: "timeout", class: versori.ClassTimeout, timeout: 100 * time.Millisecond, retryAfter: -1,
			setup: fault(versoritest.Fault{Kind: versoritest.FaultHang})},
		{name: "timeout after the import was carried out", class: versori.ClassTimeout, timeout: time.Second, retryAfter: -1, imported: 1,
			setup: fault(versoritest.Fault{Kind: versoritest.FaultSlowImport})},
		{name: "network reset", class: versori.ClassNetwork, retryAfter: -1,
			setup: fault(versoritest.Fault{Kind: versoritest.FaultReset})},
		{name: "401 wrong key", class: versori.ClassUnauthorized, status: 401, retryAfter: -1,
			setup: func(s *versoritest.Server, org string) { s.RotateKey("another-key") }},
		{name: "401 key revoked", class: versori.ClassUnauthorized, status: 401, retryAfter: -1,
			setup: func(s *versoritest.Server, org string) { s.SetUnauthorized(true) }},
		{name: "403", class: versori.ClassForbidden, status: 403, retryAfter: -1,
			setup: fault(versoritest.Fault{Kind: versoritest.FaultForbidden})},
		{name: "404", class: versori.ClassNotFound, status: 404, retryAfter: -1,
			setup: fault(versoritest.Fault{Kind: versoritest.FaultNotFound})},
		{name: "400", class: versori.ClassInvalid, status: 400, retryAfter: -1,
			setup: fault(versoritest.Fault{Kind: versoritest.FaultInvalid})},
		{name: "422", class: versori.ClassInvalid, status: 422, retryAfter: -1,
			setup: fault(versoritest.Fault{Kind: versoritest.FaultInvalid, Status: 422})},
	}
	for _, tc := range rows {
		t.Run(tc.name, func(t *testing.T) {
			s := versoritest.NewServer()
			defer s.Close()
			cfg := s.ClientConfig()
			cfg.Timeout = 5 * time.Second
			if tc.timeout > 0 {
				cfg.Timeout = tc.timeout
			}
			c, err := versori.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			org, conn := newID(), versori.ConnectorID(fixedConnector)
			if tc.setup != nil {
				tc.setup(s, string(org))
			}
			got, err := c.ImportPublicConnectorVersion(context.Background(), org, conn, "1.2.0")
			if class := versori.Classify(err); class != tc.class {
				t.Fatalf("class = %s, want %s (err: %v)", class, tc.class, err)
			}
			if tc.class == versori.ClassImported {
				if got == nil || got.OrganisationID != string(org) || len(got.Versions) != 1 || got.Versions[0].PublishedAt != nil {
					t.Fatalf("connector = %+v, want a draft copy in %s", got, org)
				}
			} else if got != nil {
				t.Fatalf("connector = %+v with error %v", got, err)
			}
			var apiErr *versori.Error
			if tc.status != 0 {
				if !errors.As(err, &apiErr) || apiErr.StatusCode != tc.status {
					t.Fatalf("error %v: want *Error with status %d", err, tc.status)
				}
				if apiErr.Message == "" && apiErr.BodyExcerpt == "" {
					t.Errorf("error %#v keeps neither message nor excerpt", apiErr)
				}
			} else if errors.As(err, &apiErr) {
				t.Fatalf("error %v: want no *Error", err)
			}
			d, ok := versori.RetryAfter(err)
			switch {
			case tc.retryAfter < 0 && ok:
				t.Errorf("RetryAfter = %s, want none", d)
			case tc.retryAfter >= 0 && (!ok || d < tc.retryAfter-3*time.Second || d > tc.retryAfter):
				t.Errorf("RetryAfter = %s, %t; want about %s", d, ok, tc.retryAfter)
			}
			if versori.IsRetryable(err) != tc.class.Retryable() {
				t.Errorf("IsRetryable disagrees with the class")
			}
			if n := s.ImportsOf(string(org)); n != tc.imported {
				t.Errorf("fake imported %d times, want %d", n, tc.imported)
			}
		})
	}
}

// preImport imports a version directly, as an earlier run would have.
func preImport(t *testing.T, s *versoritest.Server, org string) {
	t.Helper()
	c, err := versori.New(s.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ImportPublicConnectorVersion(context.Background(), versori.OrgID(org), fixedConnector, "1.2.0")
	if err != nil {
		t.Fatal(err)
	}
}

// TestExhaustedIsTheCallersVerdict: no single call is ever classified as
// exhausted; only the worker, when it stops retrying, records that class.
func TestExhaustedIsTheCallersVerdict(t *testing.T) {
	s, c := newPair(t)
	for _, k := range versoritest.FaultKinds() {
		switch k {
		case versoritest.FaultHang, versoritest.FaultSlowImport:
			continue
		}
		s.FailNext("", 1, versoritest.Fault{Kind: k, Size: 1 << 20})
		_, err := c.ImportPublicConnectorVersion(t.Context(), newID(), fixedConnector, "1")
		if cl := versori.Classify(err); cl == versori.ClassExhausted || !cl.Valid() || cl.Succeeded() {
			t.Errorf("fault %s classified %s", k, cl)
		}
	}
	if versori.ClassExhausted.Retryable() || versori.ClassExhausted.Permanent() || versori.ClassExhausted.Succeeded() {
		t.Error("exhausted must be neither retryable, permanent nor a success")
	}
}
