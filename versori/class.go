package versori

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"time"
)

// Class is the outcome class of one import call. The values are stable: they
// are written to the rollout ledger, printed in reports and used as metric
// label values, so renaming one is a breaking change.
type Class string

// The outcome classes, as defined in the design's outcome table.
const (
	// ClassImported: 200, the version was copied into the organisation.
	// An empty 2xx (204, or a blank 200) counts too: the status says the
	// import happened; ImportPublicConnectorVersion then returns a
	// Connector with an empty ID.
	ClassImported Class = "imported"
	// ClassAlreadyPresent: 409, the organisation already holds the version.
	// It counts as success: a retry after an ambiguous failure meets it.
	ClassAlreadyPresent Class = "already_present"
	// ClassRateLimited: 429, or the shared budget is spent. Retried after
	// the wait without using up an attempt.
	ClassRateLimited Class = "rate_limited"
	// ClassServerError: 5xx, or a response that cannot be understood.
	ClassServerError Class = "server_error"
	// ClassTimeout: the call's deadline passed before a response arrived.
	ClassTimeout Class = "timeout"
	// ClassNetwork: reset, refused, DNS, TLS or any other transport failure.
	ClassNetwork Class = "network"
	// ClassUnauthorized: 401. The key is wrong for every organisation, so
	// the worker stops taking work instead of failing them all.
	ClassUnauthorized Class = "unauthorized"
	// ClassForbidden: 403, permanent.
	ClassForbidden Class = "forbidden"
	// ClassNotFound: 404, permanent.
	ClassNotFound Class = "not_found"
	// ClassInvalid: 400, 422 and other 4xx, or an ID refused before any
	// request was sent. Permanent.
	ClassInvalid Class = "invalid"
	// ClassExhausted: retries used up. Never produced by this package; the
	// worker records it when it gives up on a retryable class.
	ClassExhausted Class = "exhausted"
)

var allClasses = [...]Class{
	ClassImported, ClassAlreadyPresent, ClassRateLimited, ClassServerError,
	ClassTimeout, ClassNetwork, ClassUnauthorized, ClassForbidden,
	ClassNotFound, ClassInvalid, ClassExhausted,
}

// Classes returns every class in a stable order, for example to initialise
// metric label values so that a series exists before its first event.
func Classes() []Class {
	out := make([]Class, len(allClasses))
	copy(out, allClasses[:])
	return out
}

// Valid reports whether c is one of the classes returned by [Classes].
func (c Class) Valid() bool {
	for _, k := range allClasses {
		if c == k {
			return true
		}
	}
	return false
}

// String returns the class name.
func (c Class) String() string { return string(c) }

// Succeeded reports whether the organisation holds the version after the
// call: imported or already_present.
func (c Class) Succeeded() bool {
	return c == ClassImported || c == ClassAlreadyPresent
}

// Retryable reports whether the call may succeed if made again later:
// rate_limited, server_error, timeout and network.
func (c Class) Retryable() bool {
	switch c {
	case ClassRateLimited, ClassServerError, ClassTimeout, ClassNetwork:
		return true
	}
	return false
}

// Permanent reports whether making the call again cannot help: forbidden,
// not_found and invalid. Unauthorized is deliberately neither retryable nor
// permanent: it says nothing about the organisation, only about the key, and
// the worker pauses instead of failing the organisation.
func (c Class) Permanent() bool {
	switch c {
	case ClassForbidden, ClassNotFound, ClassInvalid:
		return true
	}
	return false
}

// StatusClass returns the label used for an HTTP status in metrics:
// "2xx", "3xx", "4xx", "5xx", or "none" when no response was received
// (status 0) or the status is outside 200-599. The set is small and fixed so
// it is safe as a label.
func StatusClass(status int) string {
	switch {
	case status >= 200 && status < 300:
		return "2xx"
	case status >= 300 && status < 400:
		return "3xx"
	case status >= 400 && status < 500:
		return "4xx"
	case status >= 500 && status < 600:
		return "5xx"
	}
	return "none"
}

// ClassForStatus maps an HTTP status to its class. It is what the client
// uses for every response; it is exported so that other programs (the fake,
// reports) agree with it.
//
// Statuses the table in the design does not name are mapped by what a retry
// can achieve: 408 is a timeout, other 4xx are invalid (permanent), and 1xx,
// 3xx and anything unknown are server errors (retried, then exhausted and
// re-drivable, rather than failed for good on a response nobody expected).
func ClassForStatus(status int) Class {
	switch {
	case status >= 200 && status < 300:
		return ClassImported
	case status == 409:
		return ClassAlreadyPresent
	case status == 429:
		return ClassRateLimited
	case status == 401:
		return ClassUnauthorized
	case status == 403:
		return ClassForbidden
	case status == 404:
		return ClassNotFound
	case status == 408:
		return ClassTimeout
	case status >= 400 && status < 500:
		return ClassInvalid
	}
	return ClassServerError
}

// Classify maps the result of a call to its class.
//
//   - nil is imported.
//   - An [*Error] carries its class (one built without a class is
//     classified by its status). An [*InvalidIDError] is invalid.
//   - context.DeadlineExceeded and any net.Error that reports a timeout are
//     timeout.
//   - context.Canceled is network: the caller gave up (typically the worker is
//     shutting down), so the outcome is unknown and the call must be retried;
//     a retry that meets a 409 then counts as already_present.
//   - Resets, refused connections, EOF, DNS and TLS failures are network.
//   - Anything else is network too: an error this package does not
//     recognise is treated as transient, because failing an organisation
//     for good on an unknown error is worse than retrying it.
func Classify(err error) Class {
	if err == nil {
		return ClassImported
	}
	var apiErr *Error
	if errors.As(err, &apiErr) {
		if apiErr.Class != "" {
			return apiErr.Class
		}
		if apiErr.StatusCode != 0 {
			return ClassForStatus(apiErr.StatusCode)
		}
	}
	var idErr *InvalidIDError
	if errors.As(err, &idErr) {
		return ClassInvalid
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ClassTimeout
	}
	if errors.Is(err, context.Canceled) {
		return ClassNetwork
	}
	// TLS verification failures are not timeouts even though some of them
	// implement net.Error; check them first.
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	if errors.As(err, &certErr) || errors.As(err, &unknownAuth) || errors.As(err, &hostErr) {
		return ClassNetwork
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return ClassTimeout
	}
	return ClassNetwork
}

// IsRetryable reports whether the call that returned err may succeed later.
// It is Classify(err).Retryable(); a nil error is not retryable.
func IsRetryable(err error) bool {
	return Classify(err).Retryable()
}

// RetryAfter returns the delay the server asked for with a Retry-After
// header, if err is (or wraps) an [*Error] that carried a usable one.
func RetryAfter(err error) (time.Duration, bool) {
	var apiErr *Error
	if errors.As(err, &apiErr) && apiErr.HasRetryAfter {
		return apiErr.RetryAfter, true
	}
	return 0, false
}
