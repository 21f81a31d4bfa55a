package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/versori/import-worker/ratebudget"
)

// Modes.
const (
	modeBare       = "bare"
	modePerProcess = "ratelimit-per-process"
)

// Limiters of the ratelimit-per-process mode.
const (
	limiterWait  = "wait"
	limiterAllow = "allow"
)

// config is the baseline's configuration, read from the worker's variables.
type config struct {
	Mode        string  // MODE
	RedisURL    string  // REDIS_URL
	BaseURL     string  // VERSORI_BASE_URL
	APIKey      string  // VERSORI_API_KEY
	RateLimit   float64 // IMPORT_RATE_LIMIT, per process; ratelimit-per-process only
	RateBurst   int     // IMPORT_RATE_BURST; default ratebudget.DefaultBurst(limit), as in the worker
	Limiter     string  // RATE_LIMITER: wait (default) or allow
	Concurrency int     // WORKER_CONCURRENCY, default 20
	Queue       string  // WORKER_QUEUE, default "imports"
	MetricsAddr string  // METRICS_ADDR, default 127.0.0.1:9091
	EnablePprof bool    // ENABLE_PPROF: serve /debug/pprof/ on METRICS_ADDR, as the worker does
}

func loadConfig(getenv func(string) string) (config, error) {
	str := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	c := config{
		Mode:        str("MODE", modeBare),
		RedisURL:    str("REDIS_URL", ""),
		BaseURL:     str("VERSORI_BASE_URL", ""),
		APIKey:      str("VERSORI_API_KEY", ""),
		Queue:       str("WORKER_QUEUE", "imports"),
		MetricsAddr: str("METRICS_ADDR", "127.0.0.1:9091"),
		Concurrency: 20,
	}
	var errs []error
	if c.Mode != modeBare && c.Mode != modePerProcess {
		errs = append(errs, fmt.Errorf("MODE: %q is not %s or %s", c.Mode, modeBare, modePerProcess))
	}
	for name, v := range map[string]string{"REDIS_URL": c.RedisURL, "VERSORI_BASE_URL": c.BaseURL, "VERSORI_API_KEY": c.APIKey} {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s: is required", name))
		}
	}
	if v := str("WORKER_CONCURRENCY", ""); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("WORKER_CONCURRENCY: %q is not a positive whole number", v))
		}
		c.Concurrency = n
	}
	if v := str("ENABLE_PPROF", ""); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("ENABLE_PPROF: %q is not true or false", v))
		}
		c.EnablePprof = b
	}
	if c.Mode == modePerProcess {
		v := str("IMPORT_RATE_LIMIT", "")
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f > 0) {
			errs = append(errs, fmt.Errorf("IMPORT_RATE_LIMIT: %q is not a positive number of calls per second (required by %s)", v, modePerProcess))
		}
		c.RateLimit = f
		c.Limiter = str("RATE_LIMITER", limiterWait)
		if c.Limiter != limiterWait && c.Limiter != limiterAllow {
			errs = append(errs, fmt.Errorf("RATE_LIMITER: %q is not %s or %s", c.Limiter, limiterWait, limiterAllow))
		}
		c.RateBurst = ratebudget.DefaultBurst(f)
		if v := str("IMPORT_RATE_BURST", ""); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				errs = append(errs, fmt.Errorf("IMPORT_RATE_BURST: %q is not a positive whole number", v))
			}
			c.RateBurst = n
		}
	}
	return c, errors.Join(errs...)
}
