// Command fakeapi serves the fake Versori Connect API (package versoritest)
// as a process, for docker compose, the demo and end-to-end tests.
//
// The API is served under /api/connect/v1; control endpoints (/_stats,
// /_health, /_reset, /_outage, /_fault, ... see versoritest.AdminHandler)
// are served beside it without authentication, so the fake refuses to
// listen on anything but loopback unless --allow-remote is given.
//
//	fakeapi --addr 127.0.0.1:8081 --api-key test-key --latency 20ms --rate-limit 200 --fault-rate server_error=0.02
//	fakeapi --rate-limit 50 --rate-limit-headers ietf --rate-limit-schedule 50@0s,10@20s,50@40s
package main

import (
	"context"
	"errors"
	"flag"
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

	"github.com/versori/import-worker/versori"
	"github.com/versori/import-worker/versori/versoritest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr, nil)
	stop()
	if err != nil {
		var u usageError
		if errors.As(err, &u) {
			fmt.Fprintln(os.Stderr, "fakeapi:", err)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "fakeapi:", err)
		os.Exit(1)
	}
}

type usageError struct{ error }

// faultRates collects repeated --fault-rate KIND=P (or comma-separated) flags.
type faultRates map[versoritest.FaultKind]float64

func (f faultRates) String() string { return fmt.Sprint(map[versoritest.FaultKind]float64(f)) }

func (f faultRates) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		k, p, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return fmt.Errorf("%q: want KIND=PROBABILITY", part)
		}
		kind := versoritest.FaultKind(k)
		if !kind.Valid() {
			return fmt.Errorf("unknown fault kind %q (known: %v)", k, versoritest.FaultKinds())
		}
		x, err := strconv.ParseFloat(p, 64)
		if err != nil {
			return fmt.Errorf("%q: %w", part, err)
		}
		f[kind] = x
	}
	return nil
}

