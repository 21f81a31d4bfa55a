package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"
	"golang.org/x/time/rate"

	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
)

// Importer makes the import call; *versori.Client implements it.
type Importer interface {
	ImportPublicConnectorVersion(ctx context.Context, orgID versori.OrgID, connectorID versori.ConnectorID, version string) (*versori.Connector, error)
}

// RateLimitError is the wiki recipe's error for a task the process's limiter
// refused: not a failure, run again after RetryIn.
type RateLimitError struct {
	RetryIn time.Duration
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("rate limited: retry in %s", e.RetryIn)
}

// isFailure is asynq's IsFailure: a refusal by the limiter uses no attempt.
func isFailure(err error) bool {
	var rl *RateLimitError
	return !errors.As(err, &rl)
}

// retryDelay is asynq's RetryDelayFunc: the limiter's delay for a refusal,
// asynq's default for everything else.
func retryDelay(n int, err error, t *asynq.Task) time.Duration {
	var rl *RateLimitError
	if errors.As(err, &rl) {
		return rl.RetryIn
	}
	return asynq.DefaultRetryDelayFunc(n, err, t)
}

// handler imports one organisation per task.
type handler struct {
	client  Importer
	limiter *rate.Limiter // nil in bare mode
	// allow refuses a task when the limiter has no token at once (the
	// wiki's Limiter.Allow), where the default waits for one (Limiter.Wait).
	allow bool
	// retryIn is the delay a refused task asks for; the recipe's random
	// whole number of seconds from 0 to 9.
	retryIn func() time.Duration
}

func newHandler(cfg config, client Importer) *handler {
	h := &handler{client: client, retryIn: func() time.Duration { return time.Duration(rand.IntN(10)) * time.Second }}
	if cfg.Mode == modePerProcess {
		h.limiter = rate.NewLimiter(rate.Limit(cfg.RateLimit), cfg.RateBurst)
		h.allow = cfg.Limiter == limiterAllow
	}
	return h
}

// ProcessTask implements asynq.Handler.
func (h *handler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p tasks.Payload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return fmt.Errorf("%w: decode payload: %v", asynq.SkipRetry, err)
	}
	switch {
	case h.limiter == nil:
	case h.allow:
		if !h.limiter.Allow() {
			return &RateLimitError{RetryIn: h.retryIn()}
		}
	default:
		if err := h.limiter.Wait(ctx); err != nil {
			return &RateLimitError{RetryIn: h.retryIn()}
		}
	}
	_, err := h.client.ImportPublicConnectorVersion(ctx, p.OrgID, p.ConnectorID, p.Version)
	if err != nil && versori.Classify(err) != versori.ClassAlreadyPresent {
		return fmt.Errorf("import org %s: %w", p.OrgID, err)
	}
	return nil
}
