package versoritest

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// RateLimit is the fake's own rate limit on import calls, a GCRA (the
// algorithm API gateways commonly use): PerSecond calls per second on
// average, with up to Burst calls at once. Calls beyond it are rate
// violations; they are answered 429 with a Retry-After header unless
// ObserveOnly is set, in which case they are served normally and only
// counted (for benchmarks that measure a client's pacing without
// disturbing it).
type RateLimit struct {
	PerSecond float64
	Burst     int
	// ObserveOnly counts violations without refusing them.
	ObserveOnly bool
	// OmitRetryAfter leaves Retry-After out of the 429.
	OmitRetryAfter bool
	// Headers picks the rate-limit headers sent on every import response
	// while the limit is on, so a client that learns its rate from them
	// can be tested against each convention; HeadersNone (the default)
	// sends none, as the real API documents none.
	Headers HeaderStyle
}

// GatewayBurst is the burst an API gateway's token bucket typically allows
// at perSecond: a tenth of a second of calls, at least 2. A burst of 1 has
// no tolerance at all: a call that reaches the limiter a millisecond sooner
// than 1/perSecond after the last accepted one is refused.
func GatewayBurst(perSecond float64) int { return max(2, int(perSecond/10)) }

// HeaderStyle is a convention of rate-limit response headers.
type HeaderStyle int

// The header styles the fake can send. Each states the limiter's real
// state: the limit (PerSecond), the calls that would be accepted if made
// now (the GCRA's spare burst, 0 after a refusal) and the whole seconds,
// rounded up, until the limiter has fully recovered (on a refusal: until a
// call would be accepted).
const (
	// HeadersNone sends no rate-limit header.
	HeadersNone HeaderStyle = iota
	// HeadersIETF sends the IETF httpapi draft's structured headers:
	// RateLimit-Policy: "default";q=LIMIT;w=1 and
	// RateLimit: "default";r=REMAINING;t=RESET.
	HeadersIETF
	// HeadersX sends the de-facto X-RateLimit-Limit, X-RateLimit-Remaining
	// and X-RateLimit-Reset (delta seconds), without a window, as GitHub
	// and many gateways do: a client cannot derive a rate from them.
	HeadersX
)

var headerStyleNames = [...]string{HeadersNone: "none", HeadersIETF: "ietf", HeadersX: "x"}

// String returns the style's name, as ParseHeaderStyle accepts it.
func (h HeaderStyle) String() string {
	if h >= 0 && int(h) < len(headerStyleNames) {
		return headerStyleNames[h]
	}
	return "HeaderStyle(" + strconv.Itoa(int(h)) + ")"
}

// ParseHeaderStyle reads "none" (or ""), "ietf" or "x", for flags and the
// admin endpoint.
func ParseHeaderStyle(s string) (HeaderStyle, error) {
	if s == "" {
		return HeadersNone, nil
	}
	for i, n := range headerStyleNames {
		if strings.EqualFold(s, n) {
			return HeaderStyle(i), nil
		}
	}
	return HeadersNone, fmt.Errorf("rate-limit header style %q: want none, ietf or x", s)
}

// RateLimitStep is one step of a rate-limit schedule: Policy applies from
// After (counted from the SetRateLimitSchedule call) until the next step.
type RateLimitStep struct {
	After  time.Duration
	Policy RateLimit
}

// SetRateLimit enforces perSecond import calls per second with the given
// burst (at least 1); perSecond <= 0 turns the limit off.
func (s *Server) SetRateLimit(perSecond float64, burst int) {
	s.SetRateLimitPolicy(RateLimit{PerSecond: perSecond, Burst: burst})
}

// SetRateLimitPolicy sets the full rate-limit policy; PerSecond <= 0 turns
// it off. It ends any schedule.
func (s *Server) SetRateLimitPolicy(p RateLimit) { s.limiter.set(p) }

// SetRateLimitSchedule makes the limit change over time, as a real API's
// does under load: each step's policy applies from its After, counted from
// this call, so a test can check how a client follows a limit that drops
// and recovers. Before the first step the current policy stays. Steps are
// taken in order of After; a nil or empty schedule ends the schedule and
// keeps the policy in force. The schedule is checked on each import call:
// no goroutine runs it. A later SetRateLimitPolicy ends it.
func (s *Server) SetRateLimitSchedule(steps []RateLimitStep) {
	s.limiter.schedule(time.Since(s.epoch).Nanoseconds(), steps)
}

