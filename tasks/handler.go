package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/metrics"
	"github.com/versori/import-worker/ratebudget"
	"github.com/versori/import-worker/tasks/internal/taskctx"
	"github.com/versori/import-worker/versori"
)

// Importer makes the one call the handler exists for; *versori.Client
// implements it.
type Importer interface {
	ImportPublicConnectorVersion(ctx context.Context, orgID versori.OrgID, connectorID versori.ConnectorID, version string) (*versori.Connector, error)
}

// RateBudget hands out slots of the rate budget the whole fleet shares,
// and hears what the API answered; *ratebudget.Budget implements it.
// Acquire returns a *ratebudget.DelayError when the next slot is too far
// away to hold a handler for it, or the fleet's breaker is open. The
// context Acquire gets names the task's rollout as its flow, with the
// rollout's weight (ratebudget.WithFlow, read back with
// ratebudget.FlowFrom).
type RateBudget interface {
	Acquire(ctx context.Context) (ratebudget.Permit, error)
	Report(ctx context.Context, p ratebudget.Permit, r ratebudget.Result) (ratebudget.FleetState, error)
}

// QueuePauser pauses a queue for every worker sharing the Redis;
// *asynq.Inspector implements it.
type QueuePauser interface {
	PauseQueue(queue string) error
}

// FinishHook hears that an outcome recorded for the first time left none
// of its rollout's organisations pending: the rollout may be done.
// *rollout.Manager implements it to start the rollout's retention and
// enqueue its completion callback. It is not called for the outcomes
// before the last, which spares every organisation a round trip to ask.
// An error is logged.
type FinishHook interface {
	OrganisationFinished(ctx context.Context, rolloutID string) error
}

// OutcomeLedger is what the handler needs of the ledger: read an
// organisation's record, register a rollout and organisation a foreign
// producer enqueued straight into the queue, and record attempts and
// outcomes. *ledger.Ledger implements it, and *ledger.Batcher, which the
// worker uses, shares round trips between handlers; a test can give the handler an
// in-memory fake instead and check its outcome table without Redis.
//
// The handler treats ledger.ErrOrgNotFound and ledger.ErrRolloutNotFound
// from Org as "not registered yet", ledger.ErrRolloutMismatch from
// CreateRollout as "registered already", and ledger.ErrInvalidID,
// ErrOrgNotFound and ErrRolloutNotFound from Finish and Attempt as final;
// any other error is taken for Redis being away, and retried.
type OutcomeLedger interface {
	// Org returns the organisation's record in the rollout.
	Org(ctx context.Context, rolloutID string, orgID versori.OrgID) (ledger.Record, error)
	// CreateRollout registers r, reporting whether it was new.
	CreateRollout(ctx context.Context, r ledger.Rollout) (created bool, err error)
	// AddOrgs registers organisations as pending, reporting how many were new.
	AddOrgs(ctx context.Context, rolloutID string, orgIDs []versori.OrgID) (added int, err error)
	// Finish records how an organisation finished, reporting whether the
	// record changed (false for a record that had finished already) and
	// how many of the rollout's organisations are left pending.
	Finish(ctx context.Context, rolloutID string, orgID versori.OrgID, o ledger.Outcome) (ledger.Finished, error)
	// Attempt records a call that left the organisation pending.
	Attempt(ctx context.Context, rolloutID string, orgID versori.OrgID, a ledger.Attempt) error
}

var (
	_ OutcomeLedger = (*ledger.Ledger)(nil)
	_ OutcomeLedger = (*ledger.Batcher)(nil)
)

