package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/versori/import-worker/gate"
	"github.com/versori/import-worker/rollout"
)

// waveFlags are the enqueue command's flags of a rollout's release: waves,
// their gate, and the rollout's weight.
type waveFlags struct {
	waves, ratio        string
	bake                time.Duration
	weight              float64
	gateQuery, gateCond string
	gateCount           int
	gateInterval        time.Duration
}

func (w *waveFlags) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&w.waves, "waves", "", "release in waves: cumulative sizes, counts or percentages of the list, in list order (e.g. 10,10%,100%)")
	f.DurationVar(&w.bake, "bake", 0, "wait after a wave has finished before the next is released")
	f.StringVar(&w.ratio, "max-failure-ratio", "0.05", "a wave's gate: its failed organisations at most this share of its finished ones, or the rollout halts")
	f.Float64Var(&w.weight, "weight", rollout.DefaultWeight, "share of the fleet's rate while other rollouts have work too")
	f.StringVar(&w.gateQuery, "gate-query", "", "also gate each wave on this PromQL instant query, measured against the workers' GATE_PROMETHEUS_URL")
	f.StringVar(&w.gateCond, "gate-condition", "", `the condition every sample of --gate-query must meet, e.g. "< 0.05"`)
	f.IntVar(&w.gateCount, "gate-count", gate.DefaultCount, "passing measurements the gate needs")
	f.DurationVar(&w.gateInterval, "gate-interval", gate.DefaultInterval, "time between two gate measurements")
}

// spec applies the flags to s, checking each: bad values are usage errors.
func (w *waveFlags) spec(cmd *cobra.Command, s rollout.Spec) (rollout.Spec, error) {
	f := cmd.Flags()
	if f.Changed("waves") {
		if _, err := rollout.ParseWaves(w.waves); err != nil {
			return s, usageError("--waves: %v", err)
		}
		s.Waves = w.waves
	}
	if err := rollout.CheckBake(w.bake); err != nil {
		return s, usageError("--bake: %v", err)
	}
	s.Bake = w.bake
	ratio, err := rollout.ParseRatio(w.ratio)
	if err != nil {
		return s, usageError("--max-failure-ratio: %v", err)
	}
	s.MaxFailureRatio = &ratio
	if err := rollout.CheckWeight(w.weight); err != nil {
		return s, usageError("--weight: %v", err)
	}
	s.Weight = w.weight
	switch {
	case w.gateQuery != "":
		g := gate.Spec{Query: w.gateQuery, Condition: w.gateCond, Count: w.gateCount, Interval: gate.Duration(w.gateInterval)}
		if err := g.Validate(); err != nil {
			return s, usageError("--gate-query: %v", err)
		}
		s.Gate = &g
	case w.gateCond != "" || f.Changed("gate-count") || f.Changed("gate-interval"):
		return s, usageError("--gate-condition, --gate-count and --gate-interval need --gate-query")
	}
	if s.Waves == "" && (f.Changed("bake") || f.Changed("max-failure-ratio") || s.Gate != nil) {
		return s, usageError("--bake, --max-failure-ratio and --gate-query act between waves: give --waves too")
	}
	return s, nil
}

type promoteCmd struct{ *app }

func newPromoteCmd(a *app) *cobra.Command {
	c := &promoteCmd{app: a}
	return &cobra.Command{
		Use:   "promote ROLLOUT",
		Short: "Release a rollout's next wave now, skipping the bake and the gate (and lifting a halt)",
		Long: `promote releases the next wave of a rollout created with --waves at once:
the current wave's bake and gate are skipped, and a halted rollout carries
on. A rollout without waves, with no wave left, finished or cancelled cannot
be promoted (exit status 2). To stop a halted rollout instead, cancel it.`,
		Example: `  enqueue promote acme-1.4.0
  enqueue promote acme-1.4.0 --json`,
		Args: oneRollout,
		RunE: runE(c.run),
	}
}

func (c *promoteCmd) run(cmd *cobra.Command, args []string) error {
	ctx := cmd.Context()
	rdb, _, ro, _, err := c.openRollout(ctx, args[0])
	if err != nil {
		return err
	}
	defer rdb.Close()
	st, err := c.manager(rdb).Promote(ctx, ro.ID)
	if err != nil {
		return err
	}
	if c.jsonOut {
		return c.printJSON(st)
	}
	fmt.Fprintf(c.stdout, "rollout %s: wave %d of %d released (%s of %s organisations)\n",
		ro.ID, st.Wave, st.Waves, thousands(st.Released), thousands(st.Total))
	return nil
}
