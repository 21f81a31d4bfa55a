package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/ratebudget"
	"github.com/versori/import-worker/rollout"
)

// statusResult is the --json output of status: rollout.Status, whose first
// six fields are the contract of design.md.
type statusResult = rollout.Status

// newStatus is the status of a rollout's counters.
var newStatus = rollout.NewStatus

type statusCmd struct {
	*app
	watch             bool
	interval, timeout time.Duration
}

func newStatusCmd(a *app) *cobra.Command {
	s := &statusCmd{app: a}
	cmd := &cobra.Command{
		Use:   "status ROLLOUT",
		Short: "Show a rollout's totals by state and outcome class, its rate and ETA",
		Long: `status reads a rollout's counters (never its records, so it answers at once
for any size) and prints the organisations by state and by outcome class, the
rate and the ETA. A rollout is done when nothing is pending or retrying.

--watch redraws a progress bar until the rollout is done (on a terminal; a
line per change otherwise), then prints the status. With --json, --watch
prints only the final status.`,
		Example: `  enqueue status 01JD8Y6Q3C5V0M2T7W9X4Z1B6N
  enqueue status acme-1.4.0 --watch
  enqueue status acme-1.4.0 --json | jq .done`,
		Args: oneRollout,
		RunE: runE(s.run),
	}
	cmd.Flags().BoolVarP(&s.watch, "watch", "w", false, "follow the rollout until it is done")
	cmd.Flags().DurationVar(&s.interval, "interval", time.Second, "how often --watch reads the counters")
	cmd.Flags().DurationVar(&s.timeout, "timeout", 0, "with --watch, give up (exit status 1) if the rollout is not done by then; 0 waits for ever")
	return cmd
}

func (s *statusCmd) run(cmd *cobra.Command, args []string) error {
	if s.interval <= 0 {
		return usageError("--interval must be positive")
	}
	if s.timeout < 0 {
		return usageError("--timeout %s: must not be negative (0 waits for ever)", s.timeout)
	}
	ctx := cmd.Context()
	rdb, led, r, c, err := s.openRollout(ctx, args[0])
	if err != nil {
		return err
	}
	defer rdb.Close()
	if s.queue, err = s.rolloutQueue(r); err != nil {
		return err
	}
	st := newStatus(r, c)
	if s.watch {
		st, err = s.follow(ctx, rdb, led, r.ID, st)
		if err != nil {
			return err
		}
	} else {
		elapsed := s.now().Sub(r.CreatedAt).Seconds()
		if elapsed > 0 {
			st.SetRate(float64(st.Finished()) / elapsed)
		}
	}
	if err := s.manager(rdb).Decorate(ctx, &st, s.queue); err != nil {
		return err
	}
	if s.jsonOut {
		return s.printJSON(st)
	}
	printStatus(s.stdout, st, s.queue, s.now())
	return nil
}

// follow reads the counters every interval until the rollout is done,
// showing progress, and returns the final status.
func (s *statusCmd) follow(ctx context.Context, rdb redis.UniversalClient, led *ledger.Ledger, id string, st statusResult) (statusResult, error) {
	w := watcher{app: s.app, led: led, id: id, interval: s.interval, timeout: s.timeout}
	return w.run(ctx, rdb, st)
}

// watcher follows a rollout until it is done; status --watch and the demo
// share it.
type watcher struct {
	*app
	led      *ledger.Ledger
	id       string
	interval time.Duration
	// timeout bounds the watch; zero means until done or interrupted.
	timeout time.Duration
}