// HandlerConfig wires the import handler. Client, Ledger, Metrics and Logger
// are required.
type HandlerConfig struct {
	// Client calls the Versori API.
	Client Importer
	// Budget is the fleet's rate budget. Nil means unlimited.
	Budget RateBudget
	// Ledger records every organisation's outcome.
	Ledger OutcomeLedger
	// Metrics receives the handler's figures.
	Metrics *metrics.Metrics
	// Logger receives one structured line per event.
	Logger *slog.Logger
	// Pauser pauses Queue after a 401. Nil disables pausing (the task still
	// waits without using an attempt).
	Pauser QueuePauser
	// Queue is the queue Pauser pauses. Default DefaultQueue.
	Queue string
	// RateLimitedDelay is the wait after a 429 without a usable Retry-After.
	// Default 1 s.
	RateLimitedDelay time.Duration
	// UnauthorizedDelay is how long a task refused with 401 waits before it
	// is tried again; by then the queue is paused, so it runs only after an
	// operator resumes it. Default 30 s.
	UnauthorizedDelay time.Duration
	// LongRetryAfter is the Retry-After from which the budget pauses the
	// whole fleet (counted as a cool-down). Default
	// ratebudget.DefaultLongRetryAfter.
	LongRetryAfter time.Duration
	// RedisWait bounds how long the handler waits for Redis before its
	// API call (see DefaultRedisWait). Default DefaultRedisWait.
	RedisWait time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// OnFinish, if set, is called after an outcome recorded left nothing
	// of its rollout pending.
	OnFinish FinishHook
}

// recordTimeout bounds the ledger writes after an API call, retries
// included. It outlasts a Redis restart or failover, and stays below the
// task's two-minute deadline.
const recordTimeout = 30 * time.Second

// retryWrite runs a ledger write after an API call until it succeeds or ctx
// ends, backing off from 50 ms to 2 s. Giving up at the first error would
// make the call again (its retry meets a 409) and, with Redis briefly gone,
// leave the task to asynq's lease recovery (about 100 s) because asynq
// cannot write the retry either; waiting for Redis avoids both.
func retryWrite(ctx context.Context, deadline time.Time, log *taskLog, write func() error) error {
	return untilRedis(ctx, deadline, log, "ledger write", write, permanentLedgerError)
}

// DefaultRedisWait bounds how long a handler waits for Redis before its API
// call (the ledger read, the rate budget). Nothing was called yet, so
// holding the task across a short outage is safe, and it spares the task
// asynq's lease recovery (about 100 s), since asynq cannot write a retry
// while Redis is away either. A longer outage hands the task back.
const DefaultRedisWait = 30 * time.Second

