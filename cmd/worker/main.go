// Command worker is the import worker service: it runs asynq handlers that
// import a public Versori connector version into one organisation per task,
// under a rate limit shared by every worker on the same Redis.
//
// It is configured by environment variables (see README.md); bad
// configuration stops it at start with one line per problem, naming the
// variable. With --demo it runs on an in-memory Redis and a fake API, for a
// trial that keeps nothing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/versori/import-worker/internal/buildinfo"
	"github.com/versori/import-worker/internal/redisconn"
	"github.com/versori/import-worker/internal/worker"
	"github.com/versori/import-worker/metrics"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
)

// Exit statuses.
const (
	exitOK      = 0
	exitRuntime = 1
	exitConfig  = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	demoMode := fs.Bool("demo", false, "run on an in-memory Redis and a fake Versori API (keeps nothing; for a trial only)")
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: worker [--demo] [--version]\n\nThe import worker, configured by environment variables:\n")
		fmt.Fprintf(stderr, "  REDIS_URL, VERSORI_BASE_URL, VERSORI_API_KEY | VERSORI_API_KEY_FILE, VERSORI_AUTH_SCHEME,\n")
		fmt.Fprintf(stderr, "  VERSORI_TIMEOUT, IMPORT_RATE_LIMIT, IMPORT_RATE_BURST, IMPORT_RATE_MAX_WAIT, WORKER_CONCURRENCY,\n")
		fmt.Fprintf(stderr, "  WORKER_QUEUE, WORKER_SHUTDOWN_TIMEOUT, RETRY_BACKOFF_BASE, RETRY_BACKOFF_CAP, LEDGER_WAIT_REPLICAS,\n")
		fmt.Fprintf(stderr, "  LEDGER_WAIT_TIMEOUT, METRICS_ADDR,\n")
		fmt.Fprintf(stderr, "  LOG_LEVEL, ENABLE_PPROF, CALLBACK_SECRET | CALLBACK_SECRET_FILE, CALLBACK_ALLOWED_HOSTS,\n  ROLLOUT_RETENTION.\n  See README.md for meanings and defaults.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "worker: unexpected argument %q\n", fs.Arg(0))
		return exitConfig
	}
	if *version {
		fmt.Fprintf(stdout, "worker %s (commit %s)\n", buildinfo.Version, buildinfo.Commit)
		return exitOK
	}

	cfg, err := loadConfig(getenv, *demoMode)
	if err != nil {
		var ce configError
		if errors.As(err, &ce) {
			for _, line := range ce {
				fmt.Fprintf(stderr, "worker: configuration: %s\n", line)
			}
		} else {
			fmt.Fprintf(stderr, "worker: configuration: %v\n", err)
		}
		return exitConfig
	}
	level := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}[cfg.LogLevel]
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	// SIGHUP (a closed terminal, a supervisor's reload) stops the worker
	// as gracefully as SIGTERM: its default action would kill it at once,
	// cutting off the calls in flight, which then run twice.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()

	if *demoMode {
		stopDemo, err := startDemo(&cfg, log)
		if err != nil {
			log.Error("demo environment did not start", "err", err)
			return exitRuntime
		}
		defer stopDemo()
	}

	reg := prometheus.NewRegistry()
	holds := metrics.NewRedisFailoverHolds(reg)
	rdb, err := redisconn.New(cfg.RedisURL, redisconn.Options{
		PoolSize: 2*cfg.Concurrency + 10, Logger: log.With("component", "redis"),
		OnHold: func(held time.Duration) { holds.Observe(held.Seconds()) },
	})
	if err != nil {
		fmt.Fprintf(stderr, "worker: configuration: REDIS_URL: %v\n", err)
		return exitConfig
	}
	defer rdb.Close()
	client := cfg.client
	if client == nil { // demo mode: the fake API's address is known now
		if client, err = versori.New(cfg.versoriConfig()); err != nil {
			fmt.Fprintf(stderr, "worker: configuration: %v\n", err)
			return exitConfig
		}
	}

	// Completion callbacks: the worker that records a rollout's last
	// outcome enqueues its callback, and any worker delivers it.
	// The same Manager applies the retention in the finish hook; its
	// janitor publishes the retention for the CLI and the API and prunes
	// the index of rollouts.
	rm := rollout.New(rdb, rollout.Options{Queue: cfg.Queue, Retention: cfg.Retention, RateKey: cfg.Rate.Key})
	callbacks := rm.NewCallbackHandler(rollout.CallbackConfig{
		Secret: cfg.CallbackSecret, Allowed: cfg.CallbackHosts, Logger: log.With("component", "callback"),
	})
	log.Info("finished rollouts expire after the retention", "retention", rollout.FormatRetention(cfg.Retention))
	// The janitor stops with the worker, whether it stops on a signal or
	// on an error (Redis unreachable at start).
	janitorCtx, stopJanitor := context.WithCancel(ctx)
	janitorDone := make(chan struct{})
	go func() {
		defer close(janitorDone)
		rm.RunJanitor(janitorCtx, log.With("component", "retention"))
	}()
	defer func() { stopJanitor(); <-janitorDone }()

	err = worker.Run(ctx, worker.Config{
		OnFinish:           rm,
		Rollouts:           rm,
		Gate:               cfg.Gate,
		Handlers:           map[string]asynq.Handler{rollout.TypeCallback: callbacks},
		Redis:              rdb,
		Client:             client,
		Logger:             log,
		Queue:              cfg.Queue,
		Concurrency:        cfg.Concurrency,
		RateLimit:          cfg.RateLimit,
		RateBurst:          cfg.RateBurst,
		RateMaxWait:        cfg.RateMaxWait,
		RateAdaptive:       cfg.Rate.Adaptive,
		RateFloor:          cfg.Rate.Floor,
		RateKey:            cfg.Rate.Key,
		Breaker:            cfg.Rate.Breaker,
		Backoff:            tasks.Backoff{Base: cfg.BackoffBase, Cap: cfg.BackoffCap},
		LedgerWaitReplicas: cfg.WaitReplicas,
		LedgerWaitTimeout:  cfg.WaitTimeout,
		CallTimeout:        cfg.CallTimeout,
		ShutdownTimeout:    cfg.ShutdownTimeout,
		MetricsAddr:        cfg.MetricsAddr,
		EnablePprof:        cfg.EnablePprof,
		Registry:           reg,
		Build:              metrics.BuildInfo{Version: buildinfo.Version, Commit: buildinfo.Commit},
	})
	if err != nil {
		log.Error("worker failed", "redis", redisconn.Redact(cfg.RedisURL), "err", redisconn.Explain(cfg.RedisURL, err))
		return exitRuntime
	}
	return exitOK
}
