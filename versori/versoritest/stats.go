package versoritest

import (
	"slices"
	"strconv"
	"time"
)

// Stats is a snapshot of the fake's counters, as served by /_stats.
type Stats struct {
	// Requests counts every request the fake received, lookups included.
	Requests int64 `json:"requests"`
	// Calls counts import calls, whatever their answer.
	Calls int64 `json:"calls"`
	// Imports counts imports carried out (200s, and slow imports).
	Imports int64 `json:"imports"`
	// Conflicts counts 409s: imports of a version already held.
	Conflicts int64 `json:"conflicts"`
	// RateViolations counts import calls that arrived faster than the
	// configured rate limit.
	RateViolations int64 `json:"rate_violations"`
	// Organisations counts distinct organisations that made import calls.
	Organisations int `json:"organisations"`
	// MaxCallsPerSecond is the most import calls seen in any one-second
	// sliding window.
	MaxCallsPerSecond int `json:"max_calls_per_second"`
	// MeanCallsPerSecond is the import call rate between the first and the
	// last call (0 with fewer than two calls).
	MeanCallsPerSecond float64 `json:"mean_calls_per_second"`
	// RateLimited counts import calls the fake's rate limit answered 429
	// (injected FaultRateLimited faults are counted under Faults).
	RateLimited int64 `json:"rate_limited"`
	// PerSecond counts import calls and rate-limit refusals in each whole
	// second, so a test can see when a client was refused and how it
	// recovered after the limit changed (SetRateLimitSchedule).
	PerSecond SecondCounts `json:"per_second"`
	// Faults counts faults injected, by kind.
	Faults map[FaultKind]int64 `json:"faults"`
	// Statuses counts responses by HTTP status code.
	Statuses map[string]int64 `json:"statuses"`
}

// SecondCounts are per-second counts: entry i of each list is the second
// starting at Start + i seconds, seconds counted from the fake's start.
// Only the last MaxStatSeconds seconds with a call are kept.
type SecondCounts struct {
	Start       time.Time `json:"start"`
	Calls       []int     `json:"calls"`
	RateLimited []int     `json:"rate_limited"`
}

// MaxStatSeconds bounds SecondCounts, so /_stats stays small however long
// the fake runs.
const MaxStatSeconds = 3600

// perSecond buckets the sorted call and refusal times (ns since epoch).
func (s *Server) perSecond(calls, refused []int64) SecondCounts {
	if len(calls) == 0 {
		return SecondCounts{Calls: []int{}, RateLimited: []int{}}
	}
	sec := int64(time.Second)
	first, last := calls[0]/sec, calls[len(calls)-1]/sec
	first = max(first, last-MaxStatSeconds+1)
	n := int(last - first + 1)
	out := SecondCounts{Start: s.epoch.Add(time.Duration(first * sec)), Calls: make([]int, n), RateLimited: make([]int, n)}
	for _, t := range calls {
		if i := t/sec - first; i >= 0 {
			out.Calls[i]++
		}
	}
	for _, t := range refused {
		if i := t/sec - first; i >= 0 && i < int64(n) {
			out.RateLimited[i]++
		}
	}
	return out
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Requests:       s.requests.Load(),
		Calls:          s.calls.Load(),
		Imports:        s.imports.Load(),
		Conflicts:      s.conflicts.Load(),
		RateViolations: s.violations.Load(),
		RateLimited:    s.refusals.Load(),
		Faults:         map[FaultKind]int64{},
		Statuses:       map[string]int64{},
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, o := range sh.orgs {
			if o.calls > 0 {
				st.Organisations++
			}
		}
		sh.mu.Unlock()
	}
	for i, k := range allKinds {
		if n := s.faults[i].Load(); n > 0 {
			st.Faults[k] = n
		}
	}
	for code := range s.statuses {
		if n := s.statuses[code].Load(); n > 0 {
			st.Statuses[strconv.Itoa(code)] = n
		}
	}
	st.PerSecond = s.perSecond(s.sortedTimes(), s.sortedRefusals())
	times := s.CallTimes()
	st.MaxCallsPerSecond, _ = WorstWindow(times, time.Second)
	if n := len(times); n > 1 && times[n-1].After(times[0]) {
		st.MeanCallsPerSecond = float64(n-1) / times[n-1].Sub(times[0]).Seconds()
	}
	return st
}

// Calls returns how many import calls orgID made, whatever their answer.
func (s *Server) Calls(orgID string) int {
	return s.orgCounter(orgID, func(o *orgState) int { return o.calls })
}