func (w watcher) run(ctx context.Context, rdb redis.UniversalClient, st statusResult) (statusResult, error) {
	var bar *progressbar.ProgressBar
	if !w.jsonOut && w.isTerminal(w.stderr) {
		bar = newBarOn(w.stderr, int(st.Total), "importing")
	}
	start := w.now()
	rate := newRateMeter(start, st.Finished())
	lastLine, lastPrint := "", time.Time{}
	var (
		err      error
		readErr  error // the last failed read of the counters, if the last read failed
		lastWarn time.Time
	)
	for {
		now := w.now()
		st.SetRate(rate.add(now, st.Finished()))
		if bar != nil {
			if int64(bar.GetMax()) != st.Total {
				bar.ChangeMax64(st.Total)
			}
			desc := fmt.Sprintf("ok %7s  failed %6s  retrying %6s", thousands(st.Succeeded), thousands(st.Failed), thousands(st.Retrying))
			if queuePaused(rdb, w.queue) {
				desc = "QUEUE PAUSED  " + desc
			}
			bar.Describe(desc)
			bar.Set64(st.Finished())
		} else if !w.jsonOut {
			// Not a terminal: a log, so a line on change, at most every
			// lineEvery.
			if line := progressLine(st, queuePaused(rdb, w.queue)); line != lastLine && (st.Done || now.Sub(lastPrint) >= lineEvery) {
				fmt.Fprintln(w.stderr, line)
				lastLine, lastPrint = line, now
			}
		}
		if st.Done {
			break
		}
		if w.timeout > 0 && now.Sub(start) > w.timeout {
			err = fmt.Errorf("rollout %s not done after %s", w.id, w.timeout)
			if readErr != nil {
				err = fmt.Errorf("%w (the last read of the counters failed: %v)", err, readErr)
			}
			break
		}
		select {
		case <-ctx.Done():
			err = errors.New("interrupted")
		case <-time.After(w.interval):
		}
		if err != nil {
			break
		}
		r, c, rerr := w.led.Rollout(ctx, w.id)
		switch {
		case rerr == nil:
			st, readErr = newStatus(r, c), nil
			continue
		case ctx.Err() != nil:
			err = errors.New("interrupted")
		case errors.Is(rerr, ledger.ErrRolloutNotFound):
			err = rerr // deleted meanwhile: nothing to wait for
		}
		if err != nil {
			break
		}
		// Redis did not answer (a restart, a failover): keep trying until
		// --timeout, as the worker does, saying so now and then.
		readErr = rerr
		if now := w.now(); now.Sub(lastWarn) >= lineEvery {
			fmt.Fprintf(w.stderr, "reading rollout %s failed, retrying: %s\n", w.id, oneLine(rerr.Error()))
			lastWarn = now
		}
	}
	if bar != nil {
		bar.Finish()
		fmt.Fprintln(w.stderr)
	}
	return st, err
}

// lineEvery spaces the progress lines --watch writes when stderr is not a
// terminal.
const lineEvery = 2 * time.Second

func progressLine(st statusResult, paused bool) string {
	pct := 100.0
	if st.Total > 0 {
		pct = 100 * float64(st.Finished()) / float64(st.Total)
	}
	line := fmt.Sprintf("%5.1f%%  %s/%s finished: %s succeeded, %s failed, %s cancelled; %s pending (%s retrying)",
		pct, thousands(st.Finished()), thousands(st.Total), thousands(st.Succeeded), thousands(st.Failed),
		thousands(st.Cancelled), thousands(st.Pending), thousands(st.Retrying))
	if paused {
		line += "; QUEUE PAUSED"
	}
	return line
}

// rateMeter estimates the recent finishing rate: an exponentially weighted
// average of the rate between reads, so one slow second does not swing the
// ETA.
type rateMeter struct {
	lastT time.Time
	lastN int64
	rate  float64
	seen  bool
}

func newRateMeter(t time.Time, n int64) *rateMeter { return &rateMeter{lastT: t, lastN: n} }

func (m *rateMeter) add(t time.Time, n int64) float64 {
	dt := t.Sub(m.lastT).Seconds()
	if dt < 0.2 {
		return m.rate
	}
	inst := float64(n-m.lastN) / dt
	if inst < 0 {
		inst = 0
	}
	if !m.seen {
		m.rate, m.seen = inst, true
	} else {
		const alpha = 0.3
		m.rate = alpha*inst + (1-alpha)*m.rate
	}
	m.lastT, m.lastN = t, n
	return m.rate
}

// queuePaused reports whether the queue is paused for the fleet.
func queuePaused(rdb redis.UniversalClient, queue string) bool {
	return rollout.New(rdb, rollout.Options{Queue: queue}).QueuePaused(queue)
}