// run serves until ctx ends. ready, if not nil, is told the listening
// address once the fake accepts connections.
func run(ctx context.Context, args []string, stderr io.Writer, ready func(addr string)) error {
	fs := flag.NewFlagSet("fakeapi", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		addr        = fs.String("addr", "127.0.0.1:8081", "listen address")
		allowRemote = fs.Bool("allow-remote", false, "allow a non-loopback listen address (the control endpoints have no authentication)")
		key         = fs.String("api-key", os.Getenv("FAKEAPI_API_KEY"), "API key the fake accepts (env FAKEAPI_API_KEY); random when empty")
		keyFile     = fs.String("api-key-file", "", "file holding the API key")
		prefix      = fs.String("prefix", versoritest.DefaultPrefix, "path prefix of the API")
		latency     = fs.Duration("latency", 0, "mean latency added to import calls")
		jitter      = fs.Duration("latency-jitter", 0, "latency jitter (uniform: +/-, normal: standard deviation)")
		dist        = fs.String("latency-distribution", "constant", "constant, uniform, exponential or normal")
		latencyMax  = fs.Duration("latency-max", 0, "cap on sampled latency (0: none)")
		rateLimit   = fs.Float64("rate-limit", 0, "import calls per second the fake accepts (0: unlimited)")
		rateBurst   = fs.Int("rate-burst", 0, "burst of the fake's rate limit (0: a tenth of a second of calls, at least 2, as API gateways' token buckets allow; 1: none, so any call sooner than 1/limit after the last accepted one is refused)")
		observe     = fs.Bool("rate-limit-observe", false, "count rate violations without answering 429")
		omitRA      = fs.Bool("rate-limit-omit-retry-after", false, "leave Retry-After out of the fake's 429s")
		headers     = fs.String("rate-limit-headers", "none", "rate-limit headers on import answers: none, ietf (RateLimit, RateLimit-Policy) or x (X-RateLimit-*)")
		schedule    = fs.String("rate-limit-schedule", "", "a limit that changes over time: PER_SECOND@OFFSET,... from start, e.g. 50@0s,10@20s,50@40s (burst and headers from the flags above)")
		seed        = fs.Uint64("seed", 0, "seed for reproducible faults and latency (0: random)")
		healthcheck = fs.Bool("healthcheck", false, "check that a fake is serving on --addr and exit 0 or 1 (for container health checks)")
		rates       = faultRates{}
	)
	fs.Var(rates, "fault-rate", "KIND=PROBABILITY of a fault on each import call; repeatable or comma-separated")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %v", fs.Args())}
	}
	if *healthcheck {
		return check(*addr)
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return usageError{fmt.Errorf("--addr %q: %w", *addr, err)}
	}
	if !*allowRemote && !versori.IsLoopbackHost(host) {
		return usageError{fmt.Errorf("--addr %q is not a loopback address; pass --allow-remote to serve it anyway", *addr)}
	}
	switch versoritest.Distribution(*dist) {
	case versoritest.Constant, versoritest.Uniform, versoritest.Exponential, versoritest.Normal:
	default:
		return usageError{fmt.Errorf("--latency-distribution %q: want constant, uniform, exponential or normal", *dist)}
	}
	style, err := versoritest.ParseHeaderStyle(*headers)
	if err != nil {
		return usageError{fmt.Errorf("--rate-limit-headers: %w", err)}
	}
	if *rateBurst < 0 {
		return usageError{fmt.Errorf("--rate-burst %d: want 0 (a tenth of a second of calls) or more", *rateBurst)}
	}
	policy := versoritest.RateLimit{PerSecond: *rateLimit, Burst: *rateBurst, ObserveOnly: *observe, OmitRetryAfter: *omitRA, Headers: style}
	if *rateBurst == 0 {
		policy.Burst = versoritest.GatewayBurst(*rateLimit)
	}
	var steps []versoritest.RateLimitStep
	if *schedule != "" {
		if steps, err = versoritest.ParseRateLimitSchedule(*schedule, policy); err != nil {
			return usageError{fmt.Errorf("--rate-limit-schedule: %w", err)}
		}
		if *rateBurst == 0 {
			// Each step's own limit sets its burst.
			for i := range steps {
				steps[i].Policy.Burst = versoritest.GatewayBurst(steps[i].Policy.PerSecond)
			}
		}
	}
	if *keyFile != "" {
		b, err := os.ReadFile(*keyFile)
		if err != nil {
			return usageError{fmt.Errorf("--api-key-file: %w", err)}
		}
		*key = strings.TrimSpace(string(b))
	}

	opts := []versoritest.Option{
		versoritest.WithPrefix(*prefix),
		versoritest.WithLatency(versoritest.Latency{Distribution: versoritest.Distribution(*dist), Mean: *latency, Jitter: *jitter, Max: *latencyMax}),
		versoritest.WithRateLimitPolicy(policy),
	}
	if *key != "" {
		opts = append(opts, versoritest.WithAPIKey(*key))
	}
	if *seed != 0 {
		opts = append(opts, versoritest.WithSeed(*seed))
	}
	s := versoritest.NewUnstartedServer(opts...)
	if err := s.SetFaultRates(rates); err != nil {
		return usageError{fmt.Errorf("--fault-rate: %w", err)}
	}

	if steps != nil {
		// Counted from here, just before the fake starts listening.
		s.SetRateLimitSchedule(steps)
	}

	admin := s.AdminHandler()
	mux := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/_") {
			admin.ServeHTTP(w, r)
			return
		}
		s.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	attrs := []any{"url", "http://" + ln.Addr().String() + *prefix, "stats", "http://" + ln.Addr().String() + "/_stats"}
	if *key == "" {
		// A generated key is useless unless the operator can read it; it
		// only ever unlocks this fake.
		attrs = append(attrs, "generated_api_key", s.APIKey())
	}
	log.Info("fake Versori API listening", attrs...)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if ready != nil {
		ready(ln.Addr().String())
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	s.Close() // releases hanging requests
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

// check asks a running fake for /_health.
func check(addr string) error {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/_health")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health check: %s", resp.Status)
	}
	return nil
}
