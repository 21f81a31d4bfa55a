// Package taskctx carries, in a context, what an asynq server would tell a
// handler about its task: its ID and how many attempts failed so far. asynq
// keeps its own context keys internal, so tasks/taskstest, which runs a
// handler outside a server, sets these instead; the tasks handler reads
// them before asynq's.
package taskctx

import "context"

type key int

const (
	retryKey key = iota
	taskIDKey
)

type retry struct{ retried, maxRetry int }

// WithRetry returns ctx telling the handler that retried attempts of the
// task failed so far and maxRetry may.
func WithRetry(ctx context.Context, retried, maxRetry int) context.Context {
	return context.WithValue(ctx, retryKey, retry{retried, maxRetry})
}

// Retry returns the counts WithRetry set, and whether it did.
func Retry(ctx context.Context) (retried, maxRetry int, ok bool) {
	r, ok := ctx.Value(retryKey).(retry)
	return r.retried, r.maxRetry, ok
}

// WithTaskID returns ctx naming the task's ID.
func WithTaskID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, taskIDKey, id)
}

// TaskID returns the ID WithTaskID set, and whether it did.
func TaskID(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(taskIDKey).(string)
	return id, ok
}
