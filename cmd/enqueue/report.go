package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/versori/import-worker/rollout"
)

// reportRow is one organisation in a report; its columns are
// rollout.Columns, the first seven the contract of design.md.
type reportRow = rollout.Row

type reportCmd struct {
	*app
	format, output string
	states         []string
	classes        []string
}

func newReportCmd(a *app) *cobra.Command {
	r := &reportCmd{app: a}
	cmd := &cobra.Command{
		Use:   "report ROLLOUT --format csv|json",
		Short: "Write one row per organisation: state, class, HTTP status, attempts, error, version",
		Long: `report writes one row per organisation of a rollout, streamed from the
ledger (a report of any size is never held in memory), in no particular order:

  org_id, state, class, http_status, attempts, error, version,
  version_mismatch, finished_at, duration_ms

state is succeeded, failed, pending or cancelled; class is the outcome class
of the last API call (for a pending organisation, of its last failed
attempt). version_mismatch is true for a succeeded organisation that got
another version than most of the rollout: a rollout of "latest" that
straddled a new publication. http_status and attempts are 0 before the
first call.

--format csv writes a header line and RFC 4180 rows; cells starting with
= + - @ or a tab are prefixed with ' so a spreadsheet does not run them.
--format json writes one JSON array of objects; --format ndjson writes one
object a line.`,
		Example: `  enqueue report acme-1.4.0 --format csv --output acme.csv
  enqueue report acme-1.4.0 --format csv --state failed
  enqueue report acme-1.4.0 --format json --state failed --class server_error,exhausted | jq length`,
		Args: oneRollout,
		RunE: runE(r.run),
	}
	f := cmd.Flags()
	f.StringVar(&r.format, "format", "csv", "csv, json (one array) or ndjson (one object a line)")
	f.StringVarP(&r.output, "output", "o", "", "write to this file instead of standard output")
	f.StringSliceVar(&r.states, "state", nil, "only these states: succeeded, failed, pending, cancelled (comma-separated)")
	f.StringSliceVar(&r.classes, "class", nil, "only these outcome classes (comma-separated)")
	return cmd
}

func (r *reportCmd) run(cmd *cobra.Command, args []string) error {
	if cmd.Flags().Changed("json") && !cmd.Flags().Changed("format") {
		r.format = "json"
	}
	switch r.format {
	case "csv", "json", "ndjson":
	default:
		return usageError("--format %q: want csv, json or ndjson", r.format)
	}
	filter, err := parseFilter(r.states, r.classes)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	rdb, _, ro, counts, err := r.openRollout(ctx, args[0])
	if err != nil {
		return err
	}
	defer rdb.Close()

	out, commit, err := r.openOutput()
	if err != nil {
		return err
	}
	defer out.Close()
	rw, err := rollout.NewRowWriter(out, r.format)
	if err != nil {
		return err
	}
	sum, err := r.manager(rdb).Report(ctx, ro.ID, filter, counts.ByVersion, rw.Write)
	if err == nil {
		err = rw.Close()
	}
	if err == nil {
		err = commit()
	}
	if err != nil {
		return err
	}
	n, mismatched, majority := sum.Rows, sum.Mismatched, sum.Majority
	if r.output != "" {
		fmt.Fprintf(r.stderr, "wrote %s to %s\n", counted(n, "row"), r.output)
	}
	if mismatched > 0 {
		fmt.Fprintf(r.stderr, "warning: %s got another version than the rollout's usual %q (versions: %s); see the version_mismatch column\n",
			counted(mismatched, "organisation"), majority, classList(counts.ByVersion))
	}
	return nil
}

func parseFilter(states, classes []string) (rollout.Filter, error) {
	var f rollout.Filter
	for _, s := range states {
		st, err := rollout.ParseState(s)
		if err != nil {
			return f, usageError("--%v", err)
		}
		f.States = append(f.States, st)
	}
	cs, err := parseClasses(classes)
	f.Classes = cs
	return f, err
}

func parseClasses(classes []string) ([]string, error) {
	var out []string
	for _, c := range classes {
		c, err := rollout.ParseClass(c)
		if err != nil {
			return nil, usageError("--%v", err)
		}
		out = append(out, c)
	}
	return out, nil
}

// openOutput returns where the report goes and a commit function. A regular
// file (or a new name) is written under a temporary name and renamed by
// commit, so an interrupted run never leaves a partial report under the name
// asked for. Anything else that can be written (a FIFO, a terminal,
// /dev/null, /dev/stdout) is written in place: renaming over it would
// replace the special file with a regular one, and its reader would get
// nothing. A directory is refused.
func (r *reportCmd) openOutput() (io.WriteCloser, func() error, error) {
	if r.output == "" || r.output == "-" {
		r.output = ""
		return nopWriteCloser{r.stdout}, func() error { return nil }, nil
	}
	fi, err := os.Stat(r.output)
	switch {
	case err == nil && fi.IsDir():
		return nil, nil, usageError("--output %s is a directory; name a file to write the report to", r.output)
	case err == nil && !fi.Mode().IsRegular():
		// O_TRUNC is ignored by devices and FIFOs; no O_CREATE, so a
		// special file removed meanwhile is not recreated as a regular one.
		f, err := os.OpenFile(r.output, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			return nil, nil, usageError("--output: %v", unwrapPath(err))
		}
		commit := func() error {
			if err := f.Close(); err != nil {
				return fmt.Errorf("write %s: %w", r.output, err)
			}
			return nil
		}
		return f, commit, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, nil, usageError("--output: %v", unwrapPath(err))
	}
	f, err := os.CreateTemp(filepath.Dir(r.output), "."+filepath.Base(r.output)+".*")
	if err != nil {
		return nil, nil, usageError("--output: %v", unwrapPath(err))
	}
	commit := func() error {
		if err := f.Close(); err != nil {
			return fmt.Errorf("write %s: %w", r.output, err)
		}
		if err := os.Chmod(f.Name(), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", r.output, err)
		}
		if err := os.Rename(f.Name(), r.output); err != nil {
			return fmt.Errorf("write %s: %w", r.output, err)
		}
		return nil
	}
	return removeOnClose{f}, commit, nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// removeOnClose removes the temporary file unless commit renamed it.
type removeOnClose struct{ *os.File }

func (f removeOnClose) Close() error {
	f.File.Close()
	if _, err := os.Stat(f.Name()); err == nil {
		return os.Remove(f.Name())
	}
	return nil
}

// majorityVersion and safeCell are the report's rules, kept by the rollout
// package.
var (
	majorityVersion = rollout.MajorityVersion
	safeCell        = rollout.SafeCell
)
