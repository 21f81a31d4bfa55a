package gate

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Op is a comparison operator of a [Condition]. It is a string so that a
// condition reads in logs and JSON the way the operator wrote it.
type Op string

// The operators a condition accepts: PromQL's own comparison operators, so a
// condition reads like the filter one would write in the query itself.
const (
	LT Op = "<"
	LE Op = "<="
	GT Op = ">"
	GE Op = ">="
	EQ Op = "=="
	NE Op = "!="
)

// ops is in matching order: a two-character operator before its one-character
// prefix, so "<=" is not read as "<" followed by "=1".
var ops = []Op{LE, GE, EQ, NE, LT, GT}

// Condition is a parsed Spec.Condition. It is kept parsed, rather than as the
// string, so that a measurement compares numbers instead of re-reading text
// every time, and so that an invalid condition is caught once, by
// [ParseCondition], when the rollout is created.
type Condition struct {
	// Op compares the measured value (on its left) with Threshold.
	Op Op
	// Threshold is finite: ParseCondition refuses Inf and NaN, against
	// which every comparison is either trivial or always false.
	Threshold float64
}

// errCondition is the one message for every malformed condition: what was
// wrong is nearly always the same thing (an unknown operator, or something
// that is not a number), and naming what is wanted fixes it faster than a
// description of the mistake.
const errConditionWant = "want an operator (<, <=, >, >=, ==, !=) and a number"

// maxEcho bounds how much of a rejected input is quoted back in an error, so
// a megabyte of garbage in an API request does not come back in the 4xx.
const maxEcho = 64

// ParseCondition reads a condition such as "< 0.05", ">= 0.95" or "==0": an
// operator, optional white space, and a finite decimal number (an optional
// sign, digits, an optional fraction and exponent; no Inf, NaN, hex or
// underscores, which a threshold has no use for and which are more likely a
// mistake than intended). Surrounding white space is ignored.
func ParseCondition(s string) (Condition, error) {
	t := strings.TrimSpace(s)
	for _, op := range ops {
		rest, ok := strings.CutPrefix(t, string(op))
		if !ok {
			continue
		}
		num := strings.TrimSpace(rest)
		v, err := parseNumber(num)
		if err != nil {
			return Condition{}, fmt.Errorf("gate condition %s: %s", echo(s), err)
		}
		return Condition{Op: op, Threshold: v}, nil
	}
	return Condition{}, fmt.Errorf("gate condition %s: %s", echo(s), errConditionWant)
}

// parseNumber accepts only plain decimal notation before handing the text to
// strconv, which would also take "Inf", "NaN", "0x1p-2" and "1_0".
func parseNumber(s string) (float64, error) {
	if s == "" {
		return 0, errors.New(errConditionWant)
	}
	digits := false
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			digits = true
		case r == '.' || r == '+' || r == '-' || r == 'e' || r == 'E':
		default:
			return 0, errors.New(errConditionWant)
		}
	}
	if !digits {
		return 0, errors.New(errConditionWant)
	}
	v, err := strconv.ParseFloat(s, 64)
	if errors.Is(err, strconv.ErrRange) {
		// Only overflow is reported: an underflow rounds to the nearest
		// value without error, and a threshold of 1e-400 means 0.
		return 0, errors.New("the number is too large: want a finite number")
	}
	if err != nil {
		return 0, errors.New(errConditionWant)
	}
	return v, nil
}

// echo quotes a rejected input for an error message, cut so that the quoted
// form is at most maxEcho bytes and a few: it is the quoting that is
// bounded, since an invalid byte quotes to four ("\x88").
func echo(s string) string {
	q := strconv.Quote(s)
	if len(q) <= maxEcho {
		return q
	}
	for n := min(len(s), maxEcho); ; {
		p := truncate(s, n)
		if q = strconv.Quote(p); len(q) <= maxEcho || p == "" {
			return q + "..."
		}
		n = len(p) - 1
	}
}

// Holds reports whether v satisfies the condition. NaN satisfies none, not
// even "!=" (where Go's own != would say true): a NaN is a measurement that
// failed to produce a number, and must not pass a gate by accident.
func (c Condition) Holds(v float64) bool {
	if math.IsNaN(v) {
		return false
	}
	switch c.Op {
	case LT:
		return v < c.Threshold
	case LE:
		return v <= c.Threshold
	case GT:
		return v > c.Threshold
	case GE:
		return v >= c.Threshold
	case EQ:
		return v == c.Threshold
	case NE:
		return v != c.Threshold
	}
	// The zero Condition, or one built by hand with an unknown operator,
	// holds for nothing rather than for everything.
	return false
}

// String gives the condition in the form ParseCondition reads ("< 0.05"),
// with the shortest number that reads back as the same threshold, so that a
// condition stored or shown is the condition that will be applied.
func (c Condition) String() string {
	return string(c.Op) + " " + strconv.FormatFloat(c.Threshold, 'g', -1, 64)
}

// truncate cuts s to at most n bytes without splitting a rune.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
