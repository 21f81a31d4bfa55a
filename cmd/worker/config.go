package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/versori/import-worker/gate"
	"github.com/versori/import-worker/internal/redisconn"
	"github.com/versori/import-worker/internal/worker"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/ratebudget"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
)

// config is the worker's configuration, read from the environment. Every
// field's variable is named in the documentation table in README.md.
type config struct {
	RedisURL        string               // REDIS_URL
	BaseURL         string               // VERSORI_BASE_URL
	APIKey          string               // VERSORI_API_KEY
	APIKeyFile      string               // VERSORI_API_KEY_FILE, read by the client
	AuthScheme      string               // VERSORI_AUTH_SCHEME
	CallTimeout     time.Duration        // VERSORI_TIMEOUT
	RateLimit       float64              // IMPORT_RATE_LIMIT
	RateBurst       int                  // IMPORT_RATE_BURST
	RateMaxWait     time.Duration        // IMPORT_RATE_MAX_WAIT
	Concurrency     int                  // WORKER_CONCURRENCY
	Queue           string               // WORKER_QUEUE
	ShutdownTimeout time.Duration        // WORKER_SHUTDOWN_TIMEOUT
	BackoffBase     time.Duration        // RETRY_BACKOFF_BASE
	BackoffCap      time.Duration        // RETRY_BACKOFF_CAP
	WaitReplicas    int                  // LEDGER_WAIT_REPLICAS
	WaitTimeout     time.Duration        // LEDGER_WAIT_TIMEOUT
	MetricsAddr     string               // METRICS_ADDR
	LogLevel        string               // LOG_LEVEL
	EnablePprof     bool                 // ENABLE_PPROF
	Rate            rateSettings         // IMPORT_RATE_ADAPTIVE, IMPORT_RATE_FLOOR, IMPORT_RATE_KEY, BREAKER_*
	CallbackSecret  []byte               // CALLBACK_SECRET or CALLBACK_SECRET_FILE
	CallbackHosts   rollout.AllowedHosts // CALLBACK_ALLOWED_HOSTS
	Gate            *gate.Measurer       // GATE_PROMETHEUS_URL
	Retention       time.Duration        // ROLLOUT_RETENTION (rollout.NoRetention: off)

	// client is the API client built while checking the settings; nil in
	// demo mode, whose API is only known once the demo starts.
	client *versori.Client
}

// Upper bounds on durations. The call timeout and the rate wait are added
// into the shutdown timeout, so each is bounded well below overflow; an hour
// is far past any sensible value.
const (
	maxCallWait = time.Hour
	maxBackoff  = 24 * time.Hour
	maxShutdown = 3 * time.Hour
)

// configError lists every problem found, one line each, so an operator fixes
// them all in one go.
type configError []string

func (e configError) Error() string { return strings.Join(e, "\n") }

