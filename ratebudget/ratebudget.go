// Package ratebudget is a rate budget shared by every process on one Redis:
// one limit, in calls per second, for the whole fleet of workers.
//
// # Design
//
// A caller does not poll for permission; it books a slot. One Lua script call
// (EVALSHA; EVAL only when Redis has not cached the script yet) reads the budget's theoretical arrival time (TAT, as in GCRA), books the
// next free slot, and returns how long until that slot. The caller sleeps
// until then and makes its call. Every slot is booked exactly once, so the
// schedule the fleet follows is the GCRA schedule itself: at most Burst
// calls at once, then one every 1/Limit seconds, however many processes and
// goroutines share the budget. Times are taken from Redis (TIME inside the
// script), so the clocks of the worker hosts do not matter. The state is one
// small hash that expires when idle; losing it (a Redis restart without
// persistence, a failover) costs at most one burst. It needs Redis 6.2 or
// newer (scripts replicated by effect), and works on Redis Cluster: each
// script touches one key.
//
// Polling was measured and rejected (shared/design.md, "The rate budget:
// what was measured on this machine": three processes of 20 goroutines,
// 200 calls/s fleet-wide). Asking a limiter (redis_rate.Allow) and sleeping
// its RetryAfter reached only 0.88 of the rate with burst 1, and spent about
// 57 Redis commands per call, because every waiting goroutine asks again and
// all but one are refused. Booking reached 1.00 of the rate with the worst
// one-second window at 1.005-1.015 of it, for about one command per call.
//
// # Two guards
//
// A booked slot that the caller reaches late (a GC pause, a stalled or
// SIGSTOPped process, an overloaded host) is dropped and booked again, rather
// than used: otherwise the callers that were held all fire together when the
// process resumes. In the measurements, a 300 ms pause of all three processes
// took the worst second to 1.28 of the rate without this guard and 1.01 with
// it. See Config.LateTolerance.
//
// A booking is bounded by Config.MaxWait and by the caller's context
// deadline. When the next free slot is further away, nothing is booked and Wait returns a *DelayError carrying
// the delay, so the caller can hand its task back to the queue (as
// rate_limited, to run after the delay) instead of holding a handler while a
// long queue drains.
//
// # Cool-down
//
// After the API answers 429 with Retry-After, CoolDown moves the booking
// clock forward for the whole fleet: no slot is booked inside the cool-down,
// and the burst is spent so the API is not met with a burst when it opens
// again. Slots booked before the cool-down began are still used by other
// processes (they learn of it at their next booking, which keeps the cost at
// one command per call); this process's own callers drop theirs.
//
// # Adaptive rate
//
// Versori documents no rate limit, so Config.Limit is a ceiling, and with
// Config.Adaptive enabled the fleet learns the API's real rate below it,
// once for the whole fleet, in the same hash. Each process counts the
// answers its calls got (Report) and folds them into its next booking, so
// learning costs no extra round trip. The rule, evaluated by the booking
// script on the server's clock:
//
//   - 429s that show the fleet above the API's limit cut the rate to 0.95
//     of the rate the API accepted while refusing: at once when at least
//     half of 4 or more answers (3 or more) are 429s, during a hold when a
//     tenth of at least 10 are, else when two evidence windows in a row
//     (each at least EvidenceWindow and 40 answers) held a CutShare and
//     CutMin of them. While the fleet is above a limit, what the API
//     accepts is about its limit: a measurement, like BBR's delivery rate,
//     not a blind multiplicative cut. The rate found is the estimate of
//     the API's limit, good (W_max in CUBIC's terms).
//   - The rate is then held for Hold, and probes just above good, in the
//     shape of CUBIC's window around W_max (see rateAtLua in script.go):
//     flat near the last known limit, where the API's refusals are, and
//     fast once clearly past it. The probe rises to 1.15 x good over
//     0.4 s (a step that halves with each probe in a row that found the
//     limit where it was, down to 1.0375 x good) and stays there; the
//     first 429 ends it (sent at once, not with the next booking) and
//     the fleet goes back to 0.9 x good, so a
//     probe of a limit that did not move costs about one refused call: the
//     API refuses once the excess has spent its burst, and every answer
//     waited for would be another call above the limit. A probe refused
//     while still approaching good, or refused twice (a second 429 from
//     the calls booked before the first came back), lowers good. A probe
//     that runs a second at its top with no 429 while the API accepts
//     clearly more than good has found a limit that rose: the rate grows
//     fast, a cubic of the time since (Ramp) clocked by the answers as
//     TCP's slow start is by its acknowledgements (never above 2.5 times
//     what a clean quarter-second window accepted), until the first 429.
//   - Below the ceiling the fleet's burst shrinks with its rate.
//   - The first cut from the ceiling counts one accepted call less: the
//     API's bucket was full when the window began, and a window of 0.1 s
//     read its burst as rate (18/s against 10). A window the API accepted
//     nothing of cuts to a fifth of the rate, never to the floor.
//   - A caller that reaches a slot booked at more than twice the rate its
//     process has since heard the fleet fell to books again (steepFall):
//     the first cut, a fast probe's fall, a limit that fell. Every fall
//     spaces the next slot at the new rate: an API without a burst (a
//     bucket of one call) refuses a call sooner than its interval after
//     the last, and each failed probe cost two 429s there.
//   - The hold after the first cut from the ceiling is cut to no less than
//     0.7 of it while under two thirds of the answers are 429s: such an
//     API met a little above its limit refuses every other call, and the
//     cut read half the limit (TestAdaptiveAPIWithoutBurst).
//   - Evidence from calls booked before a decision is ignored: a decision
//     is made at most once per reaction window, which ends when the slots
//     booked before it have been used.
//   - Isolated 429s at a rate the API has been accepting change nothing: a
//     2% scatter rarely puts two windows in a row over CutShare, and a
//     fleet at its ceiling does not probe. After a cut, a second one needs
//     a window under CutShare first, or a share that fell with the rate,
//     and a refused probe lowers good only after a clean hold. A steady
//     scatter is learned: a limit's 429s are most of the answers at the
//     ceiling and fall off below it, a scatter keeps its share at any
//     rate, so when the share of 429s in the holds below the ceiling (at
//     least CutShare) is what the answers at the ceiling showed too
//     (within two standard deviations and one either way), it is the
//     scatter's, and from then on only 429s beyond it (three standard
//     deviations and one) count as evidence. A scatter under CutShare is
//     not learnt so, but where the ceiling and the holds both saw 40
//     answers or more, the lower of their shares is a floor that no
//     limit explains, and only 429s beyond it count: after a stray cut
//     a 2% scatter once refused every probe at its first 429 and kept
//     the fleet below its ceiling for good
//     (TestAdaptiveSmallScatterReturnsToTheCeiling). A 5-10% scatter of random
//     429s once refused every probe and cut every hold, sinking a fleet
//     from 100 to 5 calls/s within a minute; now it costs a cut or two
//     (TestAdaptiveRandomScatterKeepsTheRate). The holds alone cannot
//     tell: just below a limit an API refuses some calls anyway (a probe
//     spent its burst and the calls' jitter meets it), and learnt from
//     holds alone the "scatter" blinded the probes. The test can still
//     be fooled when a limit falls from the ceiling to a fifth of it:
//     the few 429s of the window that cut match the holds' jitter, and
//     the probes above the new limit run longer (20-29% of calls 429 in
//     the 15 s after the drop in TestAdaptiveTuning, 11-12% before).
//   - Answers that failed (5xx, timeouts, resets) count as accepted for
//     the rate: they were not refused for it.
//   - Rate-limit headers, when the API sends them, set the rate directly
//     (0.97 of the stated policy, or of Quota over the longest reset seen)
//     and stop the probing while they last; a window whose calls are spent
//     (remaining 0) for more than a second pauses the fleet until it
//     resets, unless the rate was stated.
//
// Why not the per-process recipes, on the figures of BENCHMARKS.md
// (figure 7): AWS SDK's adaptive retry mode (a CUBIC token bucket, beta
// 0.7) and TCP's AIMD cut the sending rate blindly by beta and probe back
// on a clock: after a 50 -> 10 drop they need five cuts and hundreds of
// 429s, and at a steady limit their sawtooth averages about 0.85 of it
// (row 1 needs 0.9) while every probe overshoots by the calls in flight.
// Here a cut measures the limit (one decision, 0.7 s), the probe sits
// just above it (one 429 per probe, 1.1 x the limit at most, against
// CUBIC's convex climb through it), and fast growth starts only on the
// API's evidence that the limit rose (10 -> 50 in under 4 s). Netflix's
// concurrency-limits (AIMD, Gradient2) adapt concurrency to latency,
// which a rate-limited API does not raise; Google SRE's client-side
// throttling (requests vs K x accepts) rejects locally in proportion to
// refusals, which sheds calls but never finds the rate. Every one of them
// runs per process, so N workers each learn a limit the API applies to
// all of them together; here the state is one Redis hash and each
// decision is made once for the fleet, inside the booking script.
//
// # Flows
//
// The callers of one process book one at a time (the process's turn, which
// also waits out Lookahead). Callers may name a flow with WithFlow, a
// rollout for example, with a weight: while callers of several flows wait,
// the turn is shared among the flows in proportion to their weights by
// start-time fair queueing, and first come first served within a flow.
// Without it the turn went in the order callers came, so a task of a small
// rollout waited behind every handler of the process holding a task of a
// big one (20 handlers at 50 calls/s over 3 processes: about 1.2 s).
//
// # Circuit breaker
//
// With Config.Breaker enabled, broad failures (5xx, timeouts, resets: a
// FailureRatio of at least MinCalls answers within Window) open a breaker
// that every process sees at its next booking: bookings are refused with a
// *DelayError (ReasonBreaker) for the open interval, so tasks wait without
// using attempts and nobody calls the failing API. Then one booking at a
// time is granted as a probe (Permit.Probe); its answer, reported at once,
// closes the breaker or opens it again. The open interval starts at
// OpenInterval and, once the breaker has been open for GrowAfter, doubles at
// each failed probe up to MaxOpenInterval. A probe whose holder dies lapses
// after one open interval, so the breaker never sticks half-open.
package ratebudget

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultKey           = "versori-import:ratebudget"
	DefaultMaxWait       = 5 * time.Second
	DefaultLateTolerance = 10 * time.Millisecond
	DefaultMaxCoolDown   = 10 * time.Minute
	// DefaultLookahead bounds how far ahead of now one process books: a
	// slot, once booked, keeps its time, so a short queue of booked slots is
	// what lets a change of the fleet's rate take effect within a fraction
	// of a second.
	DefaultLookahead = 50 * time.Millisecond
	// DefaultLongRetryAfter is the Retry-After from which one 429 pauses the
	// whole fleet; a shorter one concerns only the task that got it.
	DefaultLongRetryAfter = 10 * time.Second
	// DefaultStateTTL is how long an adaptive budget or a breaker remembers
	// what it learned after the fleet's last call.
	DefaultStateTTL = time.Hour
)

