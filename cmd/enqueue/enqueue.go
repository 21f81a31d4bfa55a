package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/versori/import-worker/orglist"
	"github.com/versori/import-worker/ratebudget"
	"github.com/versori/import-worker/rollout"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
)

// defaultRateLimit is the fleet's rate limit when neither --rate-limit nor
// IMPORT_RATE_LIMIT says otherwise: the worker's default.
const defaultRateLimit = rollout.DefaultRateLimit

// enqueueCmd is the root command: it enqueues a rollout.
type enqueueCmd struct {
	*app
	connector, version, orgs, rolloutID string
	connectorID                         versori.ConnectorID // --connector, parsed by validateFlags
	dryRun, skipInvalid                 bool
	rateLimit                           string
	concurrency                         int
	release                             waveFlags
}

func (e *enqueueCmd) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&e.connector, "connector", "", "public connector ID (a ULID)")
	f.StringVar(&e.version, "version", "", `connector version name, or "latest" or "default"`)
	f.StringVar(&e.orgs, "orgs", "", "organisation list: a file of one ID a line, a CSV with an organisation_id column, or - for standard input")
	f.StringVar(&e.rolloutID, "rollout", "", "rollout ID (default: a new ULID); re-use one to enqueue only what is missing")
	f.BoolVar(&e.dryRun, "dry-run", false, "validate and count the list and print the ETA; write nothing")
	f.BoolVar(&e.skipInvalid, "skip-invalid", false, "enqueue the valid IDs even when some are invalid")
	f.StringVar(&e.rateLimit, "rate-limit", "", "the fleet's import calls per second, for the ETA (default $IMPORT_RATE_LIMIT or 10)")
	f.IntVar(&e.concurrency, "concurrency", rollout.DefaultEnqueueConcurrency, "enqueue calls in flight at once")
	e.release.flags(cmd)
}

// enqueueResult is the --json output: what the API's POST /v1/rollouts
// answers (rollout.Result, whose first five fields are the contract of
// design.md), and, for a dry run, the ETA at the rate limit.
type enqueueResult struct {
	rollout.Result
	DryRun bool `json:"dry_run,omitempty"`
	// ETASeconds is, for a dry run, how long the fleet needs at RateLimit.
	ETASeconds float64 `json:"eta_seconds,omitempty"`
	RateLimit  float64 `json:"rate_limit,omitempty"`
}