// ImportsOf returns how many times orgID was actually imported into. For
// one connector version, an idempotent client never makes it exceed 1.
func (s *Server) ImportsOf(orgID string) int {
	return s.orgCounter(orgID, func(o *orgState) int { return o.imports })
}

// ConflictsOf returns how many of orgID's import calls answered 409.
func (s *Server) ConflictsOf(orgID string) int {
	return s.orgCounter(orgID, func(o *orgState) int { return o.conflicts })
}

// Holds reports whether orgID holds version versionName of connectorID.
func (s *Server) Holds(orgID, connectorID, versionName string) bool {
	sh := s.shard(orgID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	o := sh.orgs[orgID]
	if o == nil {
		return false
	}
	_, ok := o.held[connectorID+"\x00"+versionName]
	return ok
}

func (s *Server) orgCounter(orgID string, f func(*orgState) int) int {
	sh := s.shard(orgID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if o := sh.orgs[orgID]; o != nil {
		return f(o)
	}
	return 0
}

// TotalCalls returns how many import calls arrived.
func (s *Server) TotalCalls() int { return int(s.calls.Load()) }

// Requests returns how many requests arrived, lookups included.
func (s *Server) Requests() int { return int(s.requests.Load()) }

// Imports returns how many imports were carried out.
func (s *Server) Imports() int { return int(s.imports.Load()) }

// Conflicts returns how many import calls answered 409.
func (s *Server) Conflicts() int { return int(s.conflicts.Load()) }

// RateViolations returns how many import calls arrived faster than the
// configured rate limit.
func (s *Server) RateViolations() int { return int(s.violations.Load()) }

// FaultsInjected returns how many faults of kind k were injected.
func (s *Server) FaultsInjected(k FaultKind) int {
	if i := k.index(); i >= 0 {
		return int(s.faults[i].Load())
	}
	return 0
}

// StatusCount returns how many responses had the given status.
func (s *Server) StatusCount(status int) int {
	if status < 0 || status >= len(s.statuses) {
		return 0
	}
	return int(s.statuses[status].Load())
}

// CallTimes returns the arrival time of every import call, in order (the
// most recent 4 million or more, if there were more).
func (s *Server) CallTimes() []time.Time {
	times := s.sortedTimes()
	out := make([]time.Time, len(times))
	for i, ns := range times {
		out[i] = s.epoch.Add(time.Duration(ns))
	}
	return out
}

// RateLimited returns how many import calls the fake's rate limit
// answered 429.
func (s *Server) RateLimited() int { return int(s.refusals.Load()) }

// RateLimitedTimes returns the arrival time of every import call the
// fake's rate limit answered 429, in order (bounded like CallTimes), so a
// test can count refusals in any stretch of time, e.g. after a schedule
// step.
func (s *Server) RateLimitedTimes() []time.Time {
	times := s.sortedRefusals()
	out := make([]time.Time, len(times))
	for i, ns := range times {
		out[i] = s.epoch.Add(time.Duration(ns))
	}
	return out
}

func (s *Server) sortedRefusals() []int64 {
	s.timesMu.Lock()
	times := slices.Clone(s.refused)
	s.timesMu.Unlock()
	slices.Sort(times)
	return times
}

// MaxCallsInWindow returns the most import calls that arrived within any
// window of the given length (a sliding window, not aligned buckets): the
// worst one-second window is MaxCallsInWindow(time.Second).
func (s *Server) MaxCallsInWindow(window time.Duration) int {
	n, _ := WorstWindow(s.CallTimes(), window)
	return n
}

func (s *Server) sortedTimes() []int64 {
	s.timesMu.Lock()
	times := slices.Clone(s.times)
	s.timesMu.Unlock()
	// Arrivals are appended after their timestamp is taken, so
	// concurrent calls can land slightly out of order.
	slices.Sort(times)
	return times
}

// WorstWindow returns the most of the sorted times that fall within any
// half-open window [t, t+w) (a sliding window, not aligned buckets, so a
// burst straddling a second boundary is counted whole), and where the first
// fullest window starts (the zero time when times is empty). Tests and
// benchmarks use it on any schedule of calls, not only the fake's.
func WorstWindow(times []time.Time, w time.Duration) (n int, start time.Time) {
	lo := 0
	for hi := range times {
		for times[hi].Sub(times[lo]) >= w {
			lo++
		}
		if hi-lo+1 > n {
			n, start = hi-lo+1, times[lo]
		}
	}
	return n, start
}