// Defaults of AdaptiveConfig, applied by New to its zero fields.
const (
	DefaultHold           = 1600 * time.Millisecond
	DefaultReactionWindow = 250 * time.Millisecond
	DefaultEvidenceWindow = time.Second
	DefaultRamp           = 12
	DefaultCutShare       = 0.05
	DefaultCutMin         = 3
	DefaultProbeShare     = 0.05
)

// The slow probe's shape (see rateAtLua in script.go): it rises from the
// held rate to probeStep above the estimate of the API's limit over
// probeApproach, and once it has run probeConfirm at that top with no 429
// while the API accepted clearly more than the estimate, the limit has
// moved and the rate grows fast. probeConfirm outlasts the API's burst at
// that excess: an API refusing at the estimate (limit 10/s, a burst of 2)
// spends the spare call after about 0.7 s at 15% above it, so a limit that
// did not move is told from one that rose by a 429, not by a guess. The
// step shrinks to a quarter while probes keep finding the limit where it
// was; at 3.75% above it the same burst lasts 2.7 s, so such a probe may
// confirm a limit that did not move, and its fast growth meets the 429 at
// once: one refused call, as a probe costs anyway.
const (
	probeStep     = 0.15
	probeApproach = 400 * time.Millisecond
	probeConfirm  = time.Second
)

// Defaults of BreakerConfig, applied by New to its zero fields.
const (
	DefaultBreakerMinCalls     = 20
	DefaultBreakerFailureRatio = 0.5
	DefaultBreakerWindow       = 10 * time.Second
	DefaultOpenInterval        = 3 * time.Second
	DefaultMaxOpenInterval     = 5 * time.Minute
	DefaultGrowAfter           = time.Minute
)

// Limits on Config.Limit. Below MinLimit slots are further apart than any
// task should wait. The script keeps time in microseconds since the epoch,
// which a Lua double holds to 0.25 µs in this era, so each booking may be
// off by up to 0.125 µs: at most 0.125% of the interval at MaxLimit, and
// nothing that matters at the rates an HTTP API allows.
const (
	MinLimit = 0.001
	MaxLimit = 10_000
)

// DefaultBurst is the burst a budget gets when none is set: limit/40,
// rounded down, at least 1. The API sees up to Burst-1 + Limit x (1 s +
// LateTolerance) calls of the schedule in one second, and then the calls'
// own way to it (the sleeper waking late, the connection, the API's clock)
// moves some more into it. design.md allows 1.05 x Limit: at 100/s a burst
// of limit/20 (5) and the default tolerance left 0 calls of that for the
// way there, and the e2e chaos test saw 106 in one second; limit/40 (2)
// leaves 2.5 calls, 25 ms of scheduling jitter at the ceiling.
func DefaultBurst(limit float64) int { return max(1, int(limit/40)) }

// MaxBurst is the largest burst New accepts: above the limit a burst would
// put more than twice the limit into one second, which is no limit at all.
func MaxBurst(limit float64) int { return max(1, int(limit)) }

// Reasons a booked slot is dropped unused (Observer.Dropped), fit for a
// metric label.
const (
	// DropLate: the caller reached the slot past its late tolerance
	// (Observer.Missed tells by how much).
	DropLate = "late"
	// DropLowered: this process heard, while the slot was ahead, that the
	// fleet's rate fell to under half the rate the slot was booked at.
	DropLowered = "lowered"
	// DropCoolDown: this process started a cool-down that covers the slot.
	DropCoolDown = "cooldown"
	// DropBreaker: the breaker opened while the slot was ahead.
	DropBreaker = "breaker"
)

// Reasons a slot is not immediately available, carried by Reservation and
// DelayError. They are fit for a metric label.
const (
	// ReasonBudget: the fleet is using the budget; the delay is the queue.
	ReasonBudget = "budget"
	// ReasonCooldown: a shared cool-down after a 429 is in force.
	ReasonCooldown = "cooldown"
	// ReasonBreaker: the circuit breaker is open (or half-open with its
	// probe out); the delay is until it next lets a call through.
	ReasonBreaker = "breaker"
)

// BreakerState is the state of the fleet's circuit breaker, fit for a
// metric label and the status output.
type BreakerState string

// The breaker's states.
const (
	BreakerClosed   BreakerState = "closed"
	BreakerOpen     BreakerState = "open"
	BreakerHalfOpen BreakerState = "half_open"
)

func breakerState(code int64) BreakerState {
	switch code {
	case 1:
		return BreakerOpen
	case 2:
		return BreakerHalfOpen
	default:
		return BreakerClosed
	}
}

