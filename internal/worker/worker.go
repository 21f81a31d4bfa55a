// Package worker assembles the import worker service: the asynq server
// running the import handler, the fleet rate budget, the ledger, and the
// HTTP listener serving /metrics, /healthz and /readyz.
//
// cmd/worker turns environment variables into a Config and calls Run; the
// demo mode and the end-to-end tests run the same code in-process.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/metrics"
	"github.com/versori/import-worker/ratebudget"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/tasks"
)

// Config is everything the service needs. Redis, Client and Logger are
// required; every other field has the default its comment names.
type Config struct {
	// Redis is shared by asynq, the ledger and the rate budget.
	Redis redis.UniversalClient
	// Client makes the import calls (a *versori.Client).
	Client tasks.Importer
	// Logger receives structured logs.
	Logger *slog.Logger

	// Queue is the asynq queue served. Default tasks.DefaultQueue.
	Queue string
	// Concurrency is the number of handlers in this process. Default 20.
	Concurrency int
	// RateLimit is the fleet-wide calls per second; 0 means unlimited.
	RateLimit float64
	// RateBurst is the fleet-wide burst. Default ratebudget.DefaultBurst(RateLimit).
	RateBurst int
	// RateAdaptive makes the fleet learn the API's rate below RateLimit,
	// which is then the ceiling (see ratebudget, "Adaptive rate").
	RateAdaptive bool
	// RateFloor is the lowest rate an adaptive fleet backs off to. Default
	// RateLimit/100, at least 0.1.
	RateFloor float64
	// Breaker configures the fleet's circuit breaker; Breaker.Enabled
	// turns it on. Zero fields take ratebudget's defaults.
	Breaker ratebudget.BreakerConfig
	// RateKey is the Redis key of the fleet's budget. Default
	// ratebudget.KeyForQueue(Queue): fleets serving different queues keep
	// separate budgets.
	RateKey string
	// RateMaxWait is the longest a handler holds a booked slot before the
	// task is handed back as rate_limited. Default 5 s.
	RateMaxWait time.Duration
	// Backoff spaces retries after 5xx, timeouts and network errors.
	Backoff tasks.Backoff
	// LedgerWaitReplicas is how many Redis replicas must acknowledge each
	// recorded outcome (ledger.Options.WaitReplicas); 0 waits for none.
	LedgerWaitReplicas int
	// LedgerWaitTimeout bounds that wait. Default ledger.DefaultWaitTimeout.
	LedgerWaitTimeout time.Duration
	// CallTimeout is the client's per-call timeout, used to check
	// ShutdownTimeout. Default 30 s.
	CallTimeout time.Duration
	// ShutdownTimeout is how long a stopping worker lets running handlers
	// finish. It must exceed RateMaxWait + CallTimeout, or a call can be cut
	// off and, after asynq re-queues the task, made twice. Default
	// RateMaxWait + CallTimeout + 5 s.
	ShutdownTimeout time.Duration
	// MetricsAddr is the listen address of /metrics, /healthz and /readyz;
	// empty disables the listener.
	MetricsAddr string
	// EnablePprof serves net/http/pprof on MetricsAddr. Off by default: the
	// listener exposes nothing else unless asked.
	EnablePprof bool
	// Registry receives the metrics. Default a new registry.
	Registry *prometheus.Registry
	// Build labels the build info metric.
	Build metrics.BuildInfo
	// OnFinish, if set, hears of each rollout whose last outcome this
	// worker recorded (retention, completion callbacks).
	OnFinish tasks.FinishHook
	// Handlers serve task types other than the import task on the same
	// queue (the completion callback); any other type is archived.
	Handlers map[string]asynq.Handler
	// Rollouts is the Manager the fleet's releaser runs on (the one whose
	// finish hook is OnFinish, if any). Default one on Redis for Queue.
	Rollouts *rollout.Manager
	// Gate measures the PromQL gates of rollouts' waves; nil makes every
	// gate query inconclusive (the rollout halts).
	Gate rollout.GateMeasurer
	// ReleaseWindow is how much work, in seconds of the fleet's rate, the
	// releaser keeps queued ahead of the handlers. Default
	// rollout.DefaultReleaseWindow.
	ReleaseWindow time.Duration
	// Ready, if set, is closed once the service accepts tasks and its
	// listener is up (tests and the demo wait on it).
	Ready chan<- net.Addr
}