// untilRedis runs op until it succeeds, fails for a reason permanent says
// waiting cannot cure, or ctx ends or the next try would start after
// deadline (zero: none), backing off from 50 ms to 2 s. A deadline rather
// than a context with one spares every task two timers (about 2% of the
// worker's CPU in figure 2); each Redis command is bounded by the client's
// own timeouts.
func untilRedis(ctx context.Context, deadline time.Time, log *taskLog, what string, op func() error, permanent func(error) bool) error {
	delay := 50 * time.Millisecond
	for i := 0; ; i++ {
		err := op()
		if err == nil || permanent(err) || ctx.Err() != nil {
			return err
		}
		if !deadline.IsZero() && time.Now().Add(delay).After(deadline) {
			return err
		}
		if i == 0 {
			log.warn(what+" failed; retrying until Redis answers", "err", err)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// permanentLedgerError reports whether a ledger write failed for a reason
// that waiting for Redis cannot cure: a bad ID, class or outcome, or a
// record that is not there.
func permanentLedgerError(err error) bool {
	for _, e := range []error{ledger.ErrInvalidID, ledger.ErrInvalidClass, ledger.ErrInvalidOutcome, ledger.ErrOrgNotFound, ledger.ErrRolloutNotFound} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Handler imports one organisation per task. It is an asynq.Handler.
type Handler struct {
	cfg HandlerConfig
	log *slog.Logger
	m   *metrics.Metrics
}

// NewHandler returns the import handler, or an error naming the missing
// dependency.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("tasks: HandlerConfig.Client is required")
	case cfg.Ledger == nil || isNilLedger(cfg.Ledger):
		return nil, errors.New("tasks: HandlerConfig.Ledger is required")
	case cfg.Metrics == nil:
		return nil, errors.New("tasks: HandlerConfig.Metrics is required")
	case cfg.Logger == nil:
		return nil, errors.New("tasks: HandlerConfig.Logger is required")
	}
	if cfg.Queue == "" {
		cfg.Queue = DefaultQueue
	}
	if cfg.RateLimitedDelay <= 0 {
		cfg.RateLimitedDelay = time.Second
	}
	if cfg.UnauthorizedDelay <= 0 {
		cfg.UnauthorizedDelay = 30 * time.Second
	}
	if cfg.LongRetryAfter <= 0 {
		cfg.LongRetryAfter = ratebudget.DefaultLongRetryAfter
	}
	if cfg.RedisWait <= 0 {
		cfg.RedisWait = DefaultRedisWait
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Handler{cfg: cfg, log: cfg.Logger, m: cfg.Metrics}, nil
}

// isNilLedger reports a nil *ledger.Ledger held in the interface, which
// the comparison with nil misses.
func isNilLedger(l OutcomeLedger) bool {
	led, ok := l.(*ledger.Ledger)
	return ok && led == nil
}

// ProcessTask implements asynq.Handler.
//
// It returns nil when the organisation is done (imported, already present,
// or already recorded by an earlier delivery); a *RetryLaterError when it
// must wait without using an attempt; a plain error to retry with backoff;
// and an error wrapping asynq.SkipRetry to archive a task that can never
// succeed (a permanent API answer, exhausted attempts, or a poison payload).
func (h *Handler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	h.m.HandlersBusy.Inc()
	defer h.m.HandlersBusy.Dec()

	taskID := taskIDOf(ctx)
	p, err := DecodePayload(t.Payload())
	if err != nil {
		h.m.Skipped.WithLabelValues("poison").Inc()
		h.log.Error("archiving task with a bad payload", "task_id", taskID, "type", t.Type(), "err", err)
		return fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	log := &taskLog{l: h.log, attrs: []any{"rollout", p.RolloutID, "org", p.OrgID, "task_id", taskID}}

	redisWait := time.Now().Add(h.cfg.RedisWait)
	var rec ledger.Record
	err = untilRedis(ctx, redisWait, log, "ledger read", func() (err error) {
		rec, err = h.record(ctx, p)
		return err
	}, permanentLedgerError)
	if err != nil {
		log.warn("ledger unavailable", "err", err)
		return fmt.Errorf("import org %s: %w", p.OrgID, err)
	}
	switch rec.State {
	case ledger.Succeeded, ledger.Cancelled, ledger.Failed:
		// A re-delivered task, or one an operator cancelled or that already
		// failed for good: the ledger has its answer, calling again would
		// only spend the budget.
		h.m.Skipped.WithLabelValues(string(rec.State)).Inc()
		log.info("skipping organisation already recorded", "state", rec.State)
		return nil
	}

	h.m.TasksInFlight.Inc()
	defer h.m.TasksInFlight.Dec()
	var permit ratebudget.Permit
	err = untilRedis(ctx, redisWait, log, "rate budget", func() (err error) {
		permit, err = h.waitForSlot(ctx, p)
		return err
	}, func(err error) bool {
		// A slot too far away is an answer, not Redis trouble.
		_, delayed := ratebudget.IsDelay(err)
		return delayed
	})
	if err != nil {
		var delay *ratebudget.DelayError
		if errors.As(err, &delay) {
			h.m.RateDeferred.WithLabelValues(delay.Reason).Inc()
			if delay.Reason == ratebudget.ReasonBreaker {
				// The API fails for everyone: wait for the breaker
				// without using an attempt.
				log.debug("breaker open, holding the task", "retry_in", delay.RetryIn)
				return &RetryLaterError{Class: versori.ClassServerError, Delay: delay.RetryIn, Err: err}
			}
			log.debug("rate budget spent, handing the task back", "retry_in", delay.RetryIn, "reason", delay.Reason)
			return &RetryLaterError{Class: versori.ClassRateLimited, Delay: delay.RetryIn, Err: err}
		}
		return fmt.Errorf("import org %s: rate budget: %w", p.OrgID, err)
	}

	start := h.cfg.Now()
	h.m.CallsInFlight.Inc()
	conn, err := h.cfg.Client.ImportPublicConnectorVersion(ctx, p.OrgID, p.ConnectorID, p.Version)
	h.m.CallsInFlight.Dec()
	took := h.cfg.Now().Sub(start)
	// The call happened: its outcome must be recorded even if the task's
	// deadline has just passed, or the task would run again for nothing.
	ctx = context.WithoutCancel(ctx)
	by := time.Now().Add(recordTimeout)
	class := versori.Classify(err)
	status := 0
	var apiErr *versori.Error
	if errors.As(err, &apiErr) {
		status = apiErr.StatusCode
	} else if err == nil {
		status = 200
	}
	fleet := h.report(ctx, log, permit, class, conn, err)
	var held time.Duration // waiting for the fleet's verdict on a failure
	h.m.Imports.WithLabelValues(string(class), versori.StatusClass(status)).Inc()
	h.m.CallDuration.WithLabelValues(string(class)).Observe(took.Seconds())
	log.with("class", class, "http_status", status, "duration_ms", took.Milliseconds())

	switch {
	case class == versori.ClassImported || class == versori.ClassAlreadyPresent:
		out := ledger.Outcome{State: ledger.Succeeded, Class: string(class), HTTPStatus: status, Duration: took, CountAttempt: true}
		if conn != nil {
			out.Version = importedVersion(conn, p.Version)
			if !strings.EqualFold(conn.ID, string(p.ConnectorID)) {
				// Kept only when it says something: a million records
				// repeating the rollout's connector is 33 MB of Redis.
				out.ConnectorID = conn.ID
			}
		}
		if err := h.finish(ctx, by, log, p, out, rec.Attempts); err != nil {
			return err
		}
		log.info("organisation imported", "imported_version", out.Version)
		return nil

	case class == versori.ClassRateLimited:
		// The Retry-After is this task's own wait; the budget pauses the
		// whole fleet only when the evidence says the shared limit is
		// spent (429s cluster, or a long Retry-After: see report).
		delay, ok := versori.RetryAfter(err)
		if ok && delay >= h.cfg.LongRetryAfter && h.cfg.Budget != nil {
			h.m.CoolDowns.Inc()
		}
		if !ok || delay <= 0 {
			delay = h.cfg.RateLimitedDelay
		}
		h.attempt(ctx, by, log, p, class, status, took, err)
		h.m.RateDeferred.WithLabelValues("api_429").Inc()
		log.warn("rate limited by the API", "retry_in", delay)
		return &RetryLaterError{Class: class, Delay: delay, Err: err}

	case class == versori.ClassUnauthorized:
		h.m.Unauthorized.Inc()
		if h.cfg.Pauser != nil {
			if perr := h.cfg.Pauser.PauseQueue(h.cfg.Queue); perr != nil {
				log.error("could not pause the queue after a 401", "queue", h.cfg.Queue, "err", perr)
			} else {
				h.m.Paused.Set(1)
			}
		}
		h.attempt(ctx, by, log, p, class, status, took, err)
		log.error("API key refused: queue paused until an operator resumes it", "queue", h.cfg.Queue, "err", err)
		return &RetryLaterError{Class: class, Delay: h.cfg.UnauthorizedDelay, Err: err}

	case class.Retryable() && (permit.Probe || fleet.Breaker != ratebudget.BreakerClosed || h.broadFailure(ctx, log, &held)):
		// The API fails for everyone (the breaker is open or opened
		// with this failure, failures dominate the fleet's answers, or
		// this was the breaker's probe): this failure says nothing about
		// the organisation, so it uses no attempt; the budget holds the
		// task until the breaker lets calls through again.
		h.attempt(ctx, by, log, p, class, status, took, err)
		h.m.RateDeferred.WithLabelValues(ratebudget.ReasonBreaker).Inc()
		log.warn("import failed while the API fails broadly; holding the task without using an attempt", "breaker", fleet.Breaker, "err", err)
		return &RetryLaterError{Class: class, Delay: time.Second, Err: err}

	case class.Retryable():
		retried, maxRetry := retryCounts(ctx)
		if retried >= maxRetry {
			out := ledger.Outcome{
				State: ledger.Failed, Class: string(versori.ClassExhausted), HTTPStatus: status,
				Error: fmt.Sprintf("%d attempts failed, last %s: %v", retried+1, class, err), Duration: took, CountAttempt: true,
			}
			if ferr := h.finish(ctx, by, log, p, out, rec.Attempts); ferr != nil {
				return ferr
			}
			log.error("organisation failed: attempts exhausted", "attempts", retried+1, "err", err)
			return fmt.Errorf("%w: import org %s: attempts exhausted: %v", asynq.SkipRetry, p.OrgID, err)
		}
		h.attempt(ctx, by, log, p, class, status, took, err)
		h.m.Retries.WithLabelValues(string(class)).Inc()
		log.warn("import failed, will retry", "attempt", retried+1, "max_retry", maxRetry, "err", err)
		return &heldError{err: fmt.Errorf("import org %s: %w", p.OrgID, err), held: held}

	default:
		out := ledger.Outcome{State: ledger.Failed, Class: string(class), HTTPStatus: status, Error: errorMessage(err), Duration: took, CountAttempt: true}
		if ferr := h.finish(ctx, by, log, p, out, rec.Attempts); ferr != nil {
			return ferr
		}
		log.warn("organisation failed permanently", "err", err)
		return fmt.Errorf("%w: import org %s: %s: %v", asynq.SkipRetry, p.OrgID, class, err)
	}
}

// FailureJudge is what a RateBudget may also offer: the fleet's verdict
// on a broad failure (5xx, timeout, reset) this process has just
// reported. *ratebudget.Budget implements it (FailureVerdict).
type FailureJudge interface {
	FailureVerdict(ctx context.Context) (bool, error)
}

// broadFailure asks the budget, when it can tell, whether the failure just
// reported was the API failing for everyone. The calls that trip the
// breaker fail before it opens: without the verdict each used an attempt
// (15-21 per 30-s outage in figure 7, row 6). It holds the handler for a
// fraction of a second (see ratebudget.Budget.FailureVerdict), which the
// retry's backoff then counts as waited (held); a Redis error counts as no
// verdict, and the attempt is used.
func (h *Handler) broadFailure(ctx context.Context, log *taskLog, held *time.Duration) bool {
	judge, ok := h.cfg.Budget.(FailureJudge)
	if !ok {
		return false
	}
	start := time.Now()
	broad, err := judge.FailureVerdict(ctx)
	*held = time.Since(start)
	if err != nil {
		log.warn("could not ask the rate budget whether the API fails broadly", "err", err)
	}
	return broad
}

// record returns the organisation's ledger record, registering the rollout
// and organisation first when another producer enqueued the task straight
// into the queue without the producer API.
func (h *Handler) record(ctx context.Context, p Payload) (ledger.Record, error) {
	rec, err := h.cfg.Ledger.Org(ctx, p.RolloutID, p.OrgID)
	if err == nil || !(errors.Is(err, ledger.ErrOrgNotFound) || errors.Is(err, ledger.ErrRolloutNotFound)) {
		return rec, err
	}
	if _, err := h.cfg.Ledger.CreateRollout(ctx, ledger.Rollout{ID: p.RolloutID, ConnectorID: p.ConnectorID, Version: p.Version, CreatedAt: h.cfg.Now()}); err != nil && !errors.Is(err, ledger.ErrRolloutMismatch) {
		return rec, err
	}
	if _, err := h.cfg.Ledger.AddOrgs(ctx, p.RolloutID, []versori.OrgID{p.OrgID}); err != nil {
		return rec, err
	}
	return h.cfg.Ledger.Org(ctx, p.RolloutID, p.OrgID)
}

// waitForSlot books the call's slot as part of the rollout's flow, so the
// process's turns to book are shared among the rollouts its handlers hold
// tasks of by their weights, not taken in the order the tasks came.
func (h *Handler) waitForSlot(ctx context.Context, task Payload) (ratebudget.Permit, error) {
	if h.cfg.Budget == nil {
		return ratebudget.Permit{}, nil
	}
	p, err := h.cfg.Budget.Acquire(ratebudget.WithFlow(ctx, task.RolloutID, task.Weight))
	if err != nil {
		return p, err
	}
	h.m.RateGranted.Inc()
	h.m.RateWait.Observe(p.Waited.Seconds())
	return p, nil
}

// report tells the budget what the API answered, so the fleet learns its
// rate and its breaker sees broad failures. A 401 or a refusal about one
// organisation says the API is up and did not refuse for rate.
func (h *Handler) report(ctx context.Context, log *taskLog, p ratebudget.Permit, class versori.Class, conn *versori.Connector, callErr error) ratebudget.FleetState {
	if h.cfg.Budget == nil {
		return ratebudget.FleetState{Breaker: ratebudget.BreakerClosed}
	}
	r := ratebudget.Result{Outcome: ratebudget.Accepted}
	switch {
	case class == versori.ClassRateLimited:
		r.Outcome = ratebudget.RateLimited
		r.RetryAfter, _ = versori.RetryAfter(callErr)
	case class.Retryable():
		r.Outcome = ratebudget.Failed
	}
	if rl := versori.RateLimitOf(conn, callErr); rl.Known() {
		r.Headers = &ratebudget.Headers{Rate: rl.Rate, Remaining: rl.Remaining, Reset: rl.Reset, Quota: rl.Quota}
	}
	fleet, err := h.cfg.Budget.Report(ctx, p, r)
	if err != nil {
		log.warn("could not report the answer to the rate budget", "err", err)
	}
	return fleet
}

// finish records the organisation's outcome. prior is the number of
// attempts the record held when this run read it: the record now holds one
// more. Counting rather than reading the record back saves a Redis round
// trip per organisation (6% of the worker's CPU in the benchmarks' figure
// 2); it can be off by one only when two deliveries of the task ran at once.
func (h *Handler) finish(ctx context.Context, by time.Time, log *taskLog, p Payload, out ledger.Outcome, prior int) error {
	var f ledger.Finished
	changed := false
	err := retryWrite(ctx, by, log, func() (err error) {
		f, err = h.cfg.Ledger.Finish(ctx, p.RolloutID, p.OrgID, out)
		// A write the replicas did not acknowledge (ledger.ErrNotReplicated)
		// is written again, and the second finds it finished: the first
		// said whether it changed.
		changed = changed || f.Changed
		return err
	})
	if err != nil {
		log.error("could not record the outcome", "err", err)
		return fmt.Errorf("import org %s: record outcome: %w", p.OrgID, err)
	}
	if changed {
		h.m.OrgsFinished.WithLabelValues(string(out.State), out.Class).Inc()
		h.m.AttemptsPerOrg.Observe(float64(prior + 1))
		if h.cfg.OnFinish != nil && f.Pending <= 0 {
			if err := retryWrite(ctx, by, log, func() error { return h.cfg.OnFinish.OrganisationFinished(ctx, p.RolloutID) }); err != nil {
				log.warn("could not check the rollout for completion", "err", err)
			}
		}
	}
	return nil
}

// attempt records a call that did not settle the organisation. A ledger
// failure here is logged, not returned: the task is retried anyway, and the
// record is completed by the attempt that settles it.
func (h *Handler) attempt(ctx context.Context, by time.Time, log *taskLog, p Payload, class versori.Class, status int, took time.Duration, cause error) {
	err := retryWrite(ctx, by, log, func() error {
		return h.cfg.Ledger.Attempt(ctx, p.RolloutID, p.OrgID, ledger.Attempt{
			Class: string(class), HTTPStatus: status, Error: errorMessage(cause), Duration: took,
		})
	})
	if err != nil {
		log.warn("could not record the attempt", "err", err)
	}
}

// errorMessage is what the ledger keeps of an error: the API's own code and
// message when it sent one, else the error text (which never holds the key).
func errorMessage(err error) string {
	var apiErr *versori.Error
	if errors.As(err, &apiErr) && apiErr.Message != "" {
		if apiErr.Code != "" {
			return apiErr.Code + ": " + apiErr.Message
		}
		return apiErr.Message
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

// importedVersion is the name of the version the API says it imported. The
// answer lists the connector's versions; the one we asked for is the match,
// and for "latest" or "default" the one flagged so.
func importedVersion(c *versori.Connector, requested string) string {
	if len(c.Versions) == 1 {
		return c.Versions[0].Name
	}
	for _, v := range c.Versions {
		if v.Name == requested {
			return v.Name
		}
	}
	for _, v := range c.Versions {
		if (requested == "latest" && v.IsLatest) || (requested == "default" && v.IsDefault) {
			return v.Name
		}
	}
	return requested
}

// retryCounts returns how many attempts of the task failed so far and how
// many may. Counts set by tasks/taskstest come first, then asynq's; outside
// an asynq server (a handler called directly) it assumes a first attempt
// with the default budget of attempts.
func retryCounts(ctx context.Context) (retried, maxRetry int) {
	if retried, maxRetry, ok := taskctx.Retry(ctx); ok {
		return retried, maxRetry
	}
	retried, ok1 := asynq.GetRetryCount(ctx)
	maxRetry, ok2 := asynq.GetMaxRetry(ctx)
	if !ok1 || !ok2 {
		return 0, TaskOptions{}.withDefaults().MaxRetry
	}
	return retried, maxRetry
}

// taskIDOf is the task's ID as tasks/taskstest or asynq set it, or "".
func taskIDOf(ctx context.Context) string {
	if id, ok := taskctx.TaskID(ctx); ok {
		return id
	}
	id, _ := asynq.GetTaskID(ctx)
	return id
}

// taskLog writes one task's log lines, each with the task's rollout,
// organisation and task ID. It keeps those attributes as they are and hands
// them over at each call: slog.Logger.With would format them up front for
// every task, though most tasks log a single line (profiled at about 3% of
// the worker's CPU).
type taskLog struct {
	l     *slog.Logger
	attrs []any
}

func (t *taskLog) with(args ...any) { t.attrs = append(t.attrs, args...) }

func (t *taskLog) log(level slog.Level, msg string, args ...any) {
	ctx := context.Background()
	if !t.l.Enabled(ctx, level) {
		return
	}
	all := make([]any, 0, len(t.attrs)+len(args))
	t.l.Log(ctx, level, msg, append(append(all, t.attrs...), args...)...)
}

func (t *taskLog) debug(msg string, args ...any) { t.log(slog.LevelDebug, msg, args...) }
func (t *taskLog) info(msg string, args ...any)  { t.log(slog.LevelInfo, msg, args...) }
func (t *taskLog) warn(msg string, args ...any)  { t.log(slog.LevelWarn, msg, args...) }
func (t *taskLog) error(msg string, args ...any) { t.log(slog.LevelError, msg, args...) }