// Config configures a Budget. Every process of a fleet should use the same
// settings: each booking is spaced by the rate the script computes from the
// shared state and the ceiling of the process that makes it.
type Config struct {
	// Limit is the number of calls per second for the whole fleet: the
	// ceiling when Adaptive is enabled. Zero or less means unlimited: Wait
	// and Reserve return at once and no Redis command is ever sent (the
	// client may then be nil, and neither learning nor the breaker runs).
	// Otherwise it must lie in [MinLimit, MaxLimit].
	Limit float64

	// Burst is how many calls the fleet may make at once above the steady
	// rate, after a quiet spell. Zero means DefaultBurst(Limit), limit/40:
	// small, because the calls the API sees in any one second are up to
	// Limit + Burst - 1, plus the late callers (LateTolerance).
	// At most MaxBurst(Limit).
	Burst int

	// MaxWait is the longest a booked slot may lie ahead, counting the
	// wait for this process's turn to book (Lookahead). When the next free
	// slot is further away, nothing is booked and Wait returns a
	// *DelayError. Zero means DefaultMaxWait (5 s): a handler waiting for
	// its slot takes no other work, so a queue deeper than a few seconds of
	// budget is better left in Redis than spread across sleeping handlers.
	MaxWait time.Duration

	// LateTolerance is how late a caller may reach its slot and still use
	// it; later than that the slot is dropped (it lapses, unused) and a new
	// one is booked. Zero means DefaultLateTolerance (10 ms), whatever the
	// rate, because the harm is measured in time: callers firing up to L
	// late put at most the calls of 1 s + L of the schedule into one second,
	// Limit*L extra, so 10 ms spends at most 1% of the 5% over the limit that
	// design.md allows in any second. The default burst (DefaultBurst) spends
	// 2.5% less one call, and the calls' own way to the API (scheduling,
	// the connection) needs the rest: at 20 ms the API saw 52-53 calls in a
	// second at a limit of 50 on a loaded host (the e2e suite's fleet test),
	// at the edge of the 52.5 allowed. 10 ms is still above Go's GC pauses
	// and timer slack on a healthy host, so slots are not wasted in normal
	// running; on a host overloaded enough to wake sleepers 10 ms late, some
	// are, which is the price of keeping the window. Below the ceiling
	// (an adaptive rate) the same bound on a second's calls allows
	// Limit/rate times as much lateness, up to a quarter of the interval
	// at the rate in force (see lateTolerance).
	LateTolerance time.Duration

	// MaxCoolDown caps one cool-down, so a Retry-After of a day from a
	// misbehaving proxy cannot stop the fleet for a day. Zero means
	// DefaultMaxCoolDown (10 min).
	MaxCoolDown time.Duration

	// LongRetryAfter is the Retry-After from which a single 429 pauses the
	// whole fleet (CoolDown, through Report). Zero means
	// DefaultLongRetryAfter (10 s).
	LongRetryAfter time.Duration

	// Lookahead is how far ahead of now one process books slots: its
	// callers book one at a time, and the next books only when this
	// process's furthest slot is less than Lookahead away (or it holds
	// none). The rest wait in the process, where waiting costs no Redis
	// command, counting against MaxWait. Zero means DefaultLookahead
	// (50 ms). At the rates an HTTP API allows the fleet then holds a few
	// booked slots, so a new rate reaches the schedule at once; a
	// process still books up to 1/RTT slots a second.
	Lookahead time.Duration

	// Key is the Redis key holding the budget's state (one hash). Zero
	// means DefaultKey. Budgets with different keys are independent; on
	// Redis Cluster each lives in the slot of its key. See KeyForQueue.
	Key string

	// Adaptive makes the fleet learn the API's rate below Limit.
	Adaptive AdaptiveConfig

	// Breaker holds the fleet's calls while the API fails broadly.
	Breaker BreakerConfig

	// StateTTL is how long the state outlives the fleet's last call when
	// Adaptive or Breaker is enabled, so a fleet keeps what it learned
	// between rollouts. Zero means DefaultStateTTL (1 h). A fixed budget's
	// state expires a second after its schedule lies in the past.
	StateTTL time.Duration

	// Observer is told what Wait does, for metrics. Nil fields are skipped.
	Observer Observer
}

// AdaptiveConfig configures the learning of the API's rate (see the package
// doc, "Adaptive rate"). Zero fields take the defaults named.
type AdaptiveConfig struct {
	// Enabled turns learning on; off, the fleet books at Config.Limit.
	Enabled bool
	// Floor is the lowest rate the fleet backs off to. Zero means
	// Limit/100, at least 0.1 (and never above Limit).
	Floor float64
	// Hold is how long a rate found by a decision is held before the
	// fleet probes above it. DefaultHold (1.6 s): a probe of a limit that
	// did not move costs one 429 (about a second in), so at a limit of
	// 10/s a cycle of 2.6 s costs about 4% of the calls; a limit that rose
	// fivefold is found within the hold + 1.4 s and followed within about
	// 1.5 s more (row 3 of figure 7 allows 5 s; a 2-s hold measured 5.0).
	Hold time.Duration
	// ReactionWindow is added to the end of the slots booked before a
	// decision; evidence arriving sooner is ignored. DefaultReactionWindow
	// (250 ms): the answers of calls in flight.
	ReactionWindow time.Duration
	// EvidenceWindow is how long the answers are counted together before
	// the count starts afresh, once it holds at least 40 answers (and at
	// most ten windows): a share of 429s means little in fewer.
	// DefaultEvidenceWindow (1 s).
	EvidenceWindow time.Duration
	// Ramp shapes the fast growth once a probe found the limit risen: the
	// rate grows to good x (1 + Ramp x s^3) after s seconds, clocked by
	// the answers. DefaultRamp (12): x2.5 after 0.5 s, x5 after 0.7 s.
	Ramp float64
	// CutShare and CutMin: the share of 429s among the window's answers,
	// and their number, that show the fleet is above the API's limit.
	// DefaultCutShare (0.05) and DefaultCutMin (3), among at least 20 answers.
	CutShare float64
	CutMin   int
	// ProbeShare is the share of 429s that ends the fast growth (the
	// slow probe ends on its first 429). DefaultProbeShare (0.05).
	ProbeShare float64
}

// BreakerConfig configures the fleet's circuit breaker (see the package
// doc, "Circuit breaker"). Zero fields take the defaults named.
type BreakerConfig struct {
	// Enabled turns the breaker on.
	Enabled bool
	// MinCalls answers within Window, of which FailureRatio failed, open
	// the breaker. DefaultBreakerMinCalls (20), DefaultBreakerFailureRatio
	// (0.5), DefaultBreakerWindow (10 s).
	MinCalls     int
	FailureRatio float64
	Window       time.Duration
	// OpenInterval is the first open interval; MaxOpenInterval caps its
	// growth, which starts once the breaker has been open for GrowAfter.
	// DefaultOpenInterval (3 s; a 30-s outage costs about ten probes and the
	// fleet is back within one interval of the API), DefaultMaxOpenInterval
	// (5 min), DefaultGrowAfter (1 min).
	OpenInterval    time.Duration
	MaxOpenInterval time.Duration
	GrowAfter       time.Duration
}

// Observer receives what a Budget does, so that the caller can count it
// without this package depending on a metrics library. Nil fields are
// skipped. The functions run synchronously on the calling goroutine and
// must be quick.
type Observer struct {
	// Granted is called when Wait returns with a slot; waited is the time
	// spent in Wait, booking and sleeping.
	Granted func(waited time.Duration)
	// Deferred is called when Wait returns a *DelayError (nothing booked).
	Deferred func(err *DelayError)
	// Missed is called when a booked slot was reached more than
	// LateTolerance late and is booked again; late is by how much.
	Missed func(late time.Duration)
	// Dropped is called when a booked slot is reached and dropped unused,
	// by reason: DropLate, DropLowered, DropCoolDown (each booked again)
	// or DropBreaker (the task is handed back).
	Dropped func(reason string)
	// RateChanged is called when this process's report made the fleet
	// change its rate: once per decision fleet-wide. event is "cut",
	// "probe_failed" or "headers".
	RateChanged func(rate float64, event string)
	// Scripted is called after each call of the booking script (a
	// booking, or answers sent on their own), successful or not: the
	// budget's Redis cost.
	Scripted func()
	// BreakerChanged is called when this process's call moved the breaker:
	// once per transition fleet-wide. event is "opened", "half_opened",
	// "closed" or "reopened".
	BreakerChanged func(to BreakerState, event string)
}

// DelayError is returned by Wait when the next free slot is further away
// than MaxWait or the context deadline, or the breaker is open. Nothing was
// booked: the caller should come back after RetryIn, without counting it
// as a failure.
type DelayError struct {
	// RetryIn is how far away the next free slot was.
	RetryIn time.Duration
	// Reason is ReasonBudget, ReasonCooldown or ReasonBreaker.
	Reason string
}