// ParseRateLimitSchedule reads a schedule written as comma-separated
// PER_SECOND@OFFSET steps, e.g. "50@0s,10@20s,50@40s"; every step takes
// base's other settings (burst, headers, observe-only, Retry-After). It is
// the syntax of cmd/fakeapi's -rate-limit-schedule flag and the admin
// endpoint.
func ParseRateLimitSchedule(spec string, base RateLimit) ([]RateLimitStep, error) {
	var steps []RateLimitStep
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		rate, off, ok := strings.Cut(part, "@")
		if !ok {
			return nil, fmt.Errorf("schedule step %q: want PER_SECOND@OFFSET, e.g. 10@20s", part)
		}
		r, err := strconv.ParseFloat(rate, 64)
		if err != nil || math.IsNaN(r) || math.IsInf(r, 0) || r < 0 {
			return nil, fmt.Errorf("schedule step %q: rate %q is not a non-negative number", part, rate)
		}
		d, err := time.ParseDuration(off)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("schedule step %q: offset %q is not a non-negative duration", part, off)
		}
		p := base
		p.PerSecond = r
		steps = append(steps, RateLimitStep{After: d, Policy: p})
	}
	if len(steps) == 0 {
		return nil, fmt.Errorf("schedule %q has no steps", spec)
	}
	return steps, nil
}

type limiter struct {
	mu       sync.Mutex
	policy   RateLimit
	interval float64 // ns between calls at the steady rate
	tat      float64 // theoretical arrival time, ns since epoch

	steps     []RateLimitStep // sorted by After; nil without a schedule
	stepsFrom int64           // ns since epoch the offsets count from
	next      int             // index of the next step to apply
}

// set replaces the policy, ends any schedule and starts the limiter afresh.
func (l *limiter) set(p RateLimit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.steps, l.next = nil, 0
	l.apply(p)
	l.tat = 0
}

// apply makes p the policy, keeping the schedule and the arrival time (a
// limit that changes does not forget recent calls). Callers hold mu.
func (l *limiter) apply(p RateLimit) {
	if p.Burst < 1 {
		p.Burst = 1
	}
	l.policy = p
	l.interval = 0
	if p.PerSecond > 0 {
		l.interval = float64(time.Second) / p.PerSecond
	}
}

func (l *limiter) schedule(from int64, steps []RateLimitStep) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.steps = slices.Clone(steps)
	slices.SortStableFunc(l.steps, func(a, b RateLimitStep) int { return cmp.Compare(a.After, b.After) })
	l.stepsFrom, l.next = from, 0
	if len(l.steps) == 0 {
		l.steps = nil
	}
	l.advance(from)
}

// advance applies every step due by now. Callers hold mu.
func (l *limiter) advance(now int64) {
	for l.next < len(l.steps) && now-l.stepsFrom >= int64(l.steps[l.next].After) {
		l.apply(l.steps[l.next].Policy)
		l.next++
	}
}

func (l *limiter) reset() {
	l.mu.Lock()
	l.tat = 0
	l.mu.Unlock()
}

// verdict is the limiter's answer for one call.
type verdict struct {
	// violated: the call came faster than the limit; refuse: it must be
	// answered 429 (not observe-only); wait: before a call would conform.
	violated, refuse bool
	wait             time.Duration
	policy           RateLimit
	// remaining calls that would conform now, and how long until the
	// limiter has fully recovered; set while the limit is on.
	remaining int
	reset     time.Duration
}

// arrive accounts one call at now (ns since epoch) under the policy due at
// that time. A violating call does not advance the GCRA's arrival time:
// it is the call the API would have refused.
func (l *limiter) arrive(now int64) verdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.advance(now)
	v := verdict{policy: l.policy}
	if l.interval == 0 {
		return v
	}
	t := float64(now)
	tat := math.Max(l.tat, t) + l.interval
	capacity := float64(l.policy.Burst) * l.interval
	if over := tat - t - capacity; over > 0 {
		v.violated, v.refuse, v.wait = true, !l.policy.ObserveOnly, time.Duration(over)
		v.reset = v.wait
		if !v.refuse {
			l.fill(&v, t, math.Max(l.tat, t))
		}
		return v
	}
	l.tat = tat
	l.fill(&v, t, tat)
	return v
}

// fill sets the remaining calls and the reset as of t, given the
// theoretical arrival time after this call.
func (l *limiter) fill(v *verdict, t, tat float64) {
	spare := float64(l.policy.Burst)*l.interval - (tat - t)
	v.remaining = max(0, int(math.Floor(spare/l.interval+1e-9)))
	v.reset = time.Duration(math.Max(0, tat-t))
}

// headers writes the verdict's rate-limit headers in the policy's style.
func (v verdict) headers(h interface{ Set(k, v string) }) {
	if v.policy.PerSecond <= 0 {
		return
	}
	limit := strconv.FormatFloat(v.policy.PerSecond, 'f', -1, 64)
	remaining := strconv.Itoa(v.remaining)
	reset := strconv.FormatInt(int64((v.reset+time.Second-1)/time.Second), 10)
	switch v.policy.Headers {
	case HeadersIETF:
		h.Set("RateLimit-Policy", `"default";q=`+limit+`;w=1`)
		h.Set("RateLimit", `"default";r=`+remaining+`;t=`+reset)
	case HeadersX:
		h.Set("X-RateLimit-Limit", limit)
		h.Set("X-RateLimit-Remaining", remaining)
		h.Set("X-RateLimit-Reset", reset)
	}
}