func (e *enqueueCmd) run(cmd *cobra.Command, _ []string) error {
	if cmd.Flags().NFlag() == 0 {
		cmd.SetOut(e.stderr)
		_ = cmd.Usage()
		return usageError("nothing to do: give --connector, --version and --orgs, or a command")
	}
	if err := e.validateFlags(); err != nil {
		return err
	}
	spec, err := e.release.spec(cmd, rollout.Spec{ID: e.rolloutID, ConnectorID: e.connectorID, Version: e.version})
	if err != nil {
		return err
	}
	rate, err := e.rate()
	if err != nil {
		return err
	}
	ctx := cmd.Context()

	// First pass: validate and de-duplicate the whole list before anything
	// is written, spooling the distinct valid IDs to a temporary file. The
	// second pass streams the spool into the queue, so memory holds only
	// the de-duplication set, whatever the length of the list, and a list
	// read from a pipe is read once.
	spool, err := rollout.NewSpool()
	if err != nil {
		return err
	}
	defer spool.Close()
	name, err := e.readList(ctx, spool)
	if err != nil {
		return err
	}
	stats := listStats{unique: spool.Unique, duplicates: spool.Duplicates, invalid: spool.InvalidCount}
	res := enqueueResult{Result: rollout.Result{
		RolloutID: e.rolloutID, Duplicates: stats.duplicates, Invalid: stats.invalid,
		Organisations: stats.unique, ConnectorID: e.connector, Version: e.version,
	}}
	switch {
	case stats.invalid > 0 && !e.skipInvalid:
		if e.jsonOut {
			e.printJSON(res)
		}
		return usageError("%d invalid organisation ID%s in %s (listed above); nothing enqueued: fix the list or pass --skip-invalid",
			stats.invalid, plural(stats.invalid), name)
	case stats.unique == 0 && stats.invalid > 0:
		return usageError("no valid organisations in %s", name)
	case stats.unique == 0:
		return usageError("no organisations in %s (only blank lines or comments)", name)
	}
	spec.ListSize = stats.unique
	if _, err := spec.Plan(); err != nil {
		return usageError("--waves %s: %v", spec.Waves, errors.Unwrap(err))
	}

	if e.dryRun {
		res.DryRun, res.RateLimit = true, rate
		var eta time.Duration
		if rate > 0 {
			eta = time.Duration(float64(stats.unique) / rate * float64(time.Second))
			res.ETASeconds = eta.Seconds()
		}
		if e.jsonOut {
			return e.printJSON(res)
		}
		fmt.Fprintf(e.stdout, "dry run: %s to import (duplicates dropped: %s, invalid IDs skipped: %s)\n",
			counted(stats.unique, "organisation"), thousands(stats.duplicates), thousands(stats.invalid))
		if rate == 0 {
			fmt.Fprintf(e.stdout, "the fleet has no rate limit (0), so the time depends on the workers and the API; nothing was written\n")
			return nil
		}
		fmt.Fprintf(e.stdout, "at the fleet's %s imports/s that takes %s; nothing was written\n",
			strconv.FormatFloat(rate, 'f', -1, 64), about(eta))
		return nil
	}

	rdb, err := e.connect(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	m := rollout.New(rdb, rollout.Options{Queue: e.queue, Concurrency: e.concurrency})
	spec, created, err := m.Create(ctx, spec)
	res.Created = created
	e.rolloutID, res.RolloutID = spec.ID, spec.ID
	if err != nil {
		if errors.Is(err, rollout.ErrMismatch) {
			return usageError("rollout %q already exists for another connector or version; choose another --rollout", e.rolloutID)
		}
		if errors.Is(err, rollout.ErrQueueMismatch) {
			ro, _, rerr := m.Get(ctx, e.rolloutID)
			if rerr == nil {
				return usageError("--queue %s: rollout %q was enqueued on queue %s; re-run it with --queue %s", e.queue, e.rolloutID, ro.Queue, ro.Queue)
			}
			return usageError("--queue %s: rollout %q was enqueued on another queue", e.queue, e.rolloutID)
		}
		return err
	}
	if !e.jsonOut {
		fmt.Fprintf(e.stderr, "rollout %s: enqueuing %s (re-run with --rollout %s to resume if interrupted)\n",
			e.rolloutID, counted(stats.unique, "organisation"), e.rolloutID)
	}

	ids, readErr := spool.IDs()
	bar := e.newBar(stats.unique, "enqueuing")
	sum, err := m.EnqueueIDs(ctx, spec, ids, func(s tasks.Summary) {
		if bar != nil {
			bar.Set(s.Total())
		}
	})
	if bar != nil {
		bar.Finish()
		fmt.Fprintln(e.stderr)
	}
	if err == nil {
		err = *readErr
	}
	res.Enqueued, res.AlreadyEnqueued = sum.Enqueued, sum.AlreadyEnqueued
	if err != nil {
		if ctx.Err() != nil {
			err = errors.New("interrupted")
		}
		return fmt.Errorf("%v after enqueuing %s of %s; re-run the same command with --rollout %s to enqueue the rest",
			err, thousands(sum.Total()), counted(stats.unique, "organisation"), e.rolloutID)
	}
	if e.jsonOut {
		return e.printJSON(res)
	}
	fmt.Fprintln(e.stdout, e.rolloutID)
	fmt.Fprintf(e.stderr, "enqueued: %s, already enqueued: %s, duplicates dropped: %s, invalid IDs skipped: %s\nwatch it with: enqueue status %s --watch\n",
		thousands(sum.Enqueued), thousands(sum.AlreadyEnqueued), thousands(stats.duplicates), thousands(stats.invalid), e.rolloutID)
	return nil
}

func (e *enqueueCmd) validateFlags() error {
	var missing []string
	for _, f := range []struct{ name, v string }{{"--connector", e.connector}, {"--version", e.version}, {"--orgs", e.orgs}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return usageError("missing %s", joinAnd(missing))
	}
	connector, err := versori.ParseConnectorID(e.connector)
	if err != nil {
		return usageError("--connector: %v", err)
	}
	e.connectorID, e.connector = connector, connector.String() // the form the ledger records and prints
	if err := versori.ValidateVersion(e.version); err != nil {
		return usageError("--version: %v", err)
	}
	if e.rolloutID != "" {
		if err := tasks.ValidateRolloutID(e.rolloutID); err != nil {
			return usageError("--rollout: %v", err)
		}
	}
	if e.concurrency < 1 {
		return usageError("--concurrency must be at least 1")
	}
	return nil
}

// rate returns the fleet's rate limit for the ETA.
func (e *enqueueCmd) rate() (float64, error) {
	src, v := "--rate-limit", e.rateLimit
	if v == "" {
		src, v = "IMPORT_RATE_LIMIT", e.getenv("IMPORT_RATE_LIMIT")
	}
	if v == "" {
		return defaultRateLimit, nil
	}
	// The worker's bounds, so the ETA is never computed for a rate the
	// fleet cannot run at; 0 (unlimited) has no ETA.
	r, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(r) || r != 0 && (r < ratebudget.MinLimit || r > ratebudget.MaxLimit) {
		return 0, usageError("%s %q: want a number of calls per second from %v to %v, or 0 (unlimited)", src, v, ratebudget.MinLimit, ratebudget.MaxLimit)
	}
	return r, nil
}

// listStats counts the list's distinct valid IDs, the duplicates dropped
// and the invalid values.
type listStats struct{ unique, duplicates, invalid int }

// readList reads --orgs into spool, reporting each invalid line on stderr,
// and returns the list's name. It stops as soon as ctx is done, however
// slow or endless the input.
func (e *enqueueCmd) readList(ctx context.Context, spool *rollout.Spool) (string, error) {
	lastLine := 0
	src, name, err := e.openList()
	if err != nil {
		return name, err
	}
	defer src.Close()
	lr := orglist.NewReader(newCtxReader(ctx, src), orglist.Options{})
	for {
		ent, err := lr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		var he *orglist.HeaderError
		var le *orglist.LineError
		switch {
		case ctx.Err() != nil:
			return name, fmt.Errorf("interrupted while reading %s (after line %d); nothing was enqueued", name, lastLine)
		case errors.As(err, &he), errors.As(err, &le):
			return name, usageError("%s: %v; nothing was enqueued", name, err)
		case err != nil:
			return name, fmt.Errorf("read %s: %w", name, err)
		}
		lastLine = ent.Line
		if ent.Err != nil {
			spool.AddInvalid(ent.Line, "", ent.Err)
			fmt.Fprintf(e.stderr, "%s:%d: %v\n", name, ent.Line, ent.Err)
			continue
		}
		if _, err := spool.AddID(ent.ID); err != nil {
			return name, err
		}
	}
	return name, nil
}

func (e *enqueueCmd) openList() (io.ReadCloser, string, error) {
	if e.orgs == "-" {
		return io.NopCloser(e.stdin), "stdin", nil
	}
	f, err := os.Open(e.orgs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			return nil, e.orgs, usageError("--orgs: %v", unwrapPath(err))
		}
		return nil, e.orgs, fmt.Errorf("--orgs: %w", err)
	}
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		f.Close()
		return nil, e.orgs, usageError("--orgs: %s is a directory", e.orgs)
	}
	return f, e.orgs, nil
}

// unwrapPath keeps "open FILE: no such file or directory" one clear phrase.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

func (a *app) printJSON(v any) error {
	// One line: scripts read it line by line; jq pretty-prints it.
	enc := json.NewEncoder(a.stdout)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}
