// Command api is the HTTP/JSON API of rollouts, for systems that are not
// written in Go: create a rollout (the organisations as JSON, NDJSON or
// CSV), read its status and report, retry, cancel, pause or resume the
// queue. It holds no Versori key: it writes the same Redis the workers
// read, through package rollout, exactly as the enqueue CLI does.
//
// Configuration, by environment variable:
//
//	REDIS_URL               Redis (required)
//	API_ADDR                listen address (default :8080)
//	API_TOKENS_FILE         bearer tokens, one "ROLE SHA256HEX [NAME]" a line (required)
//	API_RATE_LIMIT          requests per second per token (default 50; burst twice that)
//	CALLBACK_ALLOWED_HOSTS  hosts a callback_url may name (host[:port], comma-separated)
//	WORKER_QUEUE            the workers' queue (default imports)
//	IMPORT_RATE_KEY         the workers' rate budget key, when they set one
//	LOG_LEVEL               debug, info, warn or error (default info)
//	CONSOLE_SESSION_KEY     key (32+ bytes) signing the console's session cookies;
//	                        unset: a random key per process (sessions end at restart)
//
// The rollout console, HTML pages for a browser, is served under /ui/.
//
// The routes are in openapi.json, served at GET /v1/openapi.json.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/versori/import-worker/console"
	"github.com/versori/import-worker/internal/apitoken"
	"github.com/versori/import-worker/internal/buildinfo"
	"github.com/versori/import-worker/internal/redisconn"
	"github.com/versori/import-worker/metrics"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/tasks"
)

// DefaultAddr is API_ADDR's default.
const DefaultAddr = ":8080"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil))
}

type config struct {
	redisURL, addr, queue, rateKey string
	tokens                         *apitoken.Set
	allowed                        rollout.AllowedHosts
	rate                           float64
	level                          slog.Level
	consoleKey                     []byte
	consoleKeyRandom               bool
}

func loadConfig(getenv func(string) string) (config, []string) {
	var errs []string
	bad := func(name, format string, args ...any) { errs = append(errs, name+": "+fmt.Sprintf(format, args...)) }
	c := config{
		redisURL: strings.TrimSpace(getenv("REDIS_URL")),
		addr:     strings.TrimSpace(getenv("API_ADDR")),
		queue:    strings.TrimSpace(getenv("WORKER_QUEUE")),
		rateKey:  strings.TrimSpace(getenv("IMPORT_RATE_KEY")),
		rate:     50,
	}
	if c.addr == "" {
		c.addr = DefaultAddr
	}
	if c.queue == "" {
		c.queue = rollout.DefaultQueue
	}
	if err := tasks.ValidateQueue(c.queue); err != nil {
		bad("WORKER_QUEUE", "%v", err)
	}
	if c.redisURL == "" {
		bad("REDIS_URL", "is required (redis://host:6379/0)")
	} else if _, err := redisconn.Parse(c.redisURL, redisconn.Options{}); err != nil {
		bad("REDIS_URL", "%v", err)
	}
	if f := strings.TrimSpace(getenv("API_TOKENS_FILE")); f == "" {
		bad("API_TOKENS_FILE", "is required: a file of \"ROLE SHA256HEX [NAME]\" lines (make one with: enqueue token --role operator)")
	} else if fh, err := os.Open(f); err != nil {
		bad("API_TOKENS_FILE", "%v", err)
	} else {
		es, err := apitoken.Parse(fh)
		fh.Close()
		switch {
		case err != nil:
			bad("API_TOKENS_FILE", "%s: %v", f, err)
		case len(es) == 0:
			bad("API_TOKENS_FILE", "%s holds no tokens: nobody could call the API", f)
		}
		c.tokens = apitoken.NewSet(es)
	}
	if v := strings.TrimSpace(getenv("API_RATE_LIMIT")); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || !(r > 0 && r <= 100000) {
			bad("API_RATE_LIMIT", "%q: want requests per second per token, above 0 and at most 100000", v)
		} else {
			c.rate = r
		}
	}
	var err error
	if c.consoleKey, c.consoleKeyRandom, err = console.KeyFromEnv(getenv); err != nil {
		errs = append(errs, err.Error())
	}
	if c.allowed, err = rollout.CallbackAllowedHosts(getenv); err != nil {
		errs = append(errs, err.Error())
	}
	switch strings.ToLower(strings.TrimSpace(getenv("LOG_LEVEL"))) {
	case "", "info":
	case "debug":
		c.level = slog.LevelDebug
	case "warn":
		c.level = slog.LevelWarn
	case "error":
		c.level = slog.LevelError
	default:
		bad("LOG_LEVEL", "%q: want debug, info, warn or error", getenv("LOG_LEVEL"))
	}
	return c, errs
}

// run serves until ctx ends. ready, if not nil, receives the listener's
// address once it accepts connections.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready chan<- net.Addr) int {
	if len(args) == 1 && (args[0] == "--version" || args[0] == "version") {
		fmt.Fprintf(stdout, "api %s (commit %s)\n", buildinfo.Version, buildinfo.Commit)
		return 0
	}
	if len(args) > 0 {
		fmt.Fprintf(stderr, "api: unexpected argument %q; the API is configured by environment variables (see README.md)\n", args[0])
		return 2
	}
	cfg, errs := loadConfig(getenv)
	if len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintf(stderr, "api: configuration: %s\n", e)
		}
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.level}))
	rdb, err := redisconn.New(cfg.redisURL, redisconn.Options{PoolSize: 64, DialTimeout: 2 * time.Second, Logger: log.With("component", "redis")})
	if err != nil {
		fmt.Fprintf(stderr, "api: configuration: REDIS_URL: %v\n", err)
		return 2
	}
	defer rdb.Close()

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		fmt.Fprintf(stderr, "api: API_ADDR %s: %v\n", cfg.addr, err)
		return 1
	}
	h := newServer(serverConfig{
		Manager: rollout.New(rdb, rollout.Options{Queue: cfg.queue, RateKey: cfg.rateKey}),
		Tokens:  cfg.tokens, Allowed: cfg.allowed, Logger: log,
		Registry: prometheus.NewRegistry(), Build: metrics.BuildInfo{Version: buildinfo.Version, Commit: buildinfo.Commit},
		RatePerToken: cfg.rate, BurstPerToken: int(2 * cfg.rate), ConsoleKey: cfg.consoleKey,
	})
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		// A million organisations as NDJSON is about 30 MB: minutes on a
		// slow link, never more.
		ReadTimeout:    10 * time.Minute,
		WriteTimeout:   10 * time.Minute,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	if err := rdb.Ping(pctx).Err(); err != nil {
		// Not fatal: /readyz says so, and requests answer 503 until Redis
		// is back.
		log.Warn("redis unreachable at start; answering 503 until it is back", "redis", redisconn.Redact(cfg.redisURL), "err", err)
	}
	cancel()
	log.Info("api started", "addr", ln.Addr().String(), "queue", cfg.queue, "tokens", cfg.tokens.Len(), "callback_hosts", strings.Join(cfg.allowed, ","),
		"console", "/ui/", "console_key_random", cfg.consoleKeyRandom)
	if ready != nil {
		ready <- ln.Addr()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		log.Error("api stopped", "err", err)
		return 1
	case <-ctx.Done():
	}
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("shutdown: requests cut off", "err", err)
	}
	log.Info("api stopped")
	return 0
}