func printStatus(w io.Writer, st statusResult, queue string, now time.Time) {
	state := "in progress"
	if st.Done {
		state = "done"
	}
	fmt.Fprintf(w, "rollout    %s (connector %s, version %s)\n", st.RolloutID, st.ConnectorID, st.Version)
	fmt.Fprintf(w, "created    %s (%s ago)\n", st.CreatedAt.Format("2006-01-02 15:04:05 MST"), humanDuration(now.Sub(st.CreatedAt)))
	row := func(name string, n int64, detail string) {
		if detail != "" {
			detail = "  " + detail
		}
		fmt.Fprintf(w, "%-10s %9s%s\n", name, thousands(n), detail)
	}
	succeeded, failed := rollout.ClassSplit(st.ByClass)
	row("total", st.Total, "")
	row("succeeded", st.Succeeded, classList(succeeded))
	row("failed", st.Failed, classList(failed))
	retrying := ""
	if st.Retrying > 0 {
		retrying = fmt.Sprintf("retrying %s: %s", thousands(st.Retrying), classList(st.RetryingByClass))
	}
	row("pending", st.Pending, retrying)
	row("cancelled", st.Cancelled, "")
	eta := "unknown"
	if st.ETASeconds != nil {
		eta = humanDuration(time.Duration(*st.ETASeconds * float64(time.Second)))
	}
	switch {
	case st.Done:
		fmt.Fprintf(w, "state      %s\n", st.State)
	case st.State == rollout.StateHalted:
		fmt.Fprintf(w, "state      HALTED: %s\n", st.HaltReason)
	case st.State == rollout.StateBaking:
		fmt.Fprintf(w, "state      baking, %.1f organisations/s\n", st.RatePerSecond)
	default:
		fmt.Fprintf(w, "state      %s, %.1f organisations/s, ETA %s\n", state, st.RatePerSecond, eta)
	}
	if st.Waves > 1 {
		fmt.Fprintf(w, "wave       %d of %d, %s of %s organisations released\n", st.Wave, st.Waves, thousands(st.Released), thousands(st.Total))
		if d := st.WaveDetail; d != nil {
			fmt.Fprintf(w, "           this wave: %s failed of %s finished (ratio %.3f, max %s)\n",
				thousands(d.Failed), thousands(d.Finished), d.Ratio, strconv.FormatFloat(d.MaxFailureRatio, 'f', -1, 64))
			if d.Gate != nil && d.Gate.Done > 0 {
				fmt.Fprintf(w, "           gate: %d of %d passes, last %s: %s\n", d.Gate.Passes, d.Gate.Count, d.Gate.Last.Verdict, d.Gate.Last.Reason)
			}
			fmt.Fprintf(w, "next       %s\n", d.Next)
		}
	}
	switch {
	case st.ExpiresAt != nil:
		kept := ""
		if st.RetentionSeconds > 0 {
			kept = fmt.Sprintf("; finished rollouts are kept %s", humanDuration(time.Duration(st.RetentionSeconds)*time.Second))
		}
		fmt.Fprintf(w, "retention  expires %s (in %s%s)\n",
			st.ExpiresAt.Format("2006-01-02 15:04:05 MST"), humanDuration(st.ExpiresAt.Sub(now)), kept)
	case st.RetentionSeconds > 0:
		fmt.Fprintf(w, "retention  kept %s once finished\n", humanDuration(time.Duration(st.RetentionSeconds)*time.Second))
	default:
		fmt.Fprintf(w, "retention  kept for ever (ROLLOUT_RETENTION=off)\n")
	}
	if len(st.ByVersion) > 1 {
		fmt.Fprintf(w, "versions   %s: the rollout straddled a new publication of %q (see the report's version_mismatch column)\n",
			classList(st.ByVersion), st.Version)
	}
	if st.Breaker != "" && st.Breaker != string(ratebudget.BreakerClosed) {
		fmt.Fprintf(w, "breaker    %s: the API fails broadly; tasks wait without using attempts\n", st.Breaker)
	}
	if st.QueuePaused {
		fmt.Fprintf(w, "queue      %s is PAUSED for the whole fleet: nothing runs until `enqueue resume`\n", queue)
	}
	if st.Failed > 0 {
		fmt.Fprintf(w, "next       enqueue report %s --format csv --state failed; enqueue retry %s\n", st.RolloutID, st.RolloutID)
	}
}
