// Package demo starts the embedded environment of demo mode: an in-process
// Redis (miniredis) and the versoritest fake of the Versori API, with
// realistic latency and a sprinkling of faults. It keeps nothing: it is for
// a trial on a machine with nothing installed, never for real work, and the
// binaries refuse to combine it with a real Redis or API.
package demo

import (
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/versori/import-worker/versori/versoritest"
)

// Options shape the demo environment. The zero value gives the defaults.
type Options struct {
	// Latency of the fake API. Default normal around 60 ms, sd 20 ms.
	Latency *versoritest.Latency
	// FaultRates of the fake API. Default 3% 429 (with Retry-After: 1) and
	// 5% 503.
	FaultRates map[versoritest.FaultKind]float64
}

// Env is a running demo environment.
type Env struct {
	// RedisURL is the in-process Redis's URL.
	RedisURL string
	// APIURL is the fake API's base URL; APIKey is the key it accepts.
	APIURL, APIKey string
	// Redis and API give direct access, e.g. to script faults.
	Redis *miniredis.Miniredis
	API   *versoritest.Server
}

// Start starts the environment. Close it when done.
func Start(opts Options) (*Env, error) {
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("demo: start in-process redis: %w", err)
	}
	lat := versoritest.Latency{Distribution: versoritest.Normal, Mean: 60 * time.Millisecond, Jitter: 20 * time.Millisecond, Max: 500 * time.Millisecond}
	if opts.Latency != nil {
		lat = *opts.Latency
	}
	rates := opts.FaultRates
	if rates == nil {
		rates = map[versoritest.FaultKind]float64{
			versoritest.FaultRateLimited: 0.03,
			versoritest.FaultServerError: 0.05,
		}
	}
	api := versoritest.NewServer(versoritest.WithLatency(lat))
	if err := api.SetFaultRates(rates); err != nil {
		api.Close()
		mr.Close()
		return nil, fmt.Errorf("demo: fault rates: %w", err)
	}
	return &Env{
		RedisURL: "redis://" + mr.Addr() + "/0",
		APIURL:   api.URL, APIKey: api.APIKey(),
		Redis: mr, API: api,
	}, nil
}

// Close stops the fake API and the in-process Redis.
func (e *Env) Close() {
	e.API.Close()
	e.Redis.Close()
}