func (c *Config) setDefaults() error {
	if c.Redis == nil {
		return errors.New("worker: Config.Redis is required")
	}
	if c.Client == nil {
		return errors.New("worker: Config.Client is required")
	}
	if c.Logger == nil {
		return errors.New("worker: Config.Logger is required")
	}
	if c.Queue == "" {
		c.Queue = tasks.DefaultQueue
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 20
	}
	if c.RateKey == "" {
		c.RateKey = ratebudget.KeyForQueue(c.Queue)
	}
	if c.RateMaxWait <= 0 {
		c.RateMaxWait = 5 * time.Second
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 30 * time.Second
	}
	min, def := ShutdownBounds(c.RateMaxWait, c.CallTimeout)
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = def
	}
	if c.ShutdownTimeout <= min {
		return fmt.Errorf("worker: shutdown timeout %s must exceed the rate budget's max wait plus the call timeout (%s), or a stopping worker abandons calls that then run twice", c.ShutdownTimeout, min)
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	return nil
}

// ShutdownBounds returns the shortest shutdown timeout that is safe (it
// must be exceeded) and the default one, for a budget max wait and a call
// timeout. A stopping worker must outwait its longest handler, the wait for
// a slot plus the call, or asynq re-queues a call still in flight and it
// runs twice.
func ShutdownBounds(rateMaxWait, callTimeout time.Duration) (min, def time.Duration) {
	min = rateMaxWait + callTimeout
	return min, min + 5*time.Second
}

