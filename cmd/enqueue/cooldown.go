package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/versori/import-worker/ratebudget"
)

// fleetState is the --json output of cooldown.
type fleetState struct {
	Queue string `json:"queue"`
	Key   string `json:"key"`
	// FleetRate is the rate the fleet may call at now, in calls per second
	// (0 until a worker has booked a call).
	FleetRate float64 `json:"fleet_rate"`
	// Ceiling is IMPORT_RATE_LIMIT of the worker that booked last.
	Ceiling float64 `json:"ceiling"`
	// Accepted is the highest rate the API was recently seen to accept.
	Accepted float64 `json:"accepted_rate"`
	// Breaker is closed, open or half_open.
	Breaker string `json:"breaker"`
	// CoolDownSeconds is the fleet's cool-down left.
	CoolDownSeconds float64 `json:"cooldown_seconds"`
	// Cleared is the cool-down --clear ended, in seconds.
	Cleared float64 `json:"cleared_seconds,omitempty"`
}

func newCoolDownCmd(a *app) *cobra.Command {
	var clear, closeBreaker bool
	cmd := &cobra.Command{
		Use:   "cooldown",
		Short: "Show the fleet's rate, cool-down and breaker; clear a cool-down",
		Long: `cooldown shows the state the workers of a queue share in Redis: the rate they
may call at now (learned below IMPORT_RATE_LIMIT), the cool-down after a
429 with a long Retry-After, and the circuit breaker. --clear ends the
cool-down at once (a broken proxy asking for a day, capped at 10 minutes);
--close-breaker also closes an open breaker.`,
		Example: "  enqueue cooldown\n  enqueue cooldown --clear --queue imports-staging\n  enqueue cooldown --clear --close-breaker --json",
		Args:    cobra.NoArgs,
	}
	cmd.Flags().BoolVar(&clear, "clear", false, "end the fleet's cool-down now")
	cmd.Flags().BoolVar(&closeBreaker, "close-breaker", false, "with --clear, also close the circuit breaker")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		if closeBreaker && !clear {
			return usageError("--close-breaker needs --clear")
		}
		ctx := cmd.Context()
		rdb, err := a.connect(ctx)
		if err != nil {
			return err
		}
		defer rdb.Close()
		key := a.manager(rdb).RateKey(a.queue)
		res := fleetState{Queue: a.queue, Key: key}
		if clear {
			left, err := ratebudget.ClearCoolDown(ctx, rdb, key, closeBreaker)
			if err != nil {
				return err
			}
			res.Cleared = left.Seconds()
		}
		st, err := ratebudget.Inspect(ctx, rdb, key)
		if err != nil {
			return err
		}
		res.FleetRate, res.Ceiling, res.Accepted = st.Rate, st.Ceiling, st.Accepted
		res.Breaker, res.CoolDownSeconds = string(st.Breaker), st.CoolDown.Seconds()
		if a.jsonOut {
			return a.printJSON(res)
		}
		if clear {
			fmt.Fprintf(a.stdout, "cleared    %s of cool-down\n", humanDuration(time.Duration(res.Cleared*float64(time.Second))))
		}
		if st.Ceiling == 0 {
			fmt.Fprintf(a.stdout, "fleet      queue %s (key %s): no worker has booked a call yet\n", a.queue, key)
			return nil
		}
		fmt.Fprintf(a.stdout, "fleet      queue %s (key %s)\n", a.queue, key)
		fmt.Fprintf(a.stdout, "rate       %.2f calls/s of a ceiling of %.2f (API accepted up to %.2f)\n", st.Rate, st.Ceiling, st.Accepted)
		fmt.Fprintf(a.stdout, "breaker    %s\n", st.Breaker)
		if st.CoolDown > 0 {
			fmt.Fprintf(a.stdout, "cool-down  %s left; end it with: enqueue cooldown --clear\n", humanDuration(st.CoolDown))
		} else {
			fmt.Fprintf(a.stdout, "cool-down  none\n")
		}
		return nil
	})
	return cmd
}
