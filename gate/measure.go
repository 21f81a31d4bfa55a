package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/versori/import-worker/internal/textline"
)

// Verdict is the outcome of one measurement, or of a whole [Run]. It is a
// string so that it reads the same in Go, JSON, logs and rollout status.
type Verdict string

// The verdicts. A measurement is always one of Pass, Fail or Inconclusive;
// Pending is only ever returned by a [Run] that needs more measurements.
const (
	// Pass: the result had data and every sample satisfied the condition.
	Pass Verdict = "pass"
	// Fail: some sample was a number that did not satisfy the condition.
	Fail Verdict = "fail"
	// Inconclusive: no usable number was measured (no data, NaN, an
	// error, a timeout, an unreachable Prometheus, a result of the wrong
	// type). It is kept apart from Fail so the halt reason tells the
	// operator whether the canary is bad or the measuring is, but the
	// rollout halts on it all the same: it never counts as a pass.
	Inconclusive Verdict = "inconclusive"
	// Pending: a Run has seen only passes, fewer than its Count.
	Pending Verdict = "pending"
)

// EnvURL is the environment variable the worker reads the Prometheus URL
// from; it is named here so that the "not configured" reason and the code
// that reads it cannot disagree.
const EnvURL = "GATE_PROMETHEUS_URL"

// DefaultTimeout bounds one measurement when Config.Timeout is unset: long
// enough for a heavy query on a busy Prometheus, short enough that a hung
// server is reported before the next interval is due.
const DefaultTimeout = 10 * time.Second

// MaxReasonLen bounds Measurement.Reason in bytes, because the reason is
// copied into a rollout's status (halt_reason) and shown by the console and
// the API, where a Prometheus error page must not arrive whole.
const MaxReasonLen = 200

// maxAnswer bounds the body read from Prometheus: a gate query's answer is a
// handful of samples, and a query that selects a million series must be
// refused rather than held in memory.
const maxAnswer = 8 << 20

// Config configures a [Measurer].
type Config struct {
	// URL is Prometheus's base URL, e.g. "http://prometheus:9090" (the
	// API paths are appended). Empty means no Prometheus: every
	// measurement is Inconclusive, so a gate configured without one
	// halts instead of waving waves through.
	URL string
	// Client is used for the requests when set, e.g. to add
	// authentication; nil means a plain client.
	Client *http.Client
	// Timeout bounds one measurement; zero means DefaultTimeout.
	Timeout time.Duration
}

// Measurer takes measurements from one Prometheus. It is safe for
// concurrent use, and a nil *Measurer is usable: it measures Inconclusive,
// like one built with no URL.
type Measurer struct {
	api     v1.API
	timeout time.Duration
}

// New builds a Measurer. It fails only on a Config that could never work (a
// URL that is not http or https, a negative timeout), so that a
// misconfigured worker says so when it starts; an empty URL is not an error
// but a Measurer that reports every measurement Inconclusive.
func New(cfg Config) (*Measurer, error) {
	timeout := cfg.Timeout
	if timeout < 0 {
		return nil, fmt.Errorf("gate: timeout %s: want a positive duration, or 0 for %s", timeout, DefaultTimeout)
	}
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	m := &Measurer{timeout: timeout}
	if cfg.URL == "" {
		return m, nil
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		// The url.Error would quote the whole URL, password and all.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("gate: Prometheus URL does not parse: %v", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("gate: Prometheus URL %q: want http://HOST[:PORT][/PATH], or the same with https", u.Redacted())
	}
	client := &http.Client{}
	if cfg.Client != nil {
		c := *cfg.Client
		client = &c
	}
	base := client.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	client.Transport = limitTransport{base}
	c, err := api.NewClient(api.Config{Address: cfg.URL, Client: client})
	if err != nil {
		return nil, fmt.Errorf("gate: Prometheus client: %v", err)
	}
	m.api = v1.NewAPI(c)
	return m, nil
}

// Measurement is the result of one query. Its JSON form is what a Run keeps
// in Redis.
type Measurement struct {
	// Verdict is Pass, Fail or Inconclusive, never Pending.
	Verdict Verdict `json:"verdict"`
	// Value is the sample the verdict rests on: for Fail, the first
	// sample that did not satisfy the condition; for Pass, the sample
	// nearest to failing (the largest under < and <=, the smallest
	// under > and >=, the first under == and !=). It is NaN when
	// Inconclusive, so that a missing number is never read as 0.
	Value float64 `json:"value"`
	// Samples is how many series the result had (1 for a scalar).
	Samples int `json:"samples"`
	// Reason says in one short line why the verdict is what it is; it
	// is printable, has no line breaks, and is at most MaxReasonLen
	// bytes.
	Reason string `json:"reason"`
	// At is the evaluation time the query was sent with.
	At time.Time `json:"at"`
}

