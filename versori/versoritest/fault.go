package versoritest

import (
	"fmt"
	"sort"
	"time"
)

// FaultKind names a way the fake misbehaves on an import call.
type FaultKind string

// The fault kinds. Unless a kind says otherwise, the import is not carried
// out, so a later retry performs it exactly once.
const (
	// FaultRateLimited answers 429 with a Retry-After header
	// (Fault.RetryAfter, "1" when empty).
	FaultRateLimited FaultKind = "rate_limited"
	// FaultRateLimitedNoRetryAfter answers 429 without Retry-After.
	FaultRateLimitedNoRetryAfter FaultKind = "rate_limited_no_retry_after"
	// FaultServerError answers 500, or Fault.Status (502, 503, ...), with
	// the API's JSON error body.
	FaultServerError FaultKind = "server_error"
	// FaultUnauthorized answers 401.
	FaultUnauthorized FaultKind = "unauthorized"
	// FaultForbidden answers 403.
	FaultForbidden FaultKind = "forbidden"
	// FaultNotFound answers 404.
	FaultNotFound FaultKind = "not_found"
	// FaultInvalid answers 400, or Fault.Status (422), with a fields list.
	FaultInvalid FaultKind = "invalid"
	// FaultHang sends nothing until the client gives up, the server closes,
	// or Fault.Delay passes (then 504).
	FaultHang FaultKind = "hang"
	// FaultSlowImport carries the import out, then holds the response for
	// Fault.Delay (until the client gives up when zero): the ambiguous
	// timeout whose retry must meet a 409.
	FaultSlowImport FaultKind = "slow_import"
	// FaultReset drops the connection with a TCP reset, sending nothing.
	FaultReset FaultKind = "reset"
	// FaultHTML answers 502, or Fault.Status, with an HTML page, like a
	// proxy in front of the API.
	FaultHTML FaultKind = "html"
	// FaultOversized answers 502, or Fault.Status, with a body of
	// Fault.Size bytes (50 MiB when zero), streamed without buffering.
	FaultOversized FaultKind = "oversized"
	// FaultEcho answers 500, or Fault.Status, with a plain-text dump of the
	// request, headers included, as some debugging proxies do.
	FaultEcho FaultKind = "echo"
	// FaultEchoJSON answers 500, or Fault.Status, with the API's JSON error
	// shape whose message and details hold the request dump.
	FaultEchoJSON FaultKind = "echo_json"
	// FaultEchoPHP answers 502, or Fault.Status, with a JSON body that is
	// not the API's error shape and echoes the request headers escaped as
	// PHP's json_encode with JSON_HEX_* flags would: "/" as "\/", and "+",
	// "<", ">", "&", "'" and '"' as \u00XX. A key holding "/" or "+" then
	// reaches the client only in escaped form.
	FaultEchoPHP FaultKind = "echo_php"
	// FaultEchoPadded answers 500, or Fault.Status, with a plain-text body
	// of Fault.Size spaces (DefaultEchoPadding when zero) followed by the
	// request dump, so the Authorization header lands just past a
	// client's 64 KiB read limit.
	FaultEchoPadded FaultKind = "echo_padded"
	// FaultUnavailable answers 503 with the API's JSON error body, and a
	// Retry-After header only when Fault.RetryAfter is set: an overloaded
	// service, for chaos rates that want 503s rather than 500s.
	FaultUnavailable FaultKind = "unavailable"
)

var allKinds = [...]FaultKind{
	FaultRateLimited, FaultRateLimitedNoRetryAfter, FaultServerError,
	FaultUnauthorized, FaultForbidden, FaultNotFound, FaultInvalid,
	FaultHang, FaultSlowImport, FaultReset, FaultHTML, FaultOversized,
	FaultEcho, FaultEchoJSON, FaultUnavailable, FaultEchoPHP, FaultEchoPadded,
}

// FaultKinds returns every fault kind in a stable order.
func FaultKinds() []FaultKind {
	out := make([]FaultKind, len(allKinds))
	copy(out, allKinds[:])
	return out
}

func (k FaultKind) index() int {
	for i, x := range allKinds {
		if x == k {
			return i
		}
	}
	return -1
}

// Valid reports whether k is a known fault kind.
func (k FaultKind) Valid() bool { return k.index() >= 0 }

// Fault describes one misbehaviour. Only Kind is required; the other fields
// refine kinds that use them.
type Fault struct {
	Kind FaultKind
	// Status overrides the kind's status code where the kind says so.
	Status int
	// RetryAfter is the raw Retry-After header value for FaultRateLimited
	// and FaultUnavailable (seconds or an HTTP date; anything, to test
	// malformed values).
	RetryAfter string
	// Delay bounds FaultHang and FaultSlowImport.
	Delay time.Duration
	// Size is the body size for FaultOversized, and the padding for
	// FaultEchoPadded.
	Size int64
	// Code and Message replace the error body's code and message.
	Code, Message string
}

// DefaultOversizedBytes is FaultOversized's body size when Fault.Size is 0.
const DefaultOversizedBytes = 50 << 20

// DefaultEchoPadding is FaultEchoPadded's run of spaces when Fault.Size is
// 0: with "Authorization: Bearer " after it, the key starts 14 bytes
// before the 64 KiB mark, where a client that cuts before scrubbing keeps
// its first part.
const DefaultEchoPadding = 65_500

// rateTable holds fault probabilities in FaultKinds order, cumulated.
type rateTable struct {
	kinds []FaultKind
	cum   []float64
}

func newRateTable(rates map[FaultKind]float64) (*rateTable, error) {
	t := &rateTable{}
	keys := make([]FaultKind, 0, len(rates))
	for k := range rates {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].index() < keys[j].index() })
	sum := 0.0
	for _, k := range keys {
		p := rates[k]
		if !k.Valid() {
			return nil, fmt.Errorf("versoritest: unknown fault kind %q", k)
		}
		if p < 0 || p > 1 || p != p {
			return nil, fmt.Errorf("versoritest: fault rate for %s is %v, want 0..1", k, p)
		}
		if p == 0 {
			continue
		}
		sum += p
		t.kinds = append(t.kinds, k)
		t.cum = append(t.cum, sum)
	}
	if sum > 1+1e-9 {
		return nil, fmt.Errorf("versoritest: fault rates add up to %v, more than 1", sum)
	}
	if len(t.kinds) == 0 {
		return nil, nil
	}
	return t, nil
}

// pick returns the fault kind chosen by u in [0,1), or "".
func (t *rateTable) pick(u float64) FaultKind {
	if t == nil {
		return ""
	}
	for i, c := range t.cum {
		if u < c {
			return t.kinds[i]
		}
	}
	return ""
}