// Run serves import tasks until ctx is cancelled, then shuts down
// gracefully: it stops taking tasks, lets running handlers finish within
// ShutdownTimeout, and returns. It returns an error at once if Redis cannot
// be reached at start.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	log := cfg.Logger
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := cfg.Redis.Ping(pingCtx).Err()
	cancel()
	if err != nil {
		return fmt.Errorf("redis unreachable: %w", err)
	}

	m := metrics.New(cfg.Registry, cfg.Build)
	m.HandlersMax.Set(float64(cfg.Concurrency))
	m.RateLimit.Set(cfg.RateLimit)

	led := ledger.New(cfg.Redis, ledger.Options{WaitReplicas: cfg.LedgerWaitReplicas, WaitTimeout: cfg.LedgerWaitTimeout})
	if cfg.LedgerWaitReplicas > 0 {
		warnFewReplicas(ctx, cfg.Redis, cfg.LedgerWaitReplicas, log)
	}
	inspector := asynq.NewInspectorFromRedisClient(cfg.Redis)
	cfg.Registry.MustRegister(
		metrics.NewRolloutCollector(ledgerFigures{led}, m, 3*time.Second, log),
		metrics.QueueCollector(inspector),
	)

	var budget tasks.RateBudget
	var rb *ratebudget.Budget
	if cfg.RateLimit > 0 {
		rb, err = ratebudget.New(cfg.Redis, ratebudget.Config{
			Limit: cfg.RateLimit, Burst: cfg.RateBurst, MaxWait: cfg.RateMaxWait, Key: cfg.RateKey,
			Adaptive: ratebudget.AdaptiveConfig{Enabled: cfg.RateAdaptive, Floor: cfg.RateFloor},
			Breaker:  cfg.Breaker,
			Observer: budgetObserver(log, m),
		})
		if err != nil {
			return fmt.Errorf("rate budget: %w", err)
		}
		m.RateBurst.Set(float64(rb.Burst()))
		m.FleetRate.Set(cfg.RateLimit)
		m.RateFloor.Set(rb.Floor())
		if cfg.RateAdaptive {
			m.RateAdaptive.Set(1)
		}
		budget = rb
	}

	h, err := tasks.NewHandler(tasks.HandlerConfig{
		Client: cfg.Client, Budget: budget, Ledger: ledger.NewBatcher(led, ledger.BatcherOptions{}), Metrics: m, Logger: log,
		Pauser: inspector, Queue: cfg.Queue, OnFinish: cfg.OnFinish,
	})
	if err != nil {
		return err
	}
	mux := asynq.NewServeMux()
	mux.Handle(tasks.TypeImport, h)
	for typ, hh := range cfg.Handlers {
		mux.Handle(typ, hh)
	}

	srv := asynq.NewServerFromRedisClient(cfg.Redis, asynq.Config{
		Concurrency:     cfg.Concurrency,
		Queues:          map[string]int{cfg.Queue: 1},
		IsFailure:       tasks.IsFailure,
		RetryDelayFunc:  cfg.Backoff.RetryDelayFunc(),
		ShutdownTimeout: cfg.ShutdownTimeout,
		// Rate-limited and retried tasks come back after about a second;
		// asynq's default of 5 s between checks of the retry set would idle
		// the budget. Every 100 ms a task whose Retry-After has passed
		// waits 50 ms more on average (125 ms at 250 ms: the 2% of 429s of
		// figure 7 row 4 end a 20-s rollout on such a wait), for one cheap
		// script call per check and process.
		DelayedTaskCheckInterval: 100 * time.Millisecond,
		// An idle worker looks for new work this often: the first calls of
		// a rollout enqueued into an idle fleet wait half of it on average.
		TaskCheckInterval: 100 * time.Millisecond,
		Logger:            asynqLogger{log.With("component", "asynq")},
		LogLevel:          asynq.WarnLevel,
		HealthCheckFunc: func(err error) {
			if err != nil {
				log.Warn("redis health check failed; asynq keeps retrying", "err", err)
			}
		},
	})

	var stopping atomic.Bool
	var ln net.Listener
	var httpSrv *http.Server
	if cfg.MetricsAddr != "" {
		ln, err = net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("METRICS_ADDR %s: %w", cfg.MetricsAddr, err)
		}
		httpSrv = &http.Server{
			Handler:           newMux(cfg, &stopping),
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			MaxHeaderBytes:    8 << 10,
		}
		go func() {
			if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics listener stopped", "err", err)
			}
		}()
	}

	if err := srv.Start(onlyImports(mux, cfg.Handlers, log, m)); err != nil {
		if httpSrv != nil {
			httpSrv.Close()
		}
		return fmt.Errorf("start asynq server: %w", err)
	}
	log.Info("worker started",
		"queue", cfg.Queue, "concurrency", cfg.Concurrency, "rate_limit", cfg.RateLimit,
		"rate_burst", burstOf(rb), "rate_adaptive", cfg.RateAdaptive, "breaker", cfg.Breaker.Enabled, "rate_key", cfg.RateKey, "shutdown_timeout", cfg.ShutdownTimeout.String(), "metrics_addr", addrOf(ln))
	if cfg.Ready != nil {
		if ln != nil {
			cfg.Ready <- ln.Addr()
		}
		close(cfg.Ready)
	}

	refreshDone := make(chan struct{})
	refreshCtx, stopRefresh := context.WithCancel(context.Background())
	rm := cfg.Rollouts
	if rm == nil {
		rm = rollout.New(cfg.Redis, rollout.Options{Queue: cfg.Queue, RateKey: cfg.RateKey})
	}
	go func() {
		defer close(refreshDone)
		refreshGauges(refreshCtx, cfg.Redis, cfg.Queue, inspector, rb, m, rm)
	}()
	// The releaser stops with the server's intake, before the handlers
	// finish, and gives its lease up so another replica takes over at once.
	releaseCtx, stopRelease := context.WithCancel(context.Background())
	releaseDone := make(chan struct{})
	releaser := rm.NewReleaser(rollout.ReleaserConfig{
		Queue: cfg.Queue, Window: cfg.ReleaseWindow, Gate: cfg.Gate, Logger: log, Observer: releaseObserver{m},
		Rate: func() (float64, bool) {
			if rb == nil {
				return 0, false
			}
			return rb.Fleet().Rate, true
		},
	})
	go func() {
		defer close(releaseDone)
		releaser.Run(releaseCtx)
	}()

	<-ctx.Done()
	stopping.Store(true)
	log.Info("shutting down: waiting for running imports", "timeout", cfg.ShutdownTimeout.String())
	stopRelease()
	<-releaseDone
	srv.Shutdown()
	stopRefresh()
	<-refreshDone
	if httpSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = httpSrv.Shutdown(sctx)
		cancel()
	}
	log.Info("worker stopped")
	return nil
}

