package main

import (
	"strconv"
	"strings"
	"time"

	"github.com/versori/import-worker/ratebudget"
)

// rateSettings is how the fleet chooses its rate and when it holds its
// calls: the adaptive rate below IMPORT_RATE_LIMIT and the circuit breaker.
type rateSettings struct {
	Adaptive bool                     // IMPORT_RATE_ADAPTIVE
	Floor    float64                  // IMPORT_RATE_FLOOR
	Key      string                   // IMPORT_RATE_KEY
	Breaker  ratebudget.BreakerConfig // BREAKER_*
}

// loadRateSettings reads the adaptive rate's and the breaker's variables,
// reporting each bad value through bad, and checks them with the budget's
// own rules (ratebudget.Check) so a value the budget would refuse later
// stops the worker at start, naming its variable.
func loadRateSettings(getenv func(string) string, bad func(name, format string, args ...any), limit float64, burst int) rateSettings {
	str := func(name string) string { return strings.TrimSpace(getenv(name)) }
	boolean := func(name string, def bool) bool {
		v := str(name)
		if v == "" {
			return def
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad(name, "%q is not true or false", v)
			return def
		}
		return b
	}
	number := func(name string, lo, hi float64) float64 {
		v := str(name)
		if v == "" {
			return 0
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f >= lo && f <= hi) {
			bad(name, "%q is not a number from %v to %v", v, lo, hi)
			return 0
		}
		return f
	}
	duration := func(name string, hi time.Duration) time.Duration {
		v := str(name)
		if v == "" {
			return 0
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > hi {
			bad(name, "%q is not a positive duration of at most %s (e.g. 5s)", v, hi)
			return 0
		}
		return d
	}

	s := rateSettings{
		Adaptive: boolean("IMPORT_RATE_ADAPTIVE", true),
		Key:      str("IMPORT_RATE_KEY"),
		Breaker: ratebudget.BreakerConfig{
			Enabled:         boolean("BREAKER_ENABLED", true),
			MinCalls:        int(number("BREAKER_MIN_CALLS", 2, 100000)),
			FailureRatio:    number("BREAKER_FAILURE_RATIO", 0.01, 1),
			Window:          duration("BREAKER_WINDOW", time.Hour),
			OpenInterval:    duration("BREAKER_OPEN_INTERVAL", time.Hour),
			MaxOpenInterval: duration("BREAKER_MAX_OPEN_INTERVAL", 24*time.Hour),
		},
	}
	if limit > 0 {
		s.Floor = number("IMPORT_RATE_FLOOR", ratebudget.MinLimit, limit)
	} else if str("IMPORT_RATE_FLOOR") != "" {
		bad("IMPORT_RATE_FLOOR", "is set, but IMPORT_RATE_LIMIT is 0 (unlimited): there is no rate to back off from")
	}
	if len(s.Key) > 200 || strings.ContainsAny(s.Key, " \t\r\n") {
		bad("IMPORT_RATE_KEY", "%q is not a Redis key of at most 200 characters without spaces", s.Key)
	}
	if limit > 0 {
		err := ratebudget.Check(ratebudget.Config{
			Limit: limit, Burst: burst,
			Adaptive: ratebudget.AdaptiveConfig{Enabled: s.Adaptive, Floor: s.Floor},
			Breaker:  s.Breaker,
		})
		if err != nil {
			name := "IMPORT_RATE_LIMIT"
			switch msg := err.Error(); {
			case strings.Contains(msg, "burst"):
				name = "IMPORT_RATE_BURST"
			case strings.Contains(msg, "floor"):
				name = "IMPORT_RATE_FLOOR"
			case strings.Contains(msg, "max open interval"):
				name = "BREAKER_MAX_OPEN_INTERVAL"
			case strings.Contains(msg, "breaker"):
				name = "BREAKER_OPEN_INTERVAL"
			}
			bad(name, "%s", strings.TrimPrefix(err.Error(), "ratebudget: "))
		}
	}
	return s
}
