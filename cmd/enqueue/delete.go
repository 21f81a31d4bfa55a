package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/versori/import-worker/rollout"
)

type deleteCmd struct {
	*app
	force bool
}

func newDeleteCmd(a *app) *cobra.Command {
	d := &deleteCmd{app: a}
	cmd := &cobra.Command{
		Use:   "delete ROLLOUT [--force]",
		Short: "Delete a rollout and its records now, without waiting for its retention",
		Long: `delete removes a rollout from Redis at once: its definition, its
per-organisation records, its counters, its callback and its entry in the
list of rollouts. A finished rollout expires by itself after the workers'
ROLLOUT_RETENTION; delete is for removing one sooner.

An active rollout (anything pending) is refused (exit status 2): cancel it
first (enqueue cancel ROLLOUT), or pass --force, which cancels it, waits for
its imports in flight to end and removes its tasks, so no worker registers
it again, then deletes it. The report is gone afterwards: write it first if
it is needed (enqueue report ROLLOUT --format csv).`,
		Example: `  enqueue report acme-1.4.0 --format csv > acme-1.4.0.csv && enqueue delete acme-1.4.0
  enqueue delete acme-1.4.0 --force`,
		Args: oneRollout,
		RunE: runE(d.run),
	}
	cmd.Flags().BoolVar(&d.force, "force", false, "delete an active rollout too, cancelling it first")
	return cmd
}

func (d *deleteCmd) run(cmd *cobra.Command, args []string) error {
	ctx := cmd.Context()
	rdb, _, ro, _, err := d.openRollout(ctx, args[0])
	if err != nil {
		return err
	}
	defer rdb.Close()
	if _, err := d.rolloutQueue(ro); err != nil {
		return err
	}
	res, err := d.manager(rdb).Remove(ctx, ro.ID, rollout.RemoveOptions{Force: d.force})
	var ae *rollout.ActiveError
	switch {
	case errors.As(err, &ae):
		return usageError("rollout %s is active (%s pending): cancel it first (enqueue cancel %s) or delete it with --force",
			ro.ID, counted(int(ae.Pending), "organisation"), ro.ID)
	case errors.Is(err, rollout.ErrNotFound):
		return usageError("rollout %q not found (deleted or expired meanwhile)", ro.ID)
	case err != nil:
		return err
	}
	if d.jsonOut {
		return d.printJSON(res)
	}
	if res.Cancelled > 0 || res.TasksDeleted > 0 {
		fmt.Fprintf(d.stdout, "rollout %s: cancelled %s and removed %s, then deleted\n",
			ro.ID, counted(res.Cancelled, "pending organisation"), counted(res.TasksDeleted, "queued task"))
		return nil
	}
	fmt.Fprintf(d.stdout, "rollout %s deleted\n", ro.ID)
	return nil
}
