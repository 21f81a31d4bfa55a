package versori_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/versori/import-worker/versori"
)

func TestClassesStable(t *testing.T) {
	want := []versori.Class{"imported", "already_present", "rate_limited", "server_error", "timeout", "network",
		"unauthorized", "forbidden", "not_found", "invalid", "exhausted"}
	got := versori.Classes()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Classes() = %v, want %v", got, want)
	}
	got[0] = "mutated"
	if versori.Classes()[0] != versori.ClassImported {
		t.Fatal("Classes returns shared storage")
	}
	for _, c := range want {
		if !c.Valid() || c.String() != string(c) {
			t.Errorf("%s: Valid or String wrong", c)
		}
	}
	if versori.Class("bogus").Valid() {
		t.Error("bogus class is valid")
	}
}

func TestClassProperties(t *testing.T) {
	tests := []struct {
		c                               versori.Class
		succeeded, retryable, permanent bool
	}{
		{versori.ClassImported, true, false, false},
		{versori.ClassAlreadyPresent, true, false, false},
		{versori.ClassRateLimited, false, true, false},
		{versori.ClassServerError, false, true, false},
		{versori.ClassTimeout, false, true, false},
		{versori.ClassNetwork, false, true, false},
		{versori.ClassUnauthorized, false, false, false},
		{versori.ClassForbidden, false, false, true},
		{versori.ClassNotFound, false, false, true},
		{versori.ClassInvalid, false, false, true},
		{versori.ClassExhausted, false, false, false},
	}
	if len(tests) != len(versori.Classes()) {
		t.Fatal("a class is missing from this table")
	}
	for _, tc := range tests {
		if tc.c.Succeeded() != tc.succeeded || tc.c.Retryable() != tc.retryable || tc.c.Permanent() != tc.permanent {
			t.Errorf("%s: succeeded %t retryable %t permanent %t, want %t %t %t", tc.c,
				tc.c.Succeeded(), tc.c.Retryable(), tc.c.Permanent(), tc.succeeded, tc.retryable, tc.permanent)
		}
	}
}

func TestStatusClass(t *testing.T) {
	for status, want := range map[int]string{0: "none", 100: "none", 199: "none", 200: "2xx", 204: "2xx", 299: "2xx",
		301: "3xx", 400: "4xx", 409: "4xx", 499: "4xx", 500: "5xx", 599: "5xx", 600: "none", -1: "none"} {
		if got := versori.StatusClass(status); got != want {
			t.Errorf("StatusClass(%d) = %q, want %q", status, got, want)
		}
	}
}

func TestClassForStatus(t *testing.T) {
	for status, want := range map[int]versori.Class{
		200: versori.ClassImported, 201: versori.ClassImported,
		409: versori.ClassAlreadyPresent, 429: versori.ClassRateLimited,
		401: versori.ClassUnauthorized, 403: versori.ClassForbidden, 404: versori.ClassNotFound,
		400: versori.ClassInvalid, 422: versori.ClassInvalid, 412: versori.ClassInvalid, 405: versori.ClassInvalid,
		408: versori.ClassTimeout,
		500: versori.ClassServerError, 502: versori.ClassServerError, 503: versori.ClassServerError, 504: versori.ClassServerError,
		302: versori.ClassServerError, 100: versori.ClassServerError, 0: versori.ClassServerError, 999: versori.ClassServerError,
	} {
		if got := versori.ClassForStatus(status); got != want {
			t.Errorf("ClassForStatus(%d) = %s, want %s", status, got, want)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestClassify(t *testing.T) {
	apiErr := &versori.Error{StatusCode: 429, Class: versori.ClassRateLimited, HasRetryAfter: true, RetryAfter: 3 * time.Second}
	tests := []struct {
		name string
		err  error
		want versori.Class
	}{
		{"nil", nil, versori.ClassImported},
		{"typed", apiErr, versori.ClassRateLimited},
		{"wrapped typed", fmt.Errorf("handler: %w", apiErr), versori.ClassRateLimited},
		{"typed 409", &versori.Error{StatusCode: 409, Class: versori.ClassAlreadyPresent}, versori.ClassAlreadyPresent},
		{"typed without class", &versori.Error{StatusCode: 503}, versori.ClassServerError},
		{"typed without class or status", &versori.Error{}, versori.ClassNetwork},
		{"invalid ID", versori.ValidateID("organisation ID", "nope"), versori.ClassInvalid},
		{"deadline", context.DeadlineExceeded, versori.ClassTimeout},
		{"deadline in url.Error", &url.Error{Op: "Post", URL: "https://x", Err: context.DeadlineExceeded}, versori.ClassTimeout},
		{"net timeout", &net.OpError{Op: "read", Err: timeoutErr{}}, versori.ClassTimeout},
		{"os deadline", os.ErrDeadlineExceeded, versori.ClassTimeout},
		{"canceled", fmt.Errorf("x: %w", context.Canceled), versori.ClassNetwork},
		{"reset", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, versori.ClassNetwork},
		{"refused", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, versori.ClassNetwork},
		{"eof", io.ErrUnexpectedEOF, versori.ClassNetwork},
		{"dns", &net.DNSError{Err: "no such host", Name: "platform.versori.com", IsNotFound: true}, versori.ClassNetwork},
		{"dns timeout", &net.DNSError{Err: "timeout", Name: "platform.versori.com", IsTimeout: true}, versori.ClassTimeout},
		{"tls verify", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, versori.ClassNetwork},
		{"x509 host", x509.HostnameError{Host: "x", Certificate: &x509.Certificate{}}, versori.ClassNetwork},
		{"unknown", errors.New("something odd"), versori.ClassNetwork},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := versori.Classify(tc.err); got != tc.want {
				t.Errorf("Classify(%v) = %s, want %s", tc.err, got, tc.want)
			}
			if got := versori.IsRetryable(tc.err); got != tc.want.Retryable() {
				t.Errorf("IsRetryable = %t", got)
			}
		})
	}
}

func TestRetryAfterOf(t *testing.T) {
	if d, ok := versori.RetryAfter(fmt.Errorf("w: %w", &versori.Error{HasRetryAfter: true, RetryAfter: 2 * time.Second})); !ok || d != 2*time.Second {
		t.Errorf("RetryAfter = %s %t", d, ok)
	}
	if _, ok := versori.RetryAfter(&versori.Error{RetryAfter: 2 * time.Second}); ok {
		t.Error("RetryAfter without HasRetryAfter reported ok")
	}
	if _, ok := versori.RetryAfter(errors.New("x")); ok {
		t.Error("RetryAfter of a plain error reported ok")
	}
	if _, ok := versori.RetryAfter(nil); ok {
		t.Error("RetryAfter(nil) reported ok")
	}
}
