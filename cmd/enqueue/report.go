package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/orglist"
	"github.com/versori/import-worker/versori"
)

// reportColumns are the report's columns: the first seven are the contract
// of design.md, the rest are additions.
var reportColumns = []string{
	"org_id", "state", "class", "http_status", "attempts", "error", "version",
	"version_mismatch", "finished_at", "duration_ms",
}

// reportRow is one organisation in a JSON report.
type reportRow struct {
	OrgID      string `json:"org_id"`
	State      string `json:"state"`
	Class      string `json:"class"`
	HTTPStatus int    `json:"http_status"`
	Attempts   int    `json:"attempts"`
	Error      string `json:"error"`
	Version    string `json:"version"`
	// VersionMismatch is true for a succeeded organisation that got another
	// version than most of the rollout (a "latest" rollout that straddled a
	// new publication).
	VersionMismatch bool   `json:"version_mismatch"`
	FinishedAt      string `json:"finished_at"`
	DurationMS      int64  `json:"duration_ms"`
}

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
	rdb, led, ro, counts, err := r.openRollout(ctx, args[0])
	if err != nil {
		return err
	}
	defer rdb.Close()

	out, commit, err := r.openOutput()
	if err != nil {
		return err
	}
	defer out.Close()
	majority := majorityVersion(counts.ByVersion)
	n, mismatched, err := writeReport(ctx, led, ro.ID, filter, r.format, majority, out)
	if err == nil {
		err = commit()
	}
	if err != nil {
		return err
	}
	if r.output != "" {
		fmt.Fprintf(r.stderr, "wrote %s to %s\n", counted(n, "row"), r.output)
	}
	if mismatched > 0 {
		fmt.Fprintf(r.stderr, "warning: %s got another version than the rollout's usual %q (versions: %s); see the version_mismatch column\n",
			counted(mismatched, "organisation"), majority, classList(counts.ByVersion))
	}
	return nil
}

func parseFilter(states, classes []string) (ledger.Filter, error) {
	var f ledger.Filter
	for _, s := range states {
		st := ledger.State(strings.TrimSpace(s))
		if !st.Valid() {
			return f, usageError("--state %q: want succeeded, failed, pending or cancelled", s)
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
		c = strings.TrimSpace(c)
		if !versori.Class(c).Valid() {
			names := make([]string, 0, len(versori.Classes()))
			for _, k := range versori.Classes() {
				names = append(names, string(k))
			}
			return nil, usageError("--class %q: want one of %s", c, strings.Join(names, ", "))
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

// majorityVersion returns the version most succeeded organisations got, or
// "" when they all got the same one (nothing to flag).
func majorityVersion(byVersion map[string]int64) string {
	if len(byVersion) < 2 {
		return ""
	}
	names := make([]string, 0, len(byVersion))
	for v := range byVersion {
		names = append(names, v)
	}
	sort.Slice(names, func(i, j int) bool {
		if byVersion[names[i]] != byVersion[names[j]] {
			return byVersion[names[i]] > byVersion[names[j]]
		}
		return names[i] < names[j]
	})
	return names[0]
}

// writeReport streams the rollout's records to w and returns the rows
// written and how many were flagged version_mismatch. HSCAN may return a
// record twice; a compact set of the IDs written drops the repeats.
func writeReport(ctx context.Context, led *ledger.Ledger, id string, f ledger.Filter, format, majority string, w io.Writer) (rows, mismatched int, err error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	var cw *csv.Writer
	switch format {
	case "csv":
		cw = csv.NewWriter(bw)
		cw.Write(reportColumns)
	case "json":
		bw.WriteString("[")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	var seen orglist.Set
	err = led.ScanFilter(ctx, id, f, func(rec ledger.Record) error {
		if !seen.Add(rec.OrgID) {
			return nil
		}
		row := toRow(rec, majority)
		if row.VersionMismatch {
			mismatched++
		}
		if format == "csv" {
			if err := cw.Write(row.cells()); err != nil {
				return fmt.Errorf("write report: %w", err)
			}
			rows++
			return nil
		}
		buf.Reset()
		if err := enc.Encode(row); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		if format == "json" {
			if rows > 0 {
				bw.WriteByte(',')
			}
			bw.WriteByte('\n')
			buf.Truncate(buf.Len() - 1) // the encoder's newline
		}
		if _, err := bw.Write(buf.Bytes()); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		rows++
		return nil
	})
	if err != nil {
		return rows, mismatched, err
	}
	switch format {
	case "csv":
		cw.Flush()
		if err := cw.Error(); err != nil {
			return rows, mismatched, fmt.Errorf("write report: %w", err)
		}
	case "json":
		if rows > 0 {
			bw.WriteByte('\n')
		}
		bw.WriteString("]\n")
	}
	if err := bw.Flush(); err != nil {
		return rows, mismatched, fmt.Errorf("write report: %w", err)
	}
	return rows, mismatched, nil
}

func toRow(rec ledger.Record, majority string) reportRow {
	row := reportRow{
		OrgID: rec.OrgID, State: string(rec.State), Class: rec.Class, HTTPStatus: rec.HTTPStatus,
		Attempts: rec.Attempts, Error: rec.Error, Version: rec.Version,
		VersionMismatch: majority != "" && rec.State == ledger.Succeeded && rec.Version != "" && rec.Version != majority,
		DurationMS:      rec.Duration.Milliseconds(),
	}
	if !rec.FinishedAt.IsZero() {
		row.FinishedAt = rec.FinishedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	}
	return row
}

func (r reportRow) cells() []string {
	return []string{
		safeCell(r.OrgID), safeCell(r.State), safeCell(r.Class), strconv.Itoa(r.HTTPStatus), strconv.Itoa(r.Attempts),
		safeCell(r.Error), safeCell(r.Version), strconv.FormatBool(r.VersionMismatch), r.FinishedAt,
		strconv.FormatInt(r.DurationMS, 10),
	}
}

// safeCell defuses a cell a spreadsheet would read as a formula: error
// messages and version names come from the API and may start with one.
func safeCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
