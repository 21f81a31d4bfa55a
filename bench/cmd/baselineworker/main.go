// Command baselineworker is the benchmarks' baseline: an asynq server that
// imports one organisation per task the plain way, without the import
// worker's ledger, metrics or shared rate budget. It takes the worker's
// environment variables, so a benchmark starts either binary the same way.
//
// MODE selects what the handler does around the import call:
//
//   - bare: decode the payload, make the call, return its error. This is
//     the floor the worker's overhead is measured against.
//   - ratelimit-per-process: the rate-limiting recipe of asynq's wiki: a
//     golang.org/x/time/rate limiter in each process. Every process
//     enforces IMPORT_RATE_LIMIT on its own, so N processes call at N times
//     the limit. With RATE_LIMITER=wait (the default) a handler waits for
//     its token (Limiter.Wait). With RATE_LIMITER=allow it is the wiki's
//     code to the letter: a task the limiter refuses at once
//     (Limiter.Allow) returns a RateLimitError asking to run again in a
//     random 0-9 seconds, which IsFailure does not count as a failure. With
//     a deep queue that variant spends its time refusing tasks: it made 0.14
//     of the limit, and 4,727 of 6,000 calls in 3 minutes, in figure 1's
//     set-up, so the benchmarks use the waiting variant.
//
// Other errors are retried with asynq's default delay, as in the recipe.
// Variables: REDIS_URL, VERSORI_BASE_URL, VERSORI_API_KEY, MODE,
// IMPORT_RATE_LIMIT, IMPORT_RATE_BURST, RATE_LIMITER, WORKER_CONCURRENCY,
// WORKER_QUEUE, METRICS_ADDR. METRICS_ADDR serves /readyz and /goroutines (the number of
// goroutines, as text) and nothing else.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/internal/redisconn"
	"github.com/versori/import-worker/versori"
)

func main() {
	os.Exit(run(os.Getenv, os.Stderr))
}

func run(getenv func(string) string, stderr io.Writer) int {
	cfg, err := loadConfig(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "baselineworker: configuration: %v\n", err)
		return 2
	}
	// The same pool sizes as cmd/worker, so neither side waits on a pool
	// the other does not have.
	rdb, err := redisconn.New(cfg.RedisURL, redisconn.Options{PoolSize: 2*cfg.Concurrency + 10})
	if err != nil {
		fmt.Fprintf(stderr, "baselineworker: configuration: REDIS_URL: %v\n", err)
		return 2
	}
	defer rdb.Close()
	client, err := versori.New(versori.Config{BaseURL: cfg.BaseURL, APIKey: cfg.APIKey, MaxConnsPerHost: cfg.Concurrency})
	if err != nil {
		fmt.Fprintf(stderr, "baselineworker: configuration: %v\n", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg, rdb, client); err != nil {
		fmt.Fprintf(stderr, "baselineworker: %v\n", err)
		return 1
	}
	return 0
}

// serve runs the asynq server and the readiness listener until ctx ends.
func serve(ctx context.Context, cfg config, rdb redis.UniversalClient, client Importer) error {
	h := newHandler(cfg, client)
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:    cfg.Concurrency,
		Queues:         map[string]int{cfg.Queue: 1},
		IsFailure:      isFailure,
		RetryDelayFunc: retryDelay,
		LogLevel:       asynq.WarnLevel,
	})
	ln, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("METRICS_ADDR %s: %w", cfg.MetricsAddr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /goroutines", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, strconv.Itoa(runtime.NumGoroutine())+"\n")
	})
	if cfg.EnablePprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if err := srv.Start(h); err != nil {
		ln.Close()
		return fmt.Errorf("start asynq server: %w", err)
	}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(os.Stderr, "baselineworker: listener: %v\n", err)
		}
	}()
	<-ctx.Done()
	srv.Shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return hs.Shutdown(sctx)
}
