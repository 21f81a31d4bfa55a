//go:build demo

package main

import (
	"log/slog"

	"github.com/versori/import-worker/internal/demo"
)

// startDemo starts the embedded demo environment (an in-memory Redis and
// the fake API) and points cfg at it. Built only with -tags demo, so the
// production worker links neither.
func startDemo(cfg *config, log *slog.Logger) (stop func(), err error) {
	env, err := demo.Start(demo.Options{})
	if err != nil {
		return nil, err
	}
	cfg.RedisURL, cfg.BaseURL, cfg.APIKey = env.RedisURL, env.APIURL, env.APIKey
	log.Warn("DEMO MODE: in-memory Redis and a fake Versori API; nothing is kept",
		"redis_url", env.RedisURL, "fake_api", env.APIURL)
	return env.Close, nil
}
