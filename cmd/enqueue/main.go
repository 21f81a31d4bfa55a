// Command enqueue is the operator's tool for rollouts: it enqueues one import
// task per organisation of a list, shows a rollout's status, writes its
// per-organisation report, re-drives failures, cancels what is still
// pending, and pauses or resumes the import queue for the whole fleet.
//
// Exit status: 0 on success, 1 on a runtime failure (Redis unreachable, an
// interrupted run), 2 on bad usage or bad input (unknown flag, invalid
// organisation IDs, a missing file, an unknown rollout ID).
//
// Run `enqueue --help` for the commands, or see the operator's guide in
// README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &app{
		stdin:      os.Stdin,
		stdout:     os.Stdout,
		stderr:     os.Stderr,
		getenv:     os.Getenv,
		isTerminal: isTerminal,
		now:        time.Now,
	}, os.Args[1:])
	stop()
	os.Exit(code)
}