// measurementJSON is Measurement with Value as JSON can hold it.
type measurementJSON struct {
	Verdict Verdict         `json:"verdict"`
	Value   json.RawMessage `json:"value"`
	Samples int             `json:"samples"`
	Reason  string          `json:"reason"`
	At      time.Time       `json:"at"`
}

// MarshalJSON writes Value as a number, or as the string "NaN", "+Inf" or
// "-Inf" (Prometheus's own spelling), which encoding/json would otherwise
// refuse, failing the whole Run's save.
func (m Measurement) MarshalJSON() ([]byte, error) {
	var v []byte
	if math.IsNaN(m.Value) || math.IsInf(m.Value, 0) {
		v = []byte(strconv.Quote(strconv.FormatFloat(m.Value, 'g', -1, 64)))
	} else {
		v = strconv.AppendFloat(nil, m.Value, 'g', -1, 64)
	}
	return json.Marshal(measurementJSON{m.Verdict, v, m.Samples, m.Reason, m.At})
}

// UnmarshalJSON reads what MarshalJSON writes; a missing value reads as NaN.
func (m *Measurement) UnmarshalJSON(b []byte) error {
	var j measurementJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	v := math.NaN()
	if len(j.Value) > 0 && string(j.Value) != "null" {
		var s string
		if err := json.Unmarshal(j.Value, &s); err == nil {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return fmt.Errorf("gate measurement value %s: want a number, \"NaN\", \"+Inf\" or \"-Inf\"", echo(s))
			}
			v = f
		} else if err := json.Unmarshal(j.Value, &v); err != nil {
			return fmt.Errorf("gate measurement value: %v", err)
		}
	}
	*m = Measurement{Verdict: j.Verdict, Value: v, Samples: j.Samples, Reason: j.Reason, At: j.At}
	return nil
}

// Measure runs s.Query once, now, and judges the result by s.Condition; it
// ignores s.Count and s.Interval, which are the caller's loop. It never
// returns an error: whatever goes wrong is an Inconclusive measurement with
// a Reason, because to the rollout that is what it is.
func (m *Measurer) Measure(ctx context.Context, s Spec) Measurement {
	at := time.Now()
	if m == nil || m.api == nil {
		return inconclusive(at, 0, "no Prometheus URL configured ("+EnvURL+")")
	}
	cond, err := ParseCondition(s.Condition)
	if err == nil {
		err = checkQuery(s.Query)
	}
	if err != nil {
		return inconclusive(at, 0, "invalid gate: "+err.Error())
	}

	qctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	val, _, _, err := m.api.Query(qctx, s.Query, at, v1.WithTimeout(m.timeout))
	if err != nil {
		return inconclusive(at, 0, m.errorReason(ctx, err))
	}
	return judge(at, val, cond)
}

// judge applies the condition to a query result.
func judge(at time.Time, val model.Value, cond Condition) Measurement {
	switch v := val.(type) {
	case *model.Scalar:
		if v == nil {
			return inconclusive(at, 0, "Prometheus returned no result")
		}
		f := float64(v.Value)
		if math.IsNaN(f) {
			return inconclusive(at, 1, "the query result is NaN")
		}
		if cond.Holds(f) {
			return measured(at, Pass, f, 1, fmt.Sprintf("%s %s", fmtValue(f), cond))
		}
		return measured(at, Fail, f, 1, fmt.Sprintf("%s does not satisfy %s", fmtValue(f), cond))
	case model.Vector:
		return judgeVector(at, v, cond)
	case model.Matrix:
		return inconclusive(at, len(v), "the query returned a range vector; want an instant vector or a scalar")
	case *model.String:
		return inconclusive(at, 0, "the query returned a string; want an instant vector or a scalar")
	case nil:
		return inconclusive(at, 0, "Prometheus returned no result")
	default:
		return inconclusive(at, 0, "the query returned a "+val.Type().String()+"; want an instant vector or a scalar")
	}
}

