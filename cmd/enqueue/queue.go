package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/versori/import-worker/internal/buildinfo"
	"github.com/versori/import-worker/rollout"
)

// pauseResult is the --json output of pause and resume.
type pauseResult struct {
	Queue  string `json:"queue"`
	Paused bool   `json:"paused"`
	// Changed is false when the queue already was in the state asked for.
	Changed bool `json:"changed"`
}

func newPauseCmd(a *app, pause bool) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pause",
		Short: "Pause the import queue for the whole fleet",
		Long: `pause stops every worker sharing the Redis from taking import tasks; imports
already running finish. Queued tasks stay queued. Workers pause the queue
themselves when the API refuses the key (401): fix the key, then resume.`,
		Example: "  enqueue pause\n  enqueue pause --queue imports-staging",
		Args:    cobra.NoArgs,
	}
	if !pause {
		cmd.Use = "resume"
		cmd.Short = "Resume the import queue for the whole fleet"
		cmd.Long = `resume lets the workers take import tasks again, after an operator's pause or
the automatic pause that follows a 401 (fix the key first).`
		cmd.Example = "  enqueue resume"
	}
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		rdb, err := a.connect(ctx)
		if err != nil {
			return err
		}
		defer rdb.Close()
		res := pauseResult{Queue: a.queue, Paused: pause}
		res.Changed, err = a.manager(rdb).SetPaused(a.queue, pause)
		if err != nil {
			return fmt.Errorf("%s %w", cmd.Name(), err)
		}
		if a.jsonOut {
			return a.printJSON(res)
		}
		switch {
		case pause && res.Changed:
			fmt.Fprintf(a.stdout, "queue %s paused: workers take no new tasks (running imports finish); resume with: enqueue resume\n", a.queue)
		case pause:
			fmt.Fprintf(a.stdout, "queue %s was already paused\n", a.queue)
		case res.Changed:
			fmt.Fprintf(a.stdout, "queue %s resumed: workers take tasks again\n", a.queue)
		default:
			fmt.Fprintf(a.stdout, "queue %s was not paused\n", a.queue)
		}
		return nil
	})
	return cmd
}

// rolloutRow is one rollout in the --json output of rollouts.
type rolloutRow = rollout.Summary

func newRolloutsCmd(a *app) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:     "rollouts",
		Short:   "List recent rollouts with their totals",
		Example: "  enqueue rollouts\n  enqueue rollouts --limit 5 --json",
		Args:    cobra.NoArgs,
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "how many rollouts, most recent first (0 for all)")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		if limit < 0 {
			return usageError("--limit must not be negative")
		}
		ctx := cmd.Context()
		rdb, err := a.connect(ctx)
		if err != nil {
			return err
		}
		defer rdb.Close()
		rows, err := a.manager(rdb).List(ctx, limit)
		if err != nil {
			return err
		}
		if a.jsonOut {
			return a.printJSON(rows)
		}
		if len(rows) == 0 {
			fmt.Fprintln(a.stdout, "no rollouts yet")
			return nil
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ROLLOUT\tCREATED\tCONNECTOR\tVERSION\tTOTAL\tSUCCEEDED\tFAILED\tPENDING\tCANCELLED\tSTATE")
		for _, r := range rows {
			state := "in progress"
			if r.Done {
				state = "done"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.RolloutID, r.CreatedAt.Format("2006-01-02 15:04"),
				r.ConnectorID, r.Version, thousands(r.Total), thousands(r.Succeeded), thousands(r.Failed),
				thousands(r.Pending), thousands(r.Cancelled), state)
		}
		return tw.Flush()
	})
	return cmd
}

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of enqueue",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintf(a.stdout, "enqueue %s (commit %s)\n", buildinfo.Version, buildinfo.Commit)
		},
	}
}