func (e *DelayError) Error() string {
	return fmt.Sprintf("ratebudget: next free slot is %v away (%s)", e.RetryIn, e.Reason)
}

// IsDelay reports whether err is or wraps a *DelayError, and returns it.
func IsDelay(err error) (*DelayError, bool) {
	var de *DelayError
	if errors.As(err, &de) {
		return de, true
	}
	return nil, false
}

// Reservation is the result of one booking attempt.
type Reservation struct {
	// Booked reports whether a slot was booked. It is false when the next
	// free slot is further away than MaxWait or the context deadline, or
	// the breaker refused the booking.
	Booked bool
	// Delay is how far away the slot is: the booked one, or the next free
	// one that was not booked.
	Delay time.Duration
	// At is Delay after the reply arrived, on this process's monotonic
	// clock. Measuring from the reply, not the request, means a caller
	// never fires before its slot on the server's clock.
	At time.Time
	// Reason is ReasonBreaker when the breaker refused, ReasonCooldown
	// while a shared cool-down is in force, else ReasonBudget.
	Reason string
	// Probe reports that the slot is the half-open breaker's probe: its
	// answer must be reported (Report) as soon as it comes.
	Probe bool
	// Fleet is the shared state as this booking found it.
	Fleet FleetState

	// The closed breaker's window of answers as the call left it.
	windowAnswers, windowFailures int64
}

// FleetState is what one reply told of the fleet's shared state.
type FleetState struct {
	// Rate is the rate in force, in calls per second.
	Rate float64
	// Breaker is the breaker's state.
	Breaker BreakerState
}

// Permit is a slot obtained by Acquire: the caller may make its call now.
type Permit struct {
	// Waited is the time spent in Acquire, waiting and sleeping.
	Waited time.Duration
	// Probe reports that the call is the breaker's probe.
	Probe bool
}

// Outcome is what the API's answer says about the fleet's rate and the
// API's health.
type Outcome int

// The outcomes Report takes.
const (
	// Accepted: the API answered and did not refuse for rate: a 2xx, 409,
	// or an answer about one organisation or the key (400, 401, 403, 404,
	// 422).
	Accepted Outcome = iota + 1
	// RateLimited: a 429.
	RateLimited
	// Failed: a broad failure (5xx, timeout, connection reset, DNS, TLS).
	Failed
)

// Result is what Report needs of one call's answer.
type Result struct {
	Outcome Outcome
	// RetryAfter is the 429's Retry-After, if any.
	RetryAfter time.Duration
	// Headers is what the answer's rate-limit headers said; nil if none.
	Headers *Headers
}

// Headers is the API's own word on its rate limit.
type Headers struct {
	// Rate is the sustained limit in calls per second; 0 when not stated.
	Rate float64
	// Remaining is how many calls the current window allows; -1 unknown.
	Remaining int
	// Reset is how long until the window resets; 0 unknown.
	Reset time.Duration
	// Quota is the calls one window allows when the API states a limit
	// but no window (X-RateLimit-Limit alone); 0 unknown. Without a Rate,
	// the budget paces by Quota over the longest Reset (rounded up to
	// whole seconds, at least one) this process has seen: a window is at
	// least as long as any reset it states, so the rate is never below
	// the API's, and it is exact once a reset from a window's start has
	// been seen (at once for a limiter that refills continuously, whose
	// reset is within the second). A window spent early (remaining 0 with
	// a reset over a second away) still pauses the fleet until it resets.
	Quota float64
}

// pending is what this process saw since its last script call.
type pending struct {
	ok, rl, fail, probeOK, probeFail int
	retryAfter                       time.Duration
	headers                          *Headers
	// derived: headers.Rate was derived from a Quota, not stated.
	derived bool
}

func (p *pending) merge(q pending) {
	p.ok += q.ok
	p.rl += q.rl
	p.fail += q.fail
	p.probeOK += q.probeOK
	p.probeFail += q.probeFail
	p.retryAfter = max(p.retryAfter, q.retryAfter)
	if p.headers == nil {
		p.headers, p.derived = q.headers, q.derived
	}
}