// judgeVector is judge for an instant vector. A sample that breaks the
// condition outranks a NaN or histogram sample elsewhere in the vector: both
// halt the rollout, and a real breach is the more useful reason.
func judgeVector(at time.Time, vec model.Vector, cond Condition) Measurement {
	n := len(vec)
	if n == 0 {
		return inconclusive(at, 0, "no data: the query returned an empty vector")
	}
	failing, unusable := 0, ""
	var first *model.Sample
	worst := math.NaN()
	for _, s := range vec {
		if s == nil || s.Histogram != nil {
			if unusable == "" {
				unusable = "a sample is a native histogram, not a number"
				if s != nil {
					unusable += ": " + series(s.Metric)
				}
			}
			continue
		}
		f := float64(s.Value)
		if math.IsNaN(f) {
			if unusable == "" {
				unusable = "a sample is NaN: " + series(s.Metric)
			}
			continue
		}
		if !cond.Holds(f) {
			failing++
			if first == nil {
				first = s
			}
			continue
		}
		if math.IsNaN(worst) || nearer(cond.Op, f, worst) {
			worst = f
		}
	}
	if first != nil {
		f := float64(first.Value)
		return measured(at, Fail, f, n, fmt.Sprintf("%s does not satisfy %s (%d of %d series): %s",
			fmtValue(f), cond, failing, n, series(first.Metric)))
	}
	if unusable != "" {
		return inconclusive(at, n, unusable)
	}
	if n == 1 {
		return measured(at, Pass, worst, n, fmt.Sprintf("%s %s", fmtValue(worst), cond))
	}
	return measured(at, Pass, worst, n, fmt.Sprintf("%s %s (worst of %d series)", fmtValue(worst), cond, n))
}

// nearer reports whether passing value a is nearer to failing op than b.
func nearer(op Op, a, b float64) bool {
	switch op {
	case LT, LE:
		return a > b
	case GT, GE:
		return a < b
	}
	return false
}

// series names a sample's series in PromQL's notation, cut short: the
// reason has room for a hint of which series it was, not for all of it.
func series(m model.Metric) string {
	const max = 80
	s := m.String()
	if len(s) > max {
		return truncate(s, max-3) + "..."
	}
	return s
}

func fmtValue(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func measured(at time.Time, v Verdict, f float64, n int, reason string) Measurement {
	return Measurement{Verdict: v, Value: f, Samples: n, Reason: clip(reason), At: at}
}

func inconclusive(at time.Time, n int, reason string) Measurement {
	return Measurement{Verdict: Inconclusive, Value: math.NaN(), Samples: n, Reason: clip(reason), At: at}
}

// errorReason words a failed query. ctx is the caller's context, to tell
// our own timeout from the caller giving up.
func (m *Measurer) errorReason(ctx context.Context, err error) string {
	var apiErr *v1.Error
	switch {
	case ctx.Err() != nil:
		return "measurement cancelled: " + ctx.Err().Error()
	case errors.Is(err, context.DeadlineExceeded):
		return "Prometheus did not answer within " + m.timeout.String()
	case errors.Is(err, errAnswerTooLarge):
		return "Prometheus's answer is larger than 8 MiB: the query selects too many series"
	case errors.As(err, &apiErr):
		switch apiErr.Type {
		case v1.ErrBadData:
			return "Prometheus rejected the query: " + apiErr.Msg
		case v1.ErrExec:
			return "Prometheus could not evaluate the query: " + apiErr.Msg
		case v1.ErrTimeout:
			return "Prometheus timed out evaluating the query: " + apiErr.Msg
		case v1.ErrBadResponse:
			// The client decodes only scalars, vectors and matrices, and
			// reports any other result type (a string) as unreadable.
			if t, ok := strings.CutPrefix(apiErr.Msg, "unexpected value type "); ok {
				if u, err := strconv.Unquote(t); err == nil {
					t = u
				}
				return "the query returned a " + t + "; want an instant vector or a scalar"
			}
			return "Prometheus's answer is unreadable: " + apiErr.Msg
		case v1.ErrServer, v1.ErrClient:
			// Msg is e.g. "server error: 503"; Detail is the body, often
			// an HTML page or a proxy's text: only its first line.
			r := "Prometheus answered " + apiErr.Msg
			if d, _, _ := strings.Cut(strings.TrimSpace(apiErr.Detail), "\n"); d != "" {
				r += ": " + d
			}
			return r
		default:
			return fmt.Sprintf("Prometheus error (%s): %s", apiErr.Type, apiErr.Msg)
		}
	}
	// A transport error: the url.Error around it names the method and the
	// whole URL, which is long and may carry credentials; the inner error
	// ("dial tcp ...: connection refused") is what the operator needs.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return "Prometheus unreachable: " + err.Error()
}

// clip makes s fit a status field: one line (textline.Collapse) of at most
// MaxReasonLen bytes.
func clip(s string) string {
	out := textline.Collapse(s)
	if len(out) > MaxReasonLen {
		out = truncate(out, MaxReasonLen-3) + "..."
	}
	return out
}

// errAnswerTooLarge is returned by a read past maxAnswer bytes.
var errAnswerTooLarge = errors.New("gate: Prometheus answer too large")

// limitTransport caps every response body at maxAnswer bytes, because the
// Prometheus client reads the whole body into memory before decoding it.
type limitTransport struct{ base http.RoundTripper }

func (t limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitBody{rc: resp.Body, left: maxAnswer}
	return resp, nil
}

type limitBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly maxAnswer bytes from a
		// longer one.
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, errAnswerTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitBody) Close() error { return b.rc.Close() }