func newMux(cfg Config, stopping *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{
		Registry:            cfg.Registry,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if stopping.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if err := cfg.Redis.Ping(ctx).Err(); err != nil {
			http.Error(w, "redis unreachable", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	if cfg.EnablePprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	}
	return refuseBodies(mux)
}

// refuseBodies answers 413 to any request that carries a body: the listener
// serves only GETs, and a body nobody reads would otherwise be accepted.
func refuseBodies(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
			w.Header().Set("Connection", "close")
			http.Error(w, "request bodies are not accepted", http.StatusRequestEntityTooLarge)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// refreshGauges keeps the gauges that mirror shared state (the cool-down and
// the queue's pause flag) current, so a pause by an operator or another
// replica shows on every replica.
func refreshGauges(ctx context.Context, rdb redis.UniversalClient, queue string, inspector *asynq.Inspector, rb *ratebudget.Budget, m *metrics.Metrics, rm *rollout.Manager) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		if n, err := rm.HaltedCount(ctx, queue); err == nil {
			m.RolloutsHalted.Set(float64(n))
		}
		if rb != nil {
			if st, err := ratebudget.Inspect(ctx, rdb, rb.Key()); err == nil {
				d := st.CoolDown
				m.CoolDownRemaining.Set(d.Seconds())
				if d > 0 {
					m.CoolDownActive.Set(1)
				} else {
					m.CoolDownActive.Set(0)
				}
				if st.Ceiling > 0 {
					// Before the first booking the state is empty: keep
					// the configured figures.
					m.FleetRate.Set(st.Rate)
					m.RateAccepted.Set(st.Accepted)
					m.SetBreakerState(string(st.Breaker))
				}
			}
		}
		if qi, err := inspector.GetQueueInfo(queue); err == nil {
			if qi.Paused {
				m.Paused.Set(1)
			} else {
				m.Paused.Set(0)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// onlyImports archives tasks of any type but the import task with a reason,
// where asynq's ServeMux would retry them as "handler not found" failures.
func onlyImports(mux *asynq.ServeMux, extra map[string]asynq.Handler, log *slog.Logger, m *metrics.Metrics) asynq.HandlerFunc {
	return func(ctx context.Context, t *asynq.Task) error {
		if _, ok := extra[t.Type()]; ok || t.Type() == tasks.TypeImport {
			return mux.ProcessTask(ctx, t)
		}
		id, _ := asynq.GetTaskID(ctx)
		m.Skipped.WithLabelValues("poison").Inc()
		log.Error("archiving task of unknown type", "task_id", id, "type", t.Type())
		return fmt.Errorf("%w: unknown task type %q", asynq.SkipRetry, t.Type())
	}
}

// budgetObserver logs each fleet decision once (the process whose report
// caused it logs it) and counts it, so a fleet adapting its rate or
// tripping its breaker writes one line per change, never one per call.
func budgetObserver(log *slog.Logger, m *metrics.Metrics) ratebudget.Observer {
	return ratebudget.Observer{
		Scripted: m.RateBudgetScripts.Inc,
		Dropped:  func(reason string) { m.RateSlotsDropped.WithLabelValues(reason).Inc() },
		RateChanged: func(rate float64, event string) {
			m.RateChanges.WithLabelValues(event).Inc()
			m.FleetRate.Set(rate)
			log.Info("fleet rate changed", "event", event, "rate", rate)
		},
		BreakerChanged: func(to ratebudget.BreakerState, event string) {
			m.BreakerTransitions.WithLabelValues(event).Inc()
			m.SetBreakerState(string(to))
			if to == ratebudget.BreakerOpen {
				log.Warn("circuit breaker "+event+": the API fails broadly, holding every worker's calls", "state", to)
				return
			}
			log.Info("circuit breaker "+event, "state", to)
		},
	}
}

func burstOf(rb *ratebudget.Budget) int {
	if rb == nil {
		return 0
	}
	return rb.Burst()
}

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// ledgerFigures adapts the ledger to metrics.RolloutSource.
type ledgerFigures struct{ l *ledger.Ledger }

// recentRollouts bounds the rollouts read per scrape.
const recentRollouts = 200

func (f ledgerFigures) RolloutFigures(ctx context.Context) ([]metrics.RolloutState, int64, int64, error) {
	rs, err := f.l.Rollouts(ctx, recentRollouts)
	if err != nil {
		return nil, 0, 0, err
	}
	started, err := f.l.RolloutCount(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	// Expired and deleted rollouts leave the index; counting them keeps
	// the started and finished counters from going down.
	removed, err := f.l.RemovedCount(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	started += removed
	// Rollouts older than the most recent ones read here are counted as
	// finished: a rollout still running after 200 newer ones started is
	// not worth reading every rollout at every scrape.
	var active []metrics.RolloutState
	for _, r := range rs {
		c := r.Counts
		if rollout.BreakdownOf(c).Done() {
			continue
		}
		// The one definition of pending and retrying (rollout.Breakdown):
		// the metric's state "pending" is Waiting, never attempted.
		b := rollout.BreakdownOf(c)
		active = append(active, metrics.RolloutState{
			ID: r.ID, Pending: b.Waiting, Retrying: b.Retrying,
			Succeeded: b.Succeeded, Failed: b.Failed, Cancelled: b.Cancelled,
		})
	}
	return active, started, started - int64(len(active)), nil
}

// asynqLogger routes asynq's logs into slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...)) }

// releaseObserver counts the releaser's events in the metrics.
type releaseObserver struct{ m *metrics.Metrics }

func (o releaseObserver) Released(n int)         { o.m.Released.Add(float64(n)) }
func (o releaseObserver) Rescued(n int)          { o.m.Rescued.Add(float64(n)) }
func (o releaseObserver) WaveEvent(event string) { o.m.WaveEvents.WithLabelValues(event).Inc() }
func (o releaseObserver) Leader(held bool) {
	if held {
		o.m.ReleaserLeader.Set(1)
	} else {
		o.m.ReleaserLeader.Set(0)
	}
}

// warnFewReplicas logs, once at start, when Redis has fewer replicas than
// every outcome waits for: each would then wait LedgerWaitTimeout and be
// written again until its record timeout.
func warnFewReplicas(ctx context.Context, rdb redis.UniversalClient, want int, log *slog.Logger) {
	info, err := rdb.Info(ctx, "replication").Result()
	if err != nil {
		return
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "connected_slaves:"); ok {
			if n, err := strconv.Atoi(v); err == nil && n < want {
				log.Warn("fewer Redis replicas than LEDGER_WAIT_REPLICAS: every outcome will wait for acknowledgements that cannot come", "connected_replicas", n, "ledger_wait_replicas", want)
			}
			return
		}
	}
}