// Budget is a fleet-wide rate budget. It is safe for concurrent use; one
// Budget per process is enough.
type Budget struct {
	rdb       redis.UniversalClient
	key       string
	limit     float64
	burst     int
	maxWait   time.Duration
	lateTol   time.Duration
	maxCool   time.Duration
	longRA    time.Duration
	stateTTL  time.Duration
	adaptive  AdaptiveConfig
	breaker   BreakerConfig
	obs       Observer
	lookahead time.Duration
	// turn is held by the one caller of this process that books next;
	// waiting callers get it weighted-fair by flow (see WithFlow).
	turn      *fairTurn
	intervalU float64 // µs between calls at the ceiling

	// cool records the last cool-down this process started: the other
	// callers of this process that hold slots inside it drop them. (Other
	// processes learn of it at their next booking; telling them sooner
	// would cost a Redis command per call.)
	coolMu sync.Mutex
	cool   localCoolDown

	// mu guards what this process saw and has yet to tell the fleet, and
	// the last state it heard of.
	mu        sync.Mutex
	pend      pending
	lastFlush time.Time
	fleet     FleetState
	// ahead is this process's furthest booked slot; lastDelay how far
	// ahead its last booking lay.
	ahead     time.Time
	lastDelay time.Duration
	// refusedUntil is when the breaker, as this process last heard, lets
	// a booking through again: callers wait for it in the process, and a
	// slot booked before the breaker opened is dropped when reached.
	refusedUntil time.Time
	// watch: the fleet, as this process last heard, probes above its
	// estimate of the API's limit, so a 429 is news that must not wait
	// for the next booking, unless that booking is due within rideWithin
	// anyway.
	watch bool
	// quotaWindow is the longest reset this process has seen beside a
	// Quota (see Headers.Quota).
	quotaWindow time.Duration
	// seenOK and seenFail count the answers this process has reported
	// that the API accepted (not a 429) and that failed broadly, for
	// FailureVerdict.
	seenOK, seenFail uint64

	// Replaceable in tests, to stall a caller past its slot.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// localCoolDown is a cool-down as this process saw it start.
type localCoolDown struct {
	gen   uint64    // counts CoolDown calls; a booking made under an older one may predate it
	until time.Time // end of the cool-down on this process's clock
}

func (b *Budget) coolDown() localCoolDown {
	b.coolMu.Lock()
	defer b.coolMu.Unlock()
	return b.cool
}

// KeyForQueue is the budget key of the fleet serving queue: fleets serving
// different queues (another API, another key) keep separate budgets,
// cool-downs and breakers on one Redis.
func KeyForQueue(queue string) string { return DefaultKey + ":" + queue }

// Check reports whether New would accept cfg, without a Redis client: a
// service validates its configuration at start with it.
func Check(cfg Config) error {
	_, err := build(nil, cfg, false)
	return err
}

// New returns a Budget on rdb. It checks cfg and applies defaults; it sends
// nothing to Redis. rdb may be nil when cfg.Limit <= 0.
func New(rdb redis.UniversalClient, cfg Config) (*Budget, error) {
	return build(rdb, cfg, true)
}

func build(rdb redis.UniversalClient, cfg Config, needClient bool) (*Budget, error) {
	b := &Budget{
		rdb:   rdb,
		key:   cfg.Key,
		limit: cfg.Limit,
		obs:   cfg.Observer,
		now:   time.Now,
		sleep: sleepCtx,
		fleet: FleetState{Rate: max(cfg.Limit, 0), Breaker: BreakerClosed},
	}
	if math.IsNaN(cfg.Limit) || math.IsInf(cfg.Limit, 0) {
		return nil, fmt.Errorf("ratebudget: limit must be a finite number, got %v", cfg.Limit)
	}
	if cfg.Limit <= 0 {
		b.limit = 0
		b.fleet.Rate = 0
		return b, nil
	}
	if cfg.Limit < MinLimit || cfg.Limit > MaxLimit {
		return nil, fmt.Errorf("ratebudget: limit %v calls/s outside [%v, %v] (0 means unlimited)", cfg.Limit, MinLimit, MaxLimit)
	}
	if rdb == nil && needClient {
		return nil, errors.New("ratebudget: a Redis client is required when a limit is set")
	}
	switch {
	case cfg.Burst < 0:
		return nil, fmt.Errorf("ratebudget: burst must not be negative, got %d", cfg.Burst)
	case cfg.Burst > MaxBurst(cfg.Limit):
		return nil, fmt.Errorf("ratebudget: burst %d above the limit of %v calls/s (at most %d)", cfg.Burst, cfg.Limit, MaxBurst(cfg.Limit))
	case cfg.Burst == 0:
		b.burst = DefaultBurst(cfg.Limit)
	default:
		b.burst = cfg.Burst
	}
	var err error
	durations := []struct {
		name     string
		d, def   time.Duration
		dst      *time.Duration
		positive bool
	}{
		{"max wait", cfg.MaxWait, DefaultMaxWait, &b.maxWait, false},
		{"late tolerance", cfg.LateTolerance, DefaultLateTolerance, &b.lateTol, false},
		{"max cool-down", cfg.MaxCoolDown, DefaultMaxCoolDown, &b.maxCool, false},
		{"long retry-after", cfg.LongRetryAfter, DefaultLongRetryAfter, &b.longRA, false},
		{"state TTL", cfg.StateTTL, DefaultStateTTL, &b.stateTTL, false},
		{"lookahead", cfg.Lookahead, DefaultLookahead, &b.lookahead, false},
	}
	for _, d := range durations {
		if *d.dst, err = durationOr(d.name, d.d, d.def); err != nil {
			return nil, err
		}
	}
	b.turn = newFairTurn()
	if b.adaptive, err = cfg.Adaptive.withDefaults(cfg.Limit); err != nil {
		return nil, err
	}
	if b.breaker, err = cfg.Breaker.withDefaults(); err != nil {
		return nil, err
	}
	if b.key == "" {
		b.key = DefaultKey
	}
	b.intervalU = 1e6 / cfg.Limit
	return b, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func (a AdaptiveConfig) withDefaults(limit float64) (AdaptiveConfig, error) {
	if !a.Enabled {
		return a, nil
	}
	switch {
	case math.IsNaN(a.Floor) || a.Floor < 0 || a.Floor > limit:
		return a, fmt.Errorf("ratebudget: floor %v calls/s outside [0, limit %v]", a.Floor, limit)
	case a.Floor == 0:
		a.Floor = min(limit, max(0.1, limit/100))
	case a.Floor < MinLimit:
		return a, fmt.Errorf("ratebudget: floor %v calls/s below %v", a.Floor, MinLimit)
	}
	var err error
	for _, d := range []struct {
		name   string
		dst    *time.Duration
		def    time.Duration
		maxDur time.Duration
	}{
		{"hold", &a.Hold, DefaultHold, time.Hour},
		{"reaction window", &a.ReactionWindow, DefaultReactionWindow, time.Minute},
		{"evidence window", &a.EvidenceWindow, DefaultEvidenceWindow, time.Minute},
	} {
		if *d.dst, err = durationOr(d.name, *d.dst, d.def); err != nil {
			return a, err
		}
		if *d.dst > d.maxDur {
			return a, fmt.Errorf("ratebudget: %s %v above %v", d.name, *d.dst, d.maxDur)
		}
	}
	if a.Ramp == 0 {
		a.Ramp = DefaultRamp
	}
	if math.IsNaN(a.Ramp) || a.Ramp <= 0 || a.Ramp > 100 {
		return a, fmt.Errorf("ratebudget: ramp %v outside (0, 100]", a.Ramp)
	}
	for _, s := range []struct {
		name string
		dst  *float64
		def  float64
	}{{"cut share", &a.CutShare, DefaultCutShare}, {"probe share", &a.ProbeShare, DefaultProbeShare}} {
		if *s.dst == 0 {
			*s.dst = s.def
		}
		if math.IsNaN(*s.dst) || *s.dst <= 0 || *s.dst > 1 {
			return a, fmt.Errorf("ratebudget: %s %v outside (0, 1]", s.name, *s.dst)
		}
	}
	if a.CutMin < 0 {
		return a, fmt.Errorf("ratebudget: cut min must not be negative, got %d", a.CutMin)
	}
	a.CutMin = cmpOr(a.CutMin, DefaultCutMin)
	return a, nil
}

func (c BreakerConfig) withDefaults() (BreakerConfig, error) {
	if !c.Enabled {
		return c, nil
	}
	if c.MinCalls < 0 {
		return c, fmt.Errorf("ratebudget: breaker min calls must not be negative, got %d", c.MinCalls)
	}
	c.MinCalls = cmpOr(c.MinCalls, DefaultBreakerMinCalls)
	if c.FailureRatio == 0 {
		c.FailureRatio = DefaultBreakerFailureRatio
	}
	if math.IsNaN(c.FailureRatio) || c.FailureRatio <= 0 || c.FailureRatio > 1 {
		return c, fmt.Errorf("ratebudget: breaker failure ratio %v outside (0, 1]", c.FailureRatio)
	}
	var err error
	if c.Window, err = durationOr("breaker window", c.Window, DefaultBreakerWindow); err != nil {
		return c, err
	}
	if c.OpenInterval, err = durationOr("breaker open interval", c.OpenInterval, DefaultOpenInterval); err != nil {
		return c, err
	}
	if c.MaxOpenInterval, err = durationOr("breaker max open interval", c.MaxOpenInterval, DefaultMaxOpenInterval); err != nil {
		return c, err
	}
	if c.GrowAfter, err = durationOr("breaker grow-after", c.GrowAfter, DefaultGrowAfter); err != nil {
		return c, err
	}
	if c.MaxOpenInterval < c.OpenInterval {
		return c, fmt.Errorf("ratebudget: breaker max open interval %v shorter than the open interval %v", c.MaxOpenInterval, c.OpenInterval)
	}
	return c, nil
}

func durationOr(name string, d, def time.Duration) (time.Duration, error) {
	switch {
	case d < 0:
		return 0, fmt.Errorf("ratebudget: %s must not be negative, got %v", name, d)
	case d == 0:
		return def, nil
	default:
		return d, nil
	}
}

// Limit returns the fleet-wide limit (the ceiling) in calls per second; 0
// means unlimited.
func (b *Budget) Limit() float64 { return b.limit }

// Burst returns the burst in effect (after defaults); 0 when unlimited.
func (b *Budget) Burst() int { return b.burst }

// Key returns the Redis key of the budget's state.
func (b *Budget) Key() string { return b.key }

// Floor returns the lowest rate an adaptive budget backs off to; the limit
// when the budget is not adaptive.
func (b *Budget) Floor() float64 {
	if b.adaptive.Enabled {
		return b.adaptive.Floor
	}
	return b.limit
}

// Fleet returns the fleet's state as this process last heard of it.
func (b *Budget) Fleet() FleetState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fleet
}

func (b *Budget) unlimited() bool { return b.limit == 0 }

// Wait books a slot and sleeps until it, then returns the time it spent;
// see Acquire.
func (b *Budget) Wait(ctx context.Context) (time.Duration, error) {
	p, err := b.Acquire(ctx)
	return p.Waited, err
}

// Acquire books a slot and sleeps until it: the caller may then make its
// call, and should Report the answer.
//
// It books again when it reaches its slot more than LateTolerance late,
// when this process started a cool-down after the booking and the slot lies
// inside it, or when this process heard meanwhile that the fleet's rate fell
// to under half the rate the slot was booked at (steepFall). When the next
// free slot is further away than MaxWait, or than
// ctx's deadline, or the breaker is open, it books nothing and returns a
// *DelayError at once. When ctx ends during the sleep the booked slot
// lapses unused, and Acquire returns ctx's error.
//
// The callers of one process book one at a time; while several wait for
// that turn, it goes to them weighted-fair by the flow of their ctx
// (WithFlow), so a task of a small rollout is not queued behind every
// handler of the process that holds a task of a big one.
func (b *Budget) Acquire(ctx context.Context) (Permit, error) {
	if b.unlimited() {
		if b.obs.Granted != nil {
			b.obs.Granted(0)
		}
		return Permit{}, nil
	}
	start := b.now()
	maxWait := b.maxWait
	if dl, ok := ctx.Deadline(); ok {
		maxWait = max(0, min(maxWait, dl.Sub(start)))
	}
	if err := b.waitOutBreaker(ctx, start, maxWait); err != nil {
		return Permit{Waited: b.now().Sub(start)}, err
	}
	if err := b.takeTurn(ctx, start, maxWait); err != nil {
		return Permit{Waited: b.now().Sub(start)}, err
	}
	turn := true
	defer func() {
		if turn {
			b.turn.release()
		}
	}()
	for {
		cool := b.coolDown()
		r, err := b.reserve(ctx, b.slotWait(ctx, start, maxWait))
		if err != nil {
			return Permit{Waited: b.now().Sub(start)}, err
		}
		if !r.Booked {
			return Permit{Waited: b.now().Sub(start)}, b.deferred(&DelayError{RetryIn: r.Delay, Reason: r.Reason})
		}
		b.mu.Lock()
		if r.At.After(b.ahead) {
			b.ahead = r.At
		}
		b.mu.Unlock()
		if turn {
			turn = false
			b.turn.release()
		}
		if err := b.sleep(ctx, r.At.Sub(b.now())); err != nil {
			return Permit{Waited: b.now().Sub(start)}, fmt.Errorf("ratebudget: waiting for slot: %w", err)
		}
		if left := b.breakerRefusal(); left > 0 && !r.Probe {
			// The breaker opened while this slot was ahead: the call
			// would only add to the failures.
			b.dropped(DropBreaker)
			return Permit{Waited: b.now().Sub(start)}, b.deferred(&DelayError{RetryIn: left, Reason: ReasonBreaker})
		}
		if c := b.coolDown(); c.gen != cool.gen && r.At.Before(c.until) {
			b.dropped(DropCoolDown)
			if err := b.takeTurn(ctx, start, maxWait); err != nil {
				return Permit{Waited: b.now().Sub(start)}, err
			}
			turn = true
			continue
		}
		if !r.Probe && b.Fleet().Rate < steepFall*r.Fleet.Rate {
			b.dropped(DropLowered)
			if err := b.takeTurn(ctx, start, maxWait); err != nil {
				return Permit{Waited: b.now().Sub(start)}, err
			}
			turn = true
			continue
		}
		now := b.now()
		late := now.Sub(r.At)
		if late <= b.lateTolerance(r.Fleet.Rate) {
			waited := now.Sub(start)
			if b.obs.Granted != nil {
				b.obs.Granted(waited)
			}
			return Permit{Waited: waited, Probe: r.Probe}, nil
		}
		if r.Probe {
			// A probe reached late is still one probe: use it rather than
			// wait out its lease.
			return Permit{Waited: now.Sub(start), Probe: true}, nil
		}
		if b.obs.Missed != nil {
			b.obs.Missed(late)
		}
		b.dropped(DropLate)
		if err := b.takeTurn(ctx, start, maxWait); err != nil {
			return Permit{Waited: b.now().Sub(start)}, err
		}
		turn = true
	}
}

// steepFall is how far the fleet's rate must fall, as this process heard
// while a slot was ahead, for the slot to be dropped and booked again at
// the new rate: the first cut from the ceiling (50 -> 8.6 calls/s against
// a limit of 10), a fast probe's fall back (up to 2.5 x the limit -> 0.9
// x), a limit that fell. Such a slot was booked at a rate the API refuses
// and its burst is spent, so its call would most likely be refused too. A
// slow probe's fall (1.15 -> 0.9 x the limit) keeps its slots: dropping
// those too cost more than it saved, the API's bucket refills 100 ms
// after the probe's 429 (figure 7 rows 1-2: 9.3 accepted calls/s,
// rollouts up to 1.11 x N/10; BENCHMARKS.md). Other processes' slots are
// theirs until their next booking tells them.
const steepFall = 0.5

// slotWait is how far ahead the booking a caller makes after waiting for
// its turn may lie: what is left of maxWait, but at least
// minSlotWait (within ctx's deadline). A caller that spent nearly all of
// maxWait waiting for the turn would otherwise be refused a slot a few
// hundred milliseconds away, one script call for nothing (at 10 calls/s
// and 60 handlers, about one booking in ten was such a refusal).
func (b *Budget) slotWait(ctx context.Context, start time.Time, maxWait time.Duration) time.Duration {
	now := b.now()
	w := max(maxWait-now.Sub(start), min(maxWait, minSlotWait))
	if dl, ok := ctx.Deadline(); ok {
		w = min(w, dl.Sub(now))
	}
	return max(0, w)
}

// lateTolerance is how late a caller may reach a slot booked at rate and
// still use it. LateTolerance bounds what late callers add to a second at
// the ceiling (Limit x LateTolerance calls); below the ceiling the same
// bound allows Limit/rate times the lateness, up to a quarter of the
// interval at rate, which an API's burst of even one call absorbs. At a
// learned 10/s under a ceiling of 50 that is 25 ms instead of 10 ms: on a
// loaded host, slots reached 10-25 ms late were one booking in ten, each
// booked again (a script call for nothing).
func (b *Budget) lateTolerance(rate float64) time.Duration {
	if rate <= 0 || rate >= b.limit {
		return b.lateTol
	}
	scaled := time.Duration(float64(b.lateTol) * b.limit / rate)
	quarter := time.Duration(float64(time.Second) / rate / 4)
	return max(b.lateTol, min(scaled, quarter))
}

// minSlotWait: see slotWait.
const minSlotWait = time.Second

// waitOutBreaker holds the caller in the process while the breaker, as
// this process last heard, refuses bookings: a held task costs nothing,
// where handing it back to the queue and taking the next would spin
// every handler through the queue for as long as the API is down. It
// gives up with a *DelayError (ReasonBreaker) when the breaker refuses
// for longer than start+maxWait.
func (b *Budget) waitOutBreaker(ctx context.Context, start time.Time, maxWait time.Duration) error {
	for {
		left := b.breakerRefusal()
		if left <= 0 {
			return nil
		}
		if b.now().Add(left).After(start.Add(maxWait)) {
			return b.deferred(&DelayError{RetryIn: left, Reason: ReasonBreaker})
		}
		if err := b.sleep(ctx, left); err != nil {
			return fmt.Errorf("ratebudget: waiting for the breaker: %w", err)
		}
	}
}

// takeTurn waits until this caller may book: it holds the process's turn,
// and the process's furthest slot is less than Lookahead away. It gives up
// with a *DelayError when that would take past start+maxWait. Callers
// waiting for the turn get it weighted-fair by the flow of their ctx
// (WithFlow), first come first served within a flow.
func (b *Budget) takeTurn(ctx context.Context, start time.Time, maxWait time.Duration) error {
	deadline := start.Add(maxWait)
	t := time.NewTimer(max(0, deadline.Sub(b.now())))
	defer t.Stop()
	switch err := b.turn.wait(ctx, flowOf(ctx), t.C); {
	case errors.Is(err, errTurnExpired):
		return b.deferred(&DelayError{RetryIn: maxWait, Reason: ReasonBudget})
	case err != nil:
		return fmt.Errorf("ratebudget: waiting for slot: %w", err)
	}
	b.mu.Lock()
	ahead, last := b.ahead, b.lastDelay
	b.mu.Unlock()
	now := b.now()
	if left := max(deadline.Sub(now), min(maxWait, minSlotWait)); left < last {
		// The turn came too late: the slot it would get lies beyond
		// what is left of the wait, and asking would cost a script call
		// to be told so.
		b.turn.release()
		return b.deferred(&DelayError{RetryIn: last, Reason: ReasonBudget})
	}
	if !ahead.After(now.Add(b.lookahead)) {
		return nil
	}
	wait := ahead.Sub(now) - b.lookahead
	if b.now().Add(wait).After(deadline) {
		b.turn.release()
		return b.deferred(&DelayError{RetryIn: wait, Reason: ReasonBudget})
	}
	if err := b.sleep(ctx, wait); err != nil {
		b.turn.release()
		return fmt.Errorf("ratebudget: waiting for slot: %w", err)
	}
	return nil
}

func (b *Budget) dropped(reason string) {
	if b.obs.Dropped != nil {
		b.obs.Dropped(reason)
	}
}

func (b *Budget) deferred(de *DelayError) error {
	if b.obs.Deferred != nil {
		b.obs.Deferred(de)
	}
	return de
}

// breakerRefusal is how long the breaker refuses bookings, as this
// process last heard; 0 when it does not.
func (b *Budget) breakerRefusal() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(0, b.refusedUntil.Sub(b.now()))
}