// loadConfig reads the configuration through getenv. In demo mode Redis and
// the API are in-process, so REDIS_URL, VERSORI_BASE_URL and the key must not
// be set: demo mode keeps nothing and must never be mistaken for a real run.
func loadConfig(getenv func(string) string, demo bool) (config, error) {
	var errs configError
	bad := func(name, format string, args ...any) {
		errs = append(errs, name+": "+fmt.Sprintf(format, args...))
	}
	str := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	// dur reads a positive duration of at most max: larger values are
	// mistakes, and sums of them (the shutdown timeout) must not overflow.
	dur := func(name string, def, max time.Duration) time.Duration {
		v := str(name, "")
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			if n, nerr := strconv.ParseFloat(v, 64); nerr == nil && !math.IsNaN(n) && !math.IsInf(n, 0) {
				if n > max.Seconds() {
					n = max.Seconds() + 1 // refused below, without overflowing
				}
				d, err = time.Duration(n*float64(time.Second)), nil
			}
		}
		if err != nil || d <= 0 {
			bad(name, "%q is not a positive duration (e.g. 30s)", v)
			return def
		}
		if d > max {
			bad(name, "%s is longer than the %s allowed", v, max)
			return def
		}
		return d
	}
	integer := func(name string, def, min, max int) int {
		v := str(name, "")
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < min || n > max {
			bad(name, "%q is not a whole number from %d to %d", v, min, max)
			return def
		}
		return n
	}

	c := config{
		RedisURL:    str("REDIS_URL", ""),
		BaseURL:     str("VERSORI_BASE_URL", versori.DefaultBaseURL),
		APIKey:      getenv("VERSORI_API_KEY"),
		APIKeyFile:  str("VERSORI_API_KEY_FILE", ""),
		AuthScheme:  str("VERSORI_AUTH_SCHEME", "Bearer"),
		CallTimeout: dur("VERSORI_TIMEOUT", 30*time.Second, maxCallWait),
		Concurrency: integer("WORKER_CONCURRENCY", 20, 1, 10000),
		Queue:       str("WORKER_QUEUE", "imports"),
		MetricsAddr: str("METRICS_ADDR", ":9090"),
		LogLevel:    strings.ToLower(str("LOG_LEVEL", "info")),
		RateMaxWait: dur("IMPORT_RATE_MAX_WAIT", 5*time.Second, maxCallWait),
		BackoffBase: dur("RETRY_BACKOFF_BASE", tasks.DefaultBackoffBase, maxBackoff),
		BackoffCap:  dur("RETRY_BACKOFF_CAP", time.Minute, maxBackoff),
		// Replicas behind one master; more than a handful is no setup
		// this service runs on.
		WaitReplicas: integer("LEDGER_WAIT_REPLICAS", 0, 0, 16),
		// Below go-redis's 3-s read timeout, which would cut the WAIT off.
		WaitTimeout: dur("LEDGER_WAIT_TIMEOUT", ledger.DefaultWaitTimeout, 2*time.Second),
	}

	c.RateLimit = rollout.DefaultRateLimit
	if v := str("IMPORT_RATE_LIMIT", ""); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || f != 0 && (f < ratebudget.MinLimit || f > ratebudget.MaxLimit) {
			bad("IMPORT_RATE_LIMIT", "%q is not a number of calls per second from %v to %v, or 0 (unlimited)", v, ratebudget.MinLimit, ratebudget.MaxLimit)
		} else {
			c.RateLimit = f
		}
	}
	c.RateBurst = ratebudget.DefaultBurst(c.RateLimit)
	if v := str("IMPORT_RATE_BURST", ""); v != "" {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil || n < 1 || n > 100000:
			bad("IMPORT_RATE_BURST", "%q is not a whole number from 1 to 100000", v)
		case c.RateLimit > 0 && float64(n) > math.Max(1, c.RateLimit):
			// More than a second's budget at once: the API would see
			// more than the limit in one second.
			bad("IMPORT_RATE_BURST", "%d is above IMPORT_RATE_LIMIT %v: the calls the API sees in one second would exceed the limit (keep it near limit / 40)", n, c.RateLimit)
		default:
			c.RateBurst = n
		}
	}

	c.Rate = loadRateSettings(getenv, bad, c.RateLimit, c.RateBurst)

	schemeOK := true
	switch strings.ToLower(c.AuthScheme) {
	case "bearer":
		c.AuthScheme = "Bearer"
	case "jwt":
		c.AuthScheme = "JWT"
	default:
		bad("VERSORI_AUTH_SCHEME", "%q is not Bearer or JWT", c.AuthScheme)
		schemeOK = false
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL", "%q is not debug, info, warn or error", c.LogLevel)
	}
	if v := str("ENABLE_PPROF", ""); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad("ENABLE_PPROF", "%q is not true or false", v)
		}
		c.EnablePprof = b
	}
	if err := tasks.ValidateQueue(c.Queue); err != nil {
		bad("WORKER_QUEUE", "%v", err)
	}

	if demo {
		for _, name := range []string{"REDIS_URL", "VERSORI_BASE_URL", "VERSORI_API_KEY", "VERSORI_API_KEY_FILE"} {
			if getenv(name) != "" {
				bad(name, "is set, but --demo runs on an in-memory Redis and a fake API and keeps nothing; unset it or drop --demo")
			}
		}
	} else {
		if c.RedisURL == "" {
			bad("REDIS_URL", "is required (redis://host:6379/0; or run with --demo to try the worker on embedded defaults)")
		} else if _, err := redisconn.Parse(c.RedisURL, redisconn.Options{}); err != nil {
			bad("REDIS_URL", "%v", err)
		}
		switch {
		case c.APIKey != "" && c.APIKeyFile != "":
			bad("VERSORI_API_KEY_FILE", "is set together with VERSORI_API_KEY; set only one")
		case c.APIKeyFile == "" && strings.TrimSpace(c.APIKey) == "":
			bad("VERSORI_API_KEY", "is required (or VERSORI_API_KEY_FILE naming a file that holds it)")
		default:
			c.client = c.checkClient(bad, schemeOK)
		}
	}

	var err error
	if c.CallbackSecret, err = rollout.CallbackSecret(getenv); err != nil {
		errs = append(errs, err.Error())
	}
	if c.CallbackHosts, err = rollout.CallbackAllowedHosts(getenv); err != nil {
		errs = append(errs, err.Error())
	}
	if c.Gate, err = gate.New(gate.Config{URL: getenv(gate.EnvURL)}); err != nil {
		errs = append(errs, gate.EnvURL+": "+err.Error())
	}
	if c.Retention, err = rollout.RetentionFromEnv(getenv); err != nil {
		errs = append(errs, err.Error())
	}

	min, def := worker.ShutdownBounds(c.RateMaxWait, c.CallTimeout)
	c.ShutdownTimeout = dur("WORKER_SHUTDOWN_TIMEOUT", def, maxShutdown)
	if c.ShutdownTimeout <= min {
		bad("WORKER_SHUTDOWN_TIMEOUT", "%s must exceed IMPORT_RATE_MAX_WAIT + VERSORI_TIMEOUT (%s), or calls cut off at shutdown run twice", c.ShutdownTimeout, min)
	}
	if c.BackoffCap < c.BackoffBase {
		bad("RETRY_BACKOFF_CAP", "%s is shorter than RETRY_BACKOFF_BASE %s", c.BackoffCap, c.BackoffBase)
	}
	if len(errs) > 0 {
		return c, errs
	}
	return c, nil
}

