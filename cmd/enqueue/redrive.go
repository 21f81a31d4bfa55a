package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/versori/import-worker/rollout"
)

// retryResult and cancelResult are the --json outputs of retry and cancel.
type (
	retryResult  = rollout.RetryResult
	cancelResult = rollout.CancelResult
)

type retryCmd struct {
	*app
	classes []string
}

func newRetryCmd(a *app) *cobra.Command {
	r := &retryCmd{app: a}
	cmd := &cobra.Command{
		Use:   "retry ROLLOUT [--class CLASS,...]",
		Short: "Re-drive a rollout's failed organisations",
		Long: `retry moves a rollout's failed organisations (all, or those whose last
outcome class is one of --class) back to pending and gives each a fresh task
with its full budget of attempts. Succeeded, pending and cancelled
organisations are not touched. Run it after fixing what made them fail, e.g.
an outage (server_error, exhausted) or a missing permission (forbidden).`,
		Example: `  enqueue retry acme-1.4.0
  enqueue retry acme-1.4.0 --class server_error,exhausted,timeout,network`,
		Args: oneRollout,
		RunE: runE(r.run),
	}
	cmd.Flags().StringSliceVar(&r.classes, "class", nil, "only organisations whose last outcome class is one of these (comma-separated)")
	return cmd
}

func (r *retryCmd) run(cmd *cobra.Command, args []string) error {
	classes, err := parseClasses(r.classes)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	rdb, _, ro, _, err := r.openRollout(ctx, args[0])
	if err != nil {
		return err
	}
	defer rdb.Close()
	queue, err := r.rolloutQueue(ro)
	if err != nil {
		return err
	}
	res, err := r.manager(rdb).RetryOn(ctx, ro, classes, queue)
	if err != nil {
		return fmt.Errorf("%v (re-drove %s so far; running retry again is safe)", err, counted(res.Requeued, "failed organisation"))
	}
	if r.jsonOut {
		return r.printJSON(res)
	}
	if res.Requeued == 0 {
		fmt.Fprintf(r.stdout, "rollout %s: no failed organisations to retry\n", ro.ID)
		return nil
	}
	fmt.Fprintf(r.stdout, "rollout %s: %s back to pending (%s enqueued, %s already running)\nwatch it with: enqueue status %s --watch\n",
		ro.ID, counted(res.Requeued, "failed organisation"), counted(res.Enqueued, "task"), thousands(res.Running), ro.ID)
	return nil
}

type cancelCmd struct{ *app }

func newCancelCmd(a *app) *cobra.Command {
	c := &cancelCmd{app: a}
	return &cobra.Command{
		Use:   "cancel ROLLOUT",
		Short: "Cancel a rollout: remove its queued tasks and mark pending organisations cancelled",
		Long: `cancel marks every pending organisation of a rollout (retrying ones included)
cancelled and removes their queued, scheduled and retrying tasks. Imports
already in flight finish; one that succeeds is recorded as succeeded, since
the organisation does hold the version. Succeeded and failed organisations
are not touched. Re-enqueueing the same rollout does not revive cancelled
organisations; start a new rollout for them.`,
		Example: `  enqueue cancel acme-1.4.0
  enqueue cancel acme-1.4.0 --json`,
		Args: oneRollout,
		RunE: runE(c.run),
	}
}

func (c *cancelCmd) run(cmd *cobra.Command, args []string) error {
	ctx := cmd.Context()
	rdb, _, ro, _, err := c.openRollout(ctx, args[0])
	if err != nil {
		return err
	}
	defer rdb.Close()
	queue, err := c.rolloutQueue(ro)
	if err != nil {
		return err
	}
	res, err := c.manager(rdb).CancelOn(ctx, ro.ID, queue)
	if err != nil {
		return fmt.Errorf("%v (cancelled %s so far; running cancel again is safe)", err, counted(res.Cancelled, "organisation"))
	}
	if c.jsonOut {
		return c.printJSON(res)
	}
	fmt.Fprintf(c.stdout, "rollout %s: %s cancelled, %s removed, %s in flight left to finish\n",
		ro.ID, counted(res.Cancelled, "pending organisation"), counted(res.TasksDeleted, "queued task"), counted(res.Running, "import"))
	return nil
}
