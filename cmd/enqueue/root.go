package main

import (
	"github.com/spf13/cobra"

	"github.com/versori/import-worker/tasks"
)

func newRootCmd(a *app) *cobra.Command {
	e := &enqueueCmd{app: a}
	root := &cobra.Command{
		Use:   "enqueue --connector ID --version NAME --orgs FILE|- [flags]",
		Short: "Enqueue and operate rollouts of a public Versori connector version",
		Long: `enqueue imports a public connector version into every organisation of a list
(a rollout): it enqueues one task per organisation for the worker fleet and
records each one in the rollout ledger. Its subcommands show a rollout's
progress, write its per-organisation report, re-drive failures, cancel what
is still pending, and pause or resume the import queue for the whole fleet.

The list (--orgs FILE, or - for standard input) holds one organisation ID a
line (blank lines and # comments ignored), or is a CSV with an
organisation_id column. Duplicates are dropped; invalid IDs are listed with
their line numbers and nothing is enqueued unless --skip-invalid. The
rollout ID is printed on standard output; re-running the same command with
--rollout enqueues only what is missing.

Every command reads Redis from --redis-url or REDIS_URL.
Exit status: 0 success, 1 runtime failure, 2 bad usage or bad input
(including an unknown rollout ID).`,
		Example: `  # Enqueue a rollout; the rollout ID is printed on standard output.
  enqueue --connector 01HZY3K8W0V6Q1B2C3D4E5F6G7 --version 1.4.0 --orgs orgs.txt

  # Check a list and see how long the fleet would take, writing nothing.
  enqueue --connector 01HZY3K8W0V6Q1B2C3D4E5F6G7 --version latest --orgs orgs.csv --dry-run

  # Name the rollout, read the list from a pipe, machine-readable output.
  cut -d, -f1 export.csv | enqueue --connector 01HZY3K8W0V6Q1B2C3D4E5F6G7 --version 1.4.0 \
      --orgs - --rollout acme-1.4.0 --json

  # Then: enqueue status acme-1.4.0 --watch; enqueue report acme-1.4.0 --format csv`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          runE(e.run),
	}
	root.CompletionOptions.DisableDefaultCmd = true
	// Every command checks --queue with the worker's own rule, so none
	// acts on a queue no worker would serve.
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := tasks.ValidateQueue(a.queue); err != nil {
			return usageError("--queue: %v", err)
		}
		a.queueSet = cmd.Flags().Changed("queue")
		return nil
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError("%v (see '%s --help')", err, cmd.CommandPath())
	})

	pf := root.PersistentFlags()
	pf.StringVar(&a.redisURL, "redis-url", "", "Redis URL (default $REDIS_URL): redis://[user:pass@]host:port/db, rediss://, redis-sentinel://, redis-cluster://")
	pf.BoolVar(&a.jsonOut, "json", false, "print machine-readable JSON on standard output")
	queue := tasks.DefaultQueue
	if q := a.getenv("WORKER_QUEUE"); q != "" {
		queue = q
	}
	pf.StringVar(&a.queue, "queue", queue, "asynq queue the workers serve ($WORKER_QUEUE when set)")

	e.flags(root)
	root.AddCommand(
		newStatusCmd(a),
		newReportCmd(a),
		newRetryCmd(a),
		newCancelCmd(a),
		newPromoteCmd(a),
		newDeleteCmd(a),
		newPauseCmd(a, true),
		newPauseCmd(a, false),
		newRolloutsCmd(a),
		newCoolDownCmd(a),
		newDemoCmd(a),
		newTokenCmd(a),
		newVersionCmd(a),
	)
	return root
}
