package versoritest

import (
	"math"
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
}

// SetRateLimit enforces perSecond import calls per second with the given
// burst (at least 1); perSecond <= 0 turns the limit off.
func (s *Server) SetRateLimit(perSecond float64, burst int) {
	s.SetRateLimitPolicy(RateLimit{PerSecond: perSecond, Burst: burst})
}

// SetRateLimitPolicy sets the full rate-limit policy; PerSecond <= 0 turns
// it off.
func (s *Server) SetRateLimitPolicy(p RateLimit) { s.limiter.set(p) }

type limiter struct {
	mu       sync.Mutex
	policy   RateLimit
	interval float64 // ns between calls at the steady rate
	tat      float64 // theoretical arrival time, ns since epoch
}

func (l *limiter) set(p RateLimit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.Burst < 1 {
		p.Burst = 1
	}
	l.policy = p
	l.interval = 0
	if p.PerSecond > 0 {
		l.interval = float64(time.Second) / p.PerSecond
	}
	l.tat = 0
}

func (l *limiter) reset() {
	l.mu.Lock()
	l.tat = 0
	l.mu.Unlock()
}

// arrive accounts one call at now (ns since epoch). It reports whether the
// call violates the limit, whether it must be refused, and, if so, the wait
// before a call would conform. A violating call does not advance the
// schedule: it is the call the API would have refused.
func (l *limiter) arrive(now int64) (violated, refuse bool, wait time.Duration, omitRetryAfter bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.interval == 0 {
		return false, false, 0, false
	}
	t := float64(now)
	tat := math.Max(l.tat, t) + l.interval
	if over := tat - t - float64(l.policy.Burst)*l.interval; over > 0 {
		return true, !l.policy.ObserveOnly, time.Duration(over), l.policy.OmitRetryAfter
	}
	l.tat = tat
	return false, false, 0, false
}
