// Package metrics defines every Prometheus metric the import worker exports.
//
// All metrics live here so that names, types, label sets and buckets are
// reviewed in one place and the dashboard and alert rules in deploy/ can be
// checked against a single list (see Names). Nothing is registered globally:
// New takes the Registerer to use, as Alertmanager's notify package does.
//
// Naming follows Prometheus conventions: one prefix (versori_import_), base
// units (seconds), _total only on counters, histograms rather than summaries.
// No organisation, connector or rollout ID is ever a label, except the
// rollout label of RolloutOrgs, which is bounded because the series of a
// rollout are dropped as soon as it is done.
package metrics

import (
	"context"
	"log/slog"
	"runtime"
	"time"

	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace is the prefix of every metric this project defines itself.
const Namespace = "versori_import"

// Metric names, exported so that tests of the dashboard and alert rules can
// refer to the same constants the code registers.
const (
	NameImports             = Namespace + "_imports_total"
	NameCallDuration        = Namespace + "_call_duration_seconds"
	NameCallsInFlight       = Namespace + "_calls_in_flight"
	NameOrgsFinished        = Namespace + "_orgs_finished_total"
	NameAttemptsPerOrg      = Namespace + "_attempts_per_org"
	NameRetries             = Namespace + "_retries_scheduled_total"
	NameSkipped             = Namespace + "_skipped_total"
	NameRateLimit           = Namespace + "_rate_limit_calls_per_second"
	NameRateBurst           = Namespace + "_rate_limit_burst"
	NameRateGranted         = Namespace + "_rate_granted_total"
	NameRateWait            = Namespace + "_rate_wait_seconds"
	NameRateDeferred        = Namespace + "_rate_deferred_total"
	NameCoolDowns           = Namespace + "_cooldowns_total"
	NameRateBudgetScripts   = Namespace + "_rate_budget_scripts_total"
	NameCoolDownActive      = Namespace + "_cooldown_active"
	NameCoolDownRemaining   = Namespace + "_cooldown_remaining_seconds"
	NamePaused              = Namespace + "_queue_paused"
	NameFleetRate           = Namespace + "_rate_fleet_calls_per_second"
	NameRateAccepted        = Namespace + "_rate_accepted_calls_per_second"
	NameRateFloor           = Namespace + "_rate_floor_calls_per_second"
	NameRateAdaptive        = Namespace + "_rate_adaptive"
	NameRateChanges         = Namespace + "_rate_changes_total"
	NameBreakerState        = Namespace + "_breaker_state"
	NameBreakerTransitions  = Namespace + "_breaker_transitions_total"
	NameUnauthorized        = Namespace + "_unauthorized_total"
	NameHandlersBusy        = Namespace + "_handlers_busy"
	NameHandlersMax         = Namespace + "_handlers_max"
	NameTasksInFlight       = Namespace + "_tasks_in_flight"
	NameRolloutOrgs         = Namespace + "_rollout_orgs"
	NameRolloutsStarted     = Namespace + "_rollouts_started_total"
	NameRolloutsFinished    = Namespace + "_rollouts_finished_total"
	NameReleased            = Namespace + "_released_total"
	NameRescued             = Namespace + "_tasks_rescued_total"
	NameWaveEvents          = Namespace + "_wave_events_total"
	NameReleaserLeader      = Namespace + "_releaser_leader"
	NameRolloutsHalted      = Namespace + "_rollouts_halted"
	NameBuildInfo           = Namespace + "_build_info"
	NameCollectorScrapeErrs = Namespace + "_collector_errors_total"
	NameRedisFailoverHold   = Namespace + "_redis_failover_hold_seconds"
	NameRateSlotsDropped    = Namespace + "_rate_slots_dropped_total"
)

// CallDurationBuckets suit a single HTTP API call: from a fast local answer
// to the 30 s client timeout.
var CallDurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// RateWaitBuckets cover waits for a slot of the fleet budget, which the
// budget bounds by its MaxWait (a few seconds).
var RateWaitBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// AttemptBuckets count API calls spent on one organisation.
var AttemptBuckets = []float64{1, 2, 3, 4, 5, 7, 10, 15, 25}

// Metrics holds the worker's own instruments. Create it with New; the zero
// value is not usable.
type Metrics struct {
	// Imports counts Versori import calls by outcome class and HTTP status
	// class ("2xx", "4xx", "5xx", "none" when no response arrived).
	Imports *prometheus.CounterVec
	// CallDuration observes each import call's latency by outcome class.
	CallDuration *prometheus.HistogramVec
	// CallsInFlight is the number of import calls waiting for the API.
	CallsInFlight prometheus.Gauge
	// OrgsFinished counts organisations whose ledger record reached a final
	// state, by state and class; a re-delivered task never counts twice.
	OrgsFinished *prometheus.CounterVec
	// AttemptsPerOrg observes the calls spent on each finished organisation.
	AttemptsPerOrg prometheus.Histogram
	// Retries counts retries scheduled, by the class that caused them.
	Retries *prometheus.CounterVec
	// Skipped counts tasks skipped because the ledger already had a final
	// state for the organisation (re-delivery, cancellation), by reason.
	Skipped *prometheus.CounterVec

	// RateLimit is the configured fleet-wide limit in calls per second.
	RateLimit prometheus.Gauge
	// RateBurst is the configured burst of the fleet budget.
	RateBurst prometheus.Gauge
	// RateGranted counts slots granted to this process.
	RateGranted prometheus.Counter
	// RateWait observes the time handlers spent waiting for their slot.
	RateWait prometheus.Histogram
	// RateDeferred counts tasks handed back because the next slot was too far
	// away, by reason ("budget", "cooldown", "api_429").
	RateDeferred *prometheus.CounterVec
	// CoolDowns counts shared cool-downs this process started after a 429.
	CoolDowns prometheus.Counter
	// RateBudgetScripts counts the calls of the rate budget's booking
	// script this process made (bookings, and answers sent on their own):
	// the budget's Redis cost.
	RateBudgetScripts prometheus.Counter
	// CoolDownActive is 1 while the fleet's shared cool-down is in force.
	CoolDownActive prometheus.Gauge
	// CoolDownRemaining is the time left in the shared cool-down.
	CoolDownRemaining prometheus.Gauge

	// FleetRate is the rate the fleet may call at now, in calls per second:
	// the ceiling (RateLimit) for a fixed budget, the learned rate below it
	// for an adaptive one. Read from the shared state, the same on every
	// replica.
	FleetRate prometheus.Gauge
	// RateAccepted is the highest rate the API was recently seen to
	// accept, as the adaptive budget measured it.
	RateAccepted prometheus.Gauge
	// RateFloor is the lowest rate the adaptive budget backs off to.
	RateFloor prometheus.Gauge
	// RateAdaptive is 1 when the fleet learns its rate, 0 on a fixed one.
	RateAdaptive prometheus.Gauge
	// RateChanges counts the fleet's rate decisions this process's reports
	// caused, by event ("cut", "probe_failed", "headers"): once per decision
	// fleet-wide, so sum() across replicas counts decisions.
	RateChanges *prometheus.CounterVec
	// BreakerState is 1 for the breaker's current state and 0 for the
	// others, by state ("closed", "open", "half_open").
	BreakerState *prometheus.GaugeVec
	// BreakerTransitions counts breaker transitions this process's calls
	// caused, by event ("opened", "half_opened", "closed", "reopened"):
	// once per transition fleet-wide.
	BreakerTransitions *prometheus.CounterVec
	// RateSlotsDropped counts booked slots this process reached and left
	// unused, by reason: "late" (reached past the late tolerance, booked
	// again), "lowered" (the fleet's rate fell to under half the slot's
	// meanwhile, booked again), "cooldown" (inside a cool-down this
	// process started, booked again), "breaker" (the breaker opened
	// meanwhile). Each cost a script call.
	RateSlotsDropped *prometheus.CounterVec

	// Released counts organisations this process's releaser handed from
	// rollouts' backlogs to the queue.
	Released prometheus.Counter
	// Rescued counts copies the releaser enqueued of import tasks a dead
	// worker left active (orphaned), so they run before asynq's lease
	// recovery.
	Rescued prometheus.Counter
	// WaveEvents counts wave decisions, by event ("released", "baking",
	// "gate_passed", "halted"): once fleet-wide, by the releaser's lease
	// holder, so changes(sum(...)) marks wave transitions on a dashboard.
	WaveEvents *prometheus.CounterVec
	// ReleaserLeader is 1 in the process holding the releaser's lease.
	ReleaserLeader prometheus.Gauge
	// RolloutsHalted is the number of rollouts halted by a wave's gate on
	// the queue (the same figure on every replica: alert on max()).
	RolloutsHalted prometheus.Gauge

	// Paused is 1 while the import queue is paused (after a 401 or by an
	// operator).
	Paused prometheus.Gauge
	// Unauthorized counts 401 answers; each one pauses the queue.
	Unauthorized prometheus.Counter

	// HandlersBusy is the number of handlers running a task.
	HandlersBusy prometheus.Gauge
	// HandlersMax is the configured concurrency of this process.
	HandlersMax prometheus.Gauge
	// TasksInFlight is the number of tasks this process has started and not
	// yet finished (waiting for the budget or calling the API).
	TasksInFlight prometheus.Gauge

	// CollectorErrors counts failures of the collectors that read Redis at
	// scrape time, by collector.
	CollectorErrors *prometheus.CounterVec
}

// SetBreakerState sets BreakerState to 1 for state and 0 for the others.
func (m *Metrics) SetBreakerState(state string) {
	for _, s := range []string{"closed", "open", "half_open"} {
		v := 0.0
		if s == state {
			v = 1
		}
		m.BreakerState.WithLabelValues(s).Set(v)
	}
}

// BuildInfo describes the running binary for the build info metric.
type BuildInfo struct {
	Version string
	Commit  string
}

// New creates the worker's metrics and registers them, with the Go runtime
// and process collectors and the build info gauge, on reg.
func New(reg prometheus.Registerer, build BuildInfo) *Metrics {
	m := &Metrics{
		Imports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameImports,
			Help: "Versori import calls by outcome class and HTTP status class.",
		}, []string{"class", "status_class"}),
		CallDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    NameCallDuration,
			Help:    "Latency of Versori import calls, by outcome class.",
			Buckets: CallDurationBuckets,
		}, []string{"class"}),
		CallsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameCallsInFlight,
			Help: "Import calls waiting for the Versori API.",
		}),
		OrgsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameOrgsFinished,
			Help: "Organisations that reached a final state, by state and outcome class; counted once per organisation.",
		}, []string{"state", "class"}),
		AttemptsPerOrg: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    NameAttemptsPerOrg,
			Help:    "API calls spent on each organisation that reached a final state.",
			Buckets: AttemptBuckets,
		}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameRetries,
			Help: "Retries scheduled, by the outcome class that caused them.",
		}, []string{"class"}),
		Skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameSkipped,
			Help: "Tasks skipped without an API call, by reason.",
		}, []string{"reason"}),
		RateLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameRateLimit,
			Help: "Configured fleet-wide import rate limit in calls per second (0 means unlimited).",
		}),
		RateBurst: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameRateBurst,
			Help: "Configured burst of the fleet-wide rate budget.",
		}),
		RateGranted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameRateGranted,
			Help: "Slots of the fleet rate budget granted to this process.",
		}),
		RateWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    NameRateWait,
			Help:    "Time handlers waited for their slot of the fleet rate budget.",
			Buckets: RateWaitBuckets,
		}),
		RateDeferred: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameRateDeferred,
			Help: "Tasks handed back to the queue as rate_limited, by reason.",
		}, []string{"reason"}),
		CoolDowns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameCoolDowns,
			Help: "Shared cool-downs started by this process after a 429 from the API.",
		}),
		RateBudgetScripts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameRateBudgetScripts,
			Help: "Calls of the rate budget's booking script (one Redis round trip each) made by this process.",
		}),
		CoolDownActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameCoolDownActive,
			Help: "1 while the fleet's shared cool-down after a 429 is in force.",
		}),
		CoolDownRemaining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameCoolDownRemaining,
			Help: "Seconds left in the fleet's shared cool-down.",
		}),
		FleetRate: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameFleetRate,
			Help: "Rate the fleet may call the API at now, in calls per second: the ceiling, or the learned rate below it.",
		}),
		RateAccepted: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameRateAccepted,
			Help: "Highest rate the API was recently seen to accept, in calls per second (adaptive budget).",
		}),
		RateFloor: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameRateFloor,
			Help: "Lowest rate the adaptive budget backs off to, in calls per second.",
		}),
		RateAdaptive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameRateAdaptive,
			Help: "1 when the fleet learns the API's rate below the ceiling, 0 on a fixed schedule.",
		}),
		RateChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameRateChanges,
			Help: "Decisions of the fleet's adaptive rate caused by this process's reports, by event.",
		}, []string{"event"}),
		BreakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NameBreakerState,
			Help: "1 for the fleet's circuit breaker's current state, 0 for the others.",
		}, []string{"state"}),
		BreakerTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameBreakerTransitions,
			Help: "Transitions of the fleet's circuit breaker caused by this process's calls, by event.",
		}, []string{"event"}),
		RateSlotsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameRateSlotsDropped,
			Help: "Booked slots of the rate budget reached and left unused, by reason (late, lowered, cooldown, breaker).",
		}, []string{"reason"}),
		Released: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameReleased,
			Help: "Organisations this process's releaser handed from rollouts' backlogs to the queue.",
		}),
		Rescued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameRescued,
			Help: "Copies enqueued of import tasks a dead worker left active, run before asynq's lease recovery.",
		}),
		WaveEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameWaveEvents,
			Help: "Wave decisions of the fleet's releaser, by event (released, baking, gate_passed, halted).",
		}, []string{"event"}),
		ReleaserLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameReleaserLeader,
			Help: "1 in the process holding the releaser's lease.",
		}),
		RolloutsHalted: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameRolloutsHalted,
			Help: "Rollouts of the queue halted by a wave's gate, waiting for promote or cancel.",
		}),
		Paused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NamePaused,
			Help: "1 while the import queue is paused (after a 401 or by an operator).",
		}),
		Unauthorized: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameUnauthorized,
			Help: "401 answers from the API; each pauses the import queue.",
		}),
		HandlersBusy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameHandlersBusy,
			Help: "Handlers running a task in this process.",
		}),
		HandlersMax: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameHandlersMax,
			Help: "Configured handler concurrency of this process.",
		}),
		TasksInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameTasksInFlight,
			Help: "Tasks started and not finished in this process (waiting for the budget or calling the API).",
		}),
		CollectorErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameCollectorScrapeErrs,
			Help: "Errors of collectors that read Redis at scrape time, by collector.",
		}, []string{"collector"}),
	}
	// Series that exist from the start make rate() and absent-value alerts
	// behave before the first event of their kind.
	for _, reason := range []string{"budget", "cooldown", "api_429", "breaker"} {
		m.RateDeferred.WithLabelValues(reason)
	}
	for _, ev := range []string{"cut", "probe_failed", "headers"} {
		m.RateChanges.WithLabelValues(ev)
	}
	for _, ev := range []string{"opened", "half_opened", "closed", "reopened"} {
		m.BreakerTransitions.WithLabelValues(ev)
	}
	for _, reason := range []string{"late", "lowered", "cooldown", "breaker"} {
		m.RateSlotsDropped.WithLabelValues(reason)
	}
	m.SetBreakerState("closed")
	for _, ev := range []string{"released", "baking", "gate_passed", "halted"} {
		m.WaveEvents.WithLabelValues(ev)
	}
	for _, reason := range []string{"poison", "succeeded", "failed", "cancelled"} {
		m.Skipped.WithLabelValues(reason)
	}
	for _, class := range []string{"server_error", "timeout", "network"} {
		m.Retries.WithLabelValues(class)
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        NameBuildInfo,
		Help:        "Always 1; labels carry the version and commit of the running binary.",
		ConstLabels: prometheus.Labels{"version": build.Version, "commit": build.Commit, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	reg.MustRegister(
		m.Imports, m.CallDuration, m.CallsInFlight, m.OrgsFinished, m.AttemptsPerOrg, m.Retries, m.Skipped,
		m.RateLimit, m.RateBurst, m.RateGranted, m.RateWait, m.RateDeferred,
		m.CoolDowns, m.RateBudgetScripts, m.CoolDownActive, m.CoolDownRemaining,
		m.FleetRate, m.RateAccepted, m.RateFloor, m.RateAdaptive, m.RateChanges, m.BreakerState, m.BreakerTransitions, m.RateSlotsDropped,
		m.Released, m.Rescued, m.WaveEvents, m.ReleaserLeader, m.RolloutsHalted,
		m.Paused, m.Unauthorized,
		m.HandlersBusy, m.HandlersMax, m.TasksInFlight,
		m.CollectorErrors,
		buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// RolloutState is one active rollout's organisation counts, as the rollout
// collector reports them.
type RolloutState struct {
	ID string
	// Pending counts organisations not yet attempted; Retrying those with
	// at least one failed attempt and a retry to come. The states are
	// disjoint, so a stacked graph of them adds up to the rollout's total.
	Pending   int64
	Retrying  int64
	Succeeded int64
	Failed    int64
	Cancelled int64
}

// RolloutSource reads rollout figures from the ledger at scrape time.
type RolloutSource interface {
	// RolloutFigures returns the active (not done) rollouts and the number
	// of rollouts started and finished so far.
	RolloutFigures(ctx context.Context) (active []RolloutState, started, finished int64, err error)
}

// RolloutCollector exports organisations by state for each active rollout,
// and rollouts started and finished. It reads shared state in Redis, so every
// replica reports the same figures: dashboards aggregate them with max(),
// never sum().
type RolloutCollector struct {
	src     RolloutSource
	timeout time.Duration
	log     *slog.Logger
	errs    prometheus.Counter

	orgs, started, finished *prometheus.Desc
}

// NewRolloutCollector returns a collector reading src, with a per-scrape
// timeout. Register it on the same registry as m.
func NewRolloutCollector(src RolloutSource, m *Metrics, timeout time.Duration, log *slog.Logger) *RolloutCollector {
	return &RolloutCollector{
		src:      src,
		timeout:  timeout,
		log:      log,
		errs:     m.CollectorErrors.WithLabelValues("rollouts"),
		orgs:     prometheus.NewDesc(NameRolloutOrgs, "Organisations of each active rollout by state; a rollout's series disappear when it is done.", []string{"rollout", "state"}, nil),
		started:  prometheus.NewDesc(NameRolloutsStarted, "Rollouts recorded in the ledger.", nil, nil),
		finished: prometheus.NewDesc(NameRolloutsFinished, "Rollouts recorded in the ledger with nothing left pending.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *RolloutCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.orgs
	ch <- c.started
	ch <- c.finished
}

// Collect implements prometheus.Collector.
func (c *RolloutCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	active, started, finished, err := c.src.RolloutFigures(ctx)
	if err != nil {
		c.errs.Inc()
		c.log.Warn("rollout metrics unavailable", "err", err)
		return
	}
	for _, r := range active {
		for state, v := range map[string]int64{
			"pending": r.Pending, "retrying": r.Retrying, "succeeded": r.Succeeded,
			"failed": r.Failed, "cancelled": r.Cancelled,
		} {
			ch <- prometheus.MustNewConstMetric(c.orgs, prometheus.GaugeValue, float64(v), r.ID, state)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.started, prometheus.CounterValue, float64(started))
	ch <- prometheus.MustNewConstMetric(c.finished, prometheus.CounterValue, float64(finished))
}

// QueueCollector returns asynq's queue collector (asynq_queue_size,
// asynq_queue_latency_seconds, asynq_tasks_processed_total, ...), which reads
// the queues through inspector at scrape time. Like RolloutCollector it reports
// shared state, so every replica exports the same values: aggregate with
// max by (queue), never sum.
func QueueCollector(inspector *asynq.Inspector) prometheus.Collector {
	return asynqmetrics.NewQueueMetricsCollector(inspector)
}

// NewRedisFailoverHolds registers in reg, and returns, the histogram of how
// long this process's Redis client held its commands while the sentinels
// promoted a replica (internal/redisconn's fence; its _count is the
// failovers the process lived through). It stands apart from New because
// the client, and so its fence, exists before the worker's other metrics.
func NewRedisFailoverHolds(reg prometheus.Registerer) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    NameRedisFailoverHold,
		Help:    "How long the Redis client held its commands during a Sentinel failover, until the new master took them.",
		Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 5, 10},
	})
	reg.MustRegister(h)
	return h
}
