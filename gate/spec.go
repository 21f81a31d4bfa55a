package gate

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
)

// Defaults and bounds of a Spec. A gate needs several passing measurements
// because one good sample right after a wave is released says little; the
// bounds keep a gate from being trivially short or from holding a rollout
// for days.
const (
	DefaultCount    = 3
	MinCount        = 1
	MaxCount        = 100
	DefaultInterval = 30 * time.Second
	MinInterval     = time.Second
	MaxInterval     = time.Hour
)

// Spec is one health gate as the operator writes it, in a rollout request or
// in Redis. Its JSON form is
//
//	{"query": "...", "condition": "< 0.05", "count": 3, "interval": "30s"}
//
// where interval is a Go duration string (as --bake is): it reads back to
// the same duration, and a person can read it. Count and interval may be
// left out; [Spec.WithDefaults] fills them in.
type Spec struct {
	// Query is a PromQL instant query whose result is a scalar or an
	// instant vector, e.g.
	//   sum(rate(import_failures_total[5m])) / sum(rate(import_total[5m]))
	Query string `json:"query"`
	// Condition is what every sample of the result must satisfy for a
	// measurement to pass, e.g. "< 0.05"; see [ParseCondition].
	Condition string `json:"condition"`
	// Count is how many measurements must pass, one after another.
	Count int `json:"count,omitempty"`
	// Interval is the time between two measurements.
	Interval Duration `json:"interval,omitempty"`
}

// Duration is a time.Duration whose JSON form is a duration string such as
// "30s" or "1m30s", so that a stored Spec reads back unchanged and can be
// written by hand.
type Duration time.Duration

// MarshalJSON writes the duration as time.Duration.String does.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string ("30s", "1m", "1h"), or "" for
// unset. A bare number is refused: it is ambiguous between seconds and
// nanoseconds, and guessing wrong makes a gate a billion times too fast.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("gate interval: want a duration string such as \"30s\", got %s", echo(string(b)))
	}
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("gate interval %s: want a duration such as \"30s\" or \"1m\"", echo(s))
	}
	*d = Duration(v)
	return nil
}

// String gives the duration as time.Duration.String does.
func (d Duration) String() string { return time.Duration(d).String() }

// WithDefaults fills in an unset (zero) Count or Interval, so that what is
// validated and stored is what will run, and a later change of default does
// not change a rollout already under way.
func (s Spec) WithDefaults() Spec {
	if s.Count == 0 {
		s.Count = DefaultCount
	}
	if s.Interval == 0 {
		s.Interval = Duration(DefaultInterval)
	}
	return s
}

// Validate checks the spec as it will run, so call it on s.WithDefaults(): a
// zero Count or Interval is refused here rather than silently defaulted,
// because by then it can only be a mistake. The query is parsed with
// Prometheus's own parser, so a syntax error is reported when the rollout
// is created, in Prometheus's words, not as a halted rollout later.
func (s Spec) Validate() error {
	var msgs []string
	if err := checkQuery(s.Query); err != nil {
		msgs = append(msgs, err.Error())
	}
	if _, err := ParseCondition(s.Condition); err != nil {
		msgs = append(msgs, err.Error())
	}
	if s.Count < MinCount || s.Count > MaxCount {
		msgs = append(msgs, fmt.Sprintf("gate count %d: want %d to %d", s.Count, MinCount, MaxCount))
	}
	if d := time.Duration(s.Interval); d < MinInterval || d > MaxInterval {
		msgs = append(msgs, fmt.Sprintf("gate interval %s: want %s to %s", d, MinInterval, MaxInterval))
	}
	if len(msgs) == 0 {
		return nil
	}
	// One line, every problem named: the message goes back as an API
	// error string, and fixing one problem only to be told of the next is
	// slow.
	return errors.New(strings.Join(msgs, "; "))
}

// promql is the parser Validate uses. Experimental functions and fill
// modifiers are accepted: the local check is there to catch typos, and must
// not refuse a query that the Prometheus being asked may well accept; if it
// does not, the measurement says so (Inconclusive, "bad_data").
var promql = parser.NewParser(parser.Options{
	EnableExperimentalFunctions: true,
	EnableBinopFillModifiers:    true,
})

// checkQuery parses q and checks that it yields one value per series (an
// instant vector) or one value (a scalar), the only results a condition can
// be applied to.
func checkQuery(q string) error {
	if strings.TrimSpace(q) == "" {
		return errors.New("gate query: empty; want a PromQL instant query")
	}
	expr, err := promql.ParseExpr(q)
	if err != nil {
		return fmt.Errorf("gate query: %w", err)
	}
	switch t := expr.Type(); t {
	case parser.ValueTypeVector, parser.ValueTypeScalar:
		return nil
	case parser.ValueTypeMatrix:
		return fmt.Errorf("gate query %s: is a range vector; want an instant vector or a scalar (wrap it in a function such as rate() or avg_over_time())", echo(q))
	default:
		return fmt.Errorf("gate query %s: is a %s; want an instant vector or a scalar", echo(q), t)
	}
}