// Reserve makes one booking attempt: one script call to Redis, which also
// carries the answers reported since this process's last call. If the next
// free slot is within MaxWait, and before ctx's deadline, it is booked and
// the caller owns it: it should make its call at r.At, and never before.
// Most callers want Acquire. Reserve does not wait for this process's
// turn to book, so ctx's flow (WithFlow) does not order it.
func (b *Budget) Reserve(ctx context.Context) (Reservation, error) {
	if b.unlimited() {
		return Reservation{Booked: true, At: b.now(), Reason: ReasonBudget, Fleet: FleetState{Breaker: BreakerClosed}}, nil
	}
	maxWait := b.maxWait
	if dl, ok := ctx.Deadline(); ok {
		maxWait = max(0, min(maxWait, dl.Sub(b.now())))
	}
	return b.reserve(ctx, maxWait)
}

func (b *Budget) reserve(ctx context.Context, maxWait time.Duration) (Reservation, error) {
	return b.call(ctx, 1, maxWait)
}

// call runs the booking script in mode 1 (book) or 0 (report only), with
// the answers this process has yet to report.
func (b *Budget) call(ctx context.Context, mode int, maxWait time.Duration) (Reservation, error) {
	b.mu.Lock()
	p := b.pend
	b.pend = pending{}
	b.lastFlush = b.now()
	b.mu.Unlock()

	res, err := bookScript.Run(ctx, b.rdb, []string{b.key}, b.args(mode, maxWait, p)...).Int64Slice()
	if b.obs.Scripted != nil {
		b.obs.Scripted()
	}
	received := b.now()
	if err == nil && len(res) != 12 {
		err = fmt.Errorf("unexpected reply %v", res)
	}
	if err != nil {
		// Nothing was folded in: keep the answers for the next call.
		b.mu.Lock()
		b.pend.merge(p)
		b.mu.Unlock()
		return Reservation{}, fmt.Errorf("ratebudget: book slot in %s: %w", b.key, err)
	}
	r := Reservation{
		Booked: res[0] == 1,
		Delay:  time.Duration(res[1]) * time.Microsecond,
		Reason: [...]string{ReasonBudget, ReasonCooldown, ReasonBreaker}[min(max(res[2], 0), 2)],
		Probe:  res[5] == 1,
		Fleet:  FleetState{Rate: float64(res[3]) / 1000, Breaker: breakerState(res[4])},
	}
	r.At = received.Add(r.Delay)
	r.windowAnswers, r.windowFailures = res[10], res[11]

	b.mu.Lock()
	b.fleet = r.Fleet
	b.watch = res[9] == 1
	switch {
	case r.Booked:
		b.lastDelay = r.Delay
		b.refusedUntil = time.Time{}
	case r.Reason == ReasonBreaker:
		b.refusedUntil = r.At
	case r.Fleet.Breaker == BreakerOpen:
		// A report (mode 0) that found, or made, the breaker open.
		b.refusedUntil = received.Add(time.Duration(res[8]) * time.Microsecond)
	}
	b.mu.Unlock()

	if ev := [...]string{"", "cut", "probe_failed", "headers"}[min(max(res[6], 0), 3)]; ev != "" && b.obs.RateChanged != nil {
		b.obs.RateChanged(r.Fleet.Rate, ev)
	}
	if ev := [...]string{"", "opened", "half_opened", "closed", "reopened"}[min(max(res[7], 0), 4)]; ev != "" && b.obs.BreakerChanged != nil {
		b.obs.BreakerChanged(r.Fleet.Breaker, ev)
	}
	return r, nil
}

