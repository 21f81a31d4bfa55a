package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/ratebudget"
	"github.com/versori/import-worker/versori"
)

// statusResult is the --json output of status; the first six fields are
// the contract of design.md.
type statusResult struct {
	RolloutID string `json:"rollout_id"`
	Total     int64  `json:"total"`
	Pending   int64  `json:"pending"`
	Succeeded int64  `json:"succeeded"`
	Failed    int64  `json:"failed"`
	// Done is true when nothing is pending or retrying.
	Done      bool  `json:"done"`
	Cancelled int64 `json:"cancelled"`
	// Retrying is the part of Pending that has had a failed attempt.
	Retrying        int64            `json:"retrying"`
	ByClass         map[string]int64 `json:"by_class"`
	RetryingByClass map[string]int64 `json:"retrying_by_class"`
	// ByVersion counts succeeded organisations by the version the API
	// imported; more than one key means the rollout straddled a new
	// publication.
	ByVersion   map[string]int64 `json:"by_version"`
	ConnectorID string           `json:"connector_id"`
	Version     string           `json:"version"`
	CreatedAt   time.Time        `json:"created_at"`
	// QueuePaused is true while the queue is paused for the fleet (after a
	// 401, or by an operator): nothing progresses until it is resumed.
	QueuePaused bool `json:"queue_paused"`
	// RatePerSecond is organisations finished per second: the average since
	// the rollout was created, or, with --watch, the recent rate.
	RatePerSecond float64 `json:"rate_per_second"`
	// ETASeconds is the time left at that rate; absent when unknown.
	ETASeconds *float64 `json:"eta_seconds,omitempty"`
	// FleetRate is the import calls per second the fleet serving the
	// rollout's queue is allowed now (0 until a worker has booked a call);
	// Breaker is its circuit breaker: closed, open or half_open.
	FleetRate float64 `json:"fleet_rate"`
	Breaker   string  `json:"breaker"`
}

func (s statusResult) finished() int64 { return s.Succeeded + s.Failed + s.Cancelled }

func newStatus(r ledger.Rollout, c ledger.Counts) statusResult {
	return statusResult{
		RolloutID: r.ID, Total: c.Total, Pending: c.Pending, Succeeded: c.Succeeded, Failed: c.Failed,
		Done: c.Done(), Cancelled: c.Cancelled, Retrying: c.Retrying,
		ByClass: c.ByClass, RetryingByClass: c.RetryingByClass, ByVersion: c.ByVersion,
		ConnectorID: r.ConnectorID, Version: r.Version, CreatedAt: r.CreatedAt.UTC(),
	}
}

// setRate sets the rate and the ETA from a rate in organisations a second.
func (s *statusResult) setRate(rate float64) {
	s.RatePerSecond = rate
	s.ETASeconds = nil
	switch {
	case s.Done:
		zero := 0.0
		s.ETASeconds = &zero
	case rate > 0:
		eta := float64(s.Pending) / rate
		s.ETASeconds = &eta
	}
}

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
			st.setRate(float64(st.finished()) / elapsed)
		}
	}
	st.QueuePaused = queuePaused(rdb, s.queue)
	st.Breaker = string(ratebudget.BreakerClosed)
	if fs, err := ratebudget.Inspect(ctx, rdb, s.rateKey(s.queue)); err == nil {
		st.FleetRate, st.Breaker = fs.Rate, string(fs.Breaker)
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
	rate := newRateMeter(start, st.finished())
	lastLine, lastPrint := "", time.Time{}
	var (
		err      error
		readErr  error // the last failed read of the counters, if the last read failed
		lastWarn time.Time
	)
	for {
		now := w.now()
		st.setRate(rate.add(now, st.finished()))
		if bar != nil {
			if int64(bar.GetMax()) != st.Total {
				bar.ChangeMax64(st.Total)
			}
			desc := fmt.Sprintf("ok %7s  failed %6s  retrying %6s", thousands(st.Succeeded), thousands(st.Failed), thousands(st.Retrying))
			if queuePaused(rdb, w.queue) {
				desc = "QUEUE PAUSED  " + desc
			}
			bar.Describe(desc)
			bar.Set64(st.finished())
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
		pct = 100 * float64(st.finished()) / float64(st.Total)
	}
	line := fmt.Sprintf("%5.1f%%  %s/%s finished: %s succeeded, %s failed, %s cancelled; %s pending (%s retrying)",
		pct, thousands(st.finished()), thousands(st.Total), thousands(st.Succeeded), thousands(st.Failed),
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

// queuePaused reports whether the queue is paused for the fleet. A queue
// asynq does not know yet cannot be paused for anyone.
func queuePaused(rdb redis.UniversalClient, queue string) bool {
	qi, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo(queue)
	return err == nil && qi.Paused
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
	split := splitClasses(st.ByClass)
	row("total", st.Total, "")
	row("succeeded", st.Succeeded, classList(split.succeeded))
	row("failed", st.Failed, classList(split.failed))
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
	if st.Done {
		fmt.Fprintf(w, "state      done\n")
	} else {
		fmt.Fprintf(w, "state      %s, %.1f organisations/s, ETA %s\n", state, st.RatePerSecond, eta)
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

type classSplit struct{ succeeded, failed map[string]int64 }

// splitClasses separates the succeeded classes from the failed ones; the
// ledger counts both in one map.
func splitClasses(m map[string]int64) classSplit {
	s := classSplit{succeeded: map[string]int64{}, failed: map[string]int64{}}
	for k, v := range m {
		if versori.Class(k).Succeeded() {
			s.succeeded[k] = v
		} else {
			s.failed[k] = v
		}
	}
	return s
}