// checkClient builds the API client, which checks the base URL and the key
// (and reads the key file), and reports every problem it finds, each once:
// a bad base URL must not hide a bad key, and a bad auth scheme, already
// reported by loadConfig (schemeOK false), is not reported again. It returns
// nil when anything is wrong.
func (c config) checkClient(bad func(name, format string, args ...any), schemeOK bool) *versori.Client {
	vc := c.versoriConfig()
	if !schemeOK {
		vc.AuthScheme = "Bearer"
	}
	client, err := versori.New(vc)
	if err == nil {
		return client
	}
	keyVar := "VERSORI_API_KEY"
	if c.APIKeyFile != "" {
		keyVar = "VERSORI_API_KEY_FILE"
	}
	if !strings.Contains(err.Error(), "base URL") {
		bad(keyVar, "%v", err)
		return nil
	}
	bad("VERSORI_BASE_URL", "%v", err)
	// Check the key on its own, against the default base URL.
	vc.BaseURL = ""
	if _, err := versori.New(vc); err != nil {
		bad(keyVar, "%v", err)
	}
	return nil
}

// versoriConfig is the API client's configuration.
func (c config) versoriConfig() versori.Config {
	return versori.Config{
		BaseURL:         c.BaseURL,
		APIKey:          c.APIKey,
		APIKeyFile:      c.APIKeyFile,
		AuthScheme:      c.AuthScheme,
		Timeout:         c.CallTimeout,
		MaxConnsPerHost: c.Concurrency,
	}
}