func boolArg(v bool) int {
	if v {
		return 1
	}
	return 0
}

func (b *Budget) args(mode int, maxWait time.Duration, p pending) []any {
	a, br := b.adaptive, b.breaker
	hRate, hRem, hReset := 0.0, -1, int64(0)
	if h := p.headers; h != nil {
		hRate, hRem, hReset = h.Rate, h.Remaining, h.Reset.Microseconds()
	}
	var ttl int64
	if a.Enabled || br.Enabled {
		ttl = b.stateTTL.Milliseconds()
	}
	return []any{
		mode, b.limit, b.burst, maxWait.Microseconds(),
		boolArg(a.Enabled), a.Floor,
		p.ok, p.rl, p.fail, p.probeOK, p.probeFail, p.retryAfter.Microseconds(),
		hRate, hRem, hReset,
		boolArg(br.Enabled), br.MinCalls, br.FailureRatio, br.Window.Microseconds(),
		br.OpenInterval.Microseconds(), br.MaxOpenInterval.Microseconds(), br.GrowAfter.Microseconds(),
		b.maxCool.Microseconds(), ttl,
		a.Hold.Microseconds(), a.ReactionWindow.Microseconds(), a.EvidenceWindow.Microseconds(), a.Ramp,
		a.CutShare, a.CutMin, a.ProbeShare, 0.5, 10,
		probeStep, probeApproach.Microseconds(), probeConfirm.Microseconds(), boolArg(p.derived),
	}
}

// flushAfter is how long a failure or a 429 may wait for this process's
// next booking before it is sent on its own: the breaker and the rate must
// hear of trouble at once, and a ramp that meets 429s must stop before it
// climbs further. Trouble is rare in steady running (a few percent of the
// answers), so this costs a few percent of a script call per API call.
const flushAfter = 100 * time.Millisecond

// flushRateLimitedAfter is the same for a 429, which can wait longer: the
// adaptive rate's probe is clocked by the answers anyway, and 429s are
// what a probe costs, so an extra script call for each would add up.
const flushRateLimitedAfter = 250 * time.Millisecond

// rideWithin: a 429 the fleet must hear of at once still waits for this
// process's next booking when that is due this soon (its furthest slot
// is about Lookahead away): a script call saved per probe, at the cost of
// a few milliseconds.
const rideWithin = 30 * time.Millisecond

// Report tells the fleet what the API answered to a call made with p. It
// usually sends nothing: the answer travels with this process's next
// booking. A probe's answer, a spent rate-limit window, and failures that
// have waited flushAfter are sent at once; a Retry-After of LongRetryAfter
// or more starts a fleet cool-down (CoolDown). It returns the fleet's
// state as this process now knows it (after what it sent, if it sent
// anything), so the caller can tell a failure of its own from one of the
// API's broad failures; and the error of whatever it sent.
func (b *Budget) Report(ctx context.Context, p Permit, r Result) (FleetState, error) {
	if b.unlimited() {
		return FleetState{Breaker: BreakerClosed}, nil
	}
	var q pending
	switch r.Outcome {
	case Accepted:
		q.ok = 1
	case RateLimited:
		q.rl = 1
		q.retryAfter = r.RetryAfter
	case Failed:
		q.fail = 1
	default:
		return b.Fleet(), fmt.Errorf("ratebudget: report: unknown outcome %d", r.Outcome)
	}
	if p.Probe {
		// The probe tests the API's health: any answer but a failure
		// closes the breaker; a 429 still counts as rate evidence.
		if r.Outcome == Failed {
			q.fail, q.probeFail = 0, 1
		} else {
			q.ok, q.probeOK = 0, 1
		}
	}
	b.mu.Lock()
	if h := r.Headers; h != nil && (h.Rate > 0 || h.Remaining >= 0 || h.Quota > 0) {
		hc := *h
		if hc.Rate <= 0 && hc.Quota > 0 {
			// The reset rounded up to whole seconds, as the headers count.
			b.quotaWindow = max(b.quotaWindow, time.Second, (hc.Reset + time.Second - 1).Truncate(time.Second))
			hc.Rate, q.derived = hc.Quota/b.quotaWindow.Seconds(), true
		}
		q.headers = &hc
	}
	b.pend.merge(q)
	switch r.Outcome {
	case Accepted:
		b.seenOK++
	case Failed:
		b.seenFail++
	}
	since := b.now().Sub(b.lastFlush)
	h := q.headers
	urgent := p.Probe || (h != nil && (h.Rate <= 0 || q.derived) && h.Remaining == 0 && h.Reset > time.Second) ||
		// A stated rate well below the fleet's: every call booked
		// meanwhile is one the API refuses.
		(h != nil && h.Rate > 0 && h.Rate < 0.9*b.fleet.Rate) ||
		(q.fail > 0 && since >= flushAfter) || (q.rl > 0 && (b.watch && b.ahead.Sub(b.now()) > b.lookahead+rideWithin || since >= flushRateLimitedAfter))
	b.mu.Unlock()
	var err error
	if urgent {
		_, err = b.call(ctx, 0, 0)
	}
	if r.Outcome == RateLimited && r.RetryAfter >= b.longRA {
		err = errors.Join(err, b.CoolDown(ctx, r.RetryAfter))
	}
	return b.Fleet(), err
}

// FailureVerdict tells a caller whose call just failed broadly (a 5xx, a
// timeout, a reset: reported as Failed) whether the failure was the API's
// rather than its own: the breaker opened, or failures dominate the
// breaker's window (at least FailureRatio of at least half of MinCalls
// answers). The first calls of an outage fail before anyone can know it
// is one; waiting for the fleet's next answers tells, so a task can wait
// for the breaker instead of using an attempt. It waits up to the time
// the fleet takes to make MinCalls calls and a half again (0.3 s at
// 100 calls/s, at most 3 s), in the process: the breaker's opening
// reaches it through the other callers' bookings, at no cost, and three
// answers accepted by the API among this process's next (failures under
// FailureRatio of them) end the wait at once with false. If the wait runs
// out with the breaker still closed, one script call (which also carries
// what this process has yet to report) reads the window. With the breaker
// disabled, or an unlimited budget, it reports false at once.
func (b *Budget) FailureVerdict(ctx context.Context) (bool, error) {
	if b.unlimited() || !b.breaker.Enabled {
		return false, nil
	}
	rate := max(b.Fleet().Rate, b.Floor(), MinLimit)
	wait := min(maxVerdictWait, max(minVerdictWait, time.Duration(1.5*float64(b.breaker.MinCalls)/rate*float64(time.Second))))
	deadline := b.now().Add(wait)
	b.mu.Lock()
	ok0, fail0 := b.seenOK, b.seenFail
	b.mu.Unlock()
	for {
		if b.breakerRefusal() > 0 || b.Fleet().Breaker != BreakerClosed {
			return true, nil
		}
		b.mu.Lock()
		ok, fail := b.seenOK-ok0, b.seenFail-fail0
		b.mu.Unlock()
		if ok >= verdictAccepted && float64(fail) < b.breaker.FailureRatio*float64(ok+fail) {
			// This process's own next answers say the API is up: no
			// need to ask the fleet (the common case, a scattered 5xx,
			// settled in a fraction of the wait and without a script call).
			return false, nil
		}
		left := deadline.Sub(b.now())
		if left <= 0 {
			break
		}
		if err := b.sleep(ctx, min(left, 50*time.Millisecond)); err != nil {
			return false, err
		}
	}
	r, err := b.call(ctx, 0, 0)
	if err != nil {
		return false, err
	}
	if r.Fleet.Breaker != BreakerClosed {
		return true, nil
	}
	n, f := r.windowAnswers, r.windowFailures
	return 2*n >= int64(b.breaker.MinCalls) && float64(f) >= b.breaker.FailureRatio*float64(n), nil
}

// Bounds of FailureVerdict's wait, and the answers accepted by the API
// (reported by this process after the failure) that end it early.
const (
	minVerdictWait  = 300 * time.Millisecond
	maxVerdictWait  = 3 * time.Second
	verdictAccepted = 3
)

// CoolDown makes the whole fleet pause for d, typically the Retry-After of
// a 429: no slot is booked before now+d (on the Redis clock), and the burst
// is spent. Callers in this process that already hold a slot inside the
// cool-down drop it when they reach it and book again; callers in other
// processes use the slots they already hold (at most Lookahead of them each). A
// shorter cool-down never shortens a longer one in force. d is capped at
// MaxCoolDown; d <= 0, or an unlimited budget, does nothing.
func (b *Budget) CoolDown(ctx context.Context, d time.Duration) error {
	if b.unlimited() || d <= 0 {
		return nil
	}
	d = min(d, b.maxCool)
	var ttl int64
	if b.adaptive.Enabled || b.breaker.Enabled {
		ttl = b.stateTTL.Milliseconds()
	}
	us, err := coolDownScript.Run(ctx, b.rdb, []string{b.key},
		b.intervalU, b.burst, d.Microseconds(), ttl).Int64()
	if err != nil {
		return fmt.Errorf("ratebudget: cool down %s for %v: %w", b.key, d, err)
	}
	until := b.now().Add(time.Duration(us) * time.Microsecond)
	b.coolMu.Lock()
	b.cool.gen++
	if until.After(b.cool.until) {
		b.cool.until = until
	}
	b.coolMu.Unlock()
	return nil
}

// CoolDownRemaining returns how long the fleet's shared cool-down has left
// on the Redis clock; 0 when none is in force (and always, when unlimited).
func (b *Budget) CoolDownRemaining(ctx context.Context) (time.Duration, error) {
	if b.unlimited() {
		return 0, nil
	}
	s, err := Inspect(ctx, b.rdb, b.key)
	return s.CoolDown, err
}

// State is the shared state of a budget as Inspect reads it.
type State struct {
	// CoolDown is the shared cool-down remaining; 0 when none.
	CoolDown time.Duration
	// Rate is the rate in force now; Ceiling the limit of the process that
	// last booked; Accepted the highest rate the API was recently seen to
	// accept. All 0 when no process has booked yet (or the state expired).
	Rate, Ceiling, Accepted float64
	// Breaker is the breaker's state; BreakerRemaining the time until an
	// open breaker next lets a probe through.
	Breaker          BreakerState
	BreakerRemaining time.Duration
	// Hold is how long the current rate is held before the fleet probes
	// above it; 0 when it is ramping (or fixed).
	Hold time.Duration
}

// Inspect reads the shared state of the budget at key, as of now on the
// Redis clock, without changing it: for status commands and gauges. It
// assumes DefaultRamp for a ramp in progress.
func Inspect(ctx context.Context, rdb redis.UniversalClient, key string) (State, error) {
	res, err := inspectScript.Run(ctx, rdb, []string{key}, DefaultRamp, probeStep, probeApproach.Microseconds()).Int64Slice()
	if err == nil && len(res) != 7 {
		err = fmt.Errorf("unexpected reply %v", res)
	}
	if err != nil {
		return State{}, fmt.Errorf("ratebudget: read %s: %w", key, err)
	}
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	return State{
		CoolDown: us(res[0]),
		Rate:     float64(res[1]) / 1000, Ceiling: float64(res[2]) / 1000, Accepted: float64(res[3]) / 1000,
		Breaker: breakerState(res[4]), BreakerRemaining: us(res[5]), Hold: us(res[6]),
	}, nil
}

// ClearCoolDown ends the cool-down of the budget at key, and closes its
// breaker when closeBreaker is set: an operator's remedy for a pause the
// API no longer warrants (a Retry-After of a day from a broken proxy). It
// returns the cool-down that was left.
func ClearCoolDown(ctx context.Context, rdb redis.UniversalClient, key string, closeBreaker bool) (time.Duration, error) {
	us, err := clearScript.Run(ctx, rdb, []string{key}, boolArg(closeBreaker)).Int64()
	if err != nil {
		return 0, fmt.Errorf("ratebudget: clear cool-down of %s: %w", key, err)
	}
	return time.Duration(us) * time.Microsecond, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
