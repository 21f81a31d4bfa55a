package rollout

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/versori"
)

// Columns are the report's columns: the first seven are the contract of
// design.md, the rest are additions.
var Columns = []string{
	"org_id", "state", "class", "http_status", "attempts", "error", "version",
	"version_mismatch", "finished_at", "duration_ms",
}

// StateUnreleased is the report state of a pending organisation in a wave
// not yet released; it counts as pending in the status.
const StateUnreleased = "unreleased"

// Row is one organisation in a report.
type Row struct {
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

// Filter selects report rows; empty fields select everything.
type Filter = ledger.Filter

// ParseState checks a state name: succeeded, failed, pending or cancelled.
func ParseState(s string) (ledger.State, error) {
	st := ledger.State(strings.TrimSpace(s))
	if !st.Valid() {
		return st, inputErr(fmt.Errorf("state %q: want succeeded, failed, pending or cancelled", s))
	}
	return st, nil
}

// ParseClass checks an outcome class name.
func ParseClass(c string) (string, error) {
	c = strings.TrimSpace(c)
	if !versori.Class(c).Valid() {
		return c, inputErr(fmt.Errorf("class %q: want one of %s", c, strings.Join(ClassNames(), ", ")))
	}
	return c, nil
}

// ClassNames lists the outcome classes.
func ClassNames() []string {
	names := make([]string, 0, len(versori.Classes()))
	for _, k := range versori.Classes() {
		names = append(names, string(k))
	}
	return names
}

// RowWriter writes report rows in one format.
type RowWriter interface {
	// Write writes one row.
	Write(Row) error
	// Close ends the report (a JSON array's closing bracket) and flushes
	// it; it does not close the underlying writer.
	Close() error
}

// Formats of NewRowWriter.
const (
	FormatCSV    = "csv"
	FormatJSON   = "json"
	FormatNDJSON = "ndjson"
)

// NewRowWriter returns a writer of format csv (a header line and RFC 4180
// rows, formula-like cells defused with a leading '), json (one array) or
// ndjson (one object a line).
func NewRowWriter(w io.Writer, format string) (RowWriter, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	switch format {
	case FormatCSV:
		cw := csv.NewWriter(bw)
		if err := cw.Write(Columns); err != nil {
			return nil, err
		}
		return &csvWriter{bw: bw, cw: cw}, nil
	case FormatJSON, FormatNDJSON:
		jw := &jsonWriter{bw: bw, array: format == FormatJSON}
		jw.enc = json.NewEncoder(&jw.buf)
		jw.enc.SetEscapeHTML(false)
		if jw.array {
			bw.WriteString("[")
		}
		return jw, nil
	}
	return nil, inputErr(fmt.Errorf("format %q: want csv, json or ndjson", format))
}

type csvWriter struct {
	bw *bufio.Writer
	cw *csv.Writer
}

func (c *csvWriter) Write(r Row) error {
	if err := c.cw.Write(r.Cells()); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

func (c *csvWriter) Close() error {
	c.cw.Flush()
	if err := c.cw.Error(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := c.bw.Flush(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

type jsonWriter struct {
	bw    *bufio.Writer
	buf   bytes.Buffer
	enc   *json.Encoder
	array bool
	rows  int
}

func (j *jsonWriter) Write(r Row) error {
	j.buf.Reset()
	if err := j.enc.Encode(r); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if j.array {
		if j.rows > 0 {
			j.bw.WriteByte(',')
		}
		j.bw.WriteByte('\n')
		j.buf.Truncate(j.buf.Len() - 1) // the encoder's newline
	}
	if _, err := j.bw.Write(j.buf.Bytes()); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	j.rows++
	return nil
}

func (j *jsonWriter) Close() error {
	if j.array {
		if j.rows > 0 {
			j.bw.WriteByte('\n')
		}
		j.bw.WriteString("]\n")
	}
	if err := j.bw.Flush(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// ReportSummary counts what Report wrote.
type ReportSummary struct {
	Rows int
	// Mismatched counts the rows flagged version_mismatch; Majority is the
	// version most succeeded organisations got ("" when all got the same).
	Mismatched int
	Majority   string
}

// Report streams the rows of rollout id that f selects to fn, in no
// particular order, each organisation once, reading the ledger with HSCAN:
// memory holds a bit per row written (a small set of IDs for records
// without a position, see seenSet), never the rows. byVersion
// is the rollout's Counts.ByVersion (for version_mismatch); nil reads it.
// An error from fn stops the report and is returned.
func (m *Manager) Report(ctx context.Context, id string, f Filter, byVersion map[string]int64, fn func(Row) error) (ReportSummary, error) {
	var sum ReportSummary
	if byVersion == nil {
		_, c, err := m.Get(ctx, id)
		if err != nil {
			return sum, err
		}
		byVersion = c.ByVersion
	}
	sum.Majority = MajorityVersion(byVersion)
	// Organisations held back by a wave not yet released show as such.
	held := int64(-1)
	if pr, err := m.Progress(ctx, id); err == nil && pr.Limit >= 0 && pr.State != StateCancelled {
		held = pr.Limit
	}
	err := report(func(fn func(ledger.Record) error) error { return m.led.ScanFilter(ctx, id, f, fn) }, func(rec ledger.Record) error {
		row := NewRow(rec, sum.Majority)
		if held >= 0 && rec.State == ledger.Pending && rec.Attempts == 0 && rec.Position > held {
			row.State = StateUnreleased
		}
		if row.VersionMismatch {
			sum.Mismatched++
		}
		if err := fn(row); err != nil {
			return err
		}
		sum.Rows++
		return nil
	})
	return sum, err
}

// report calls fn for each record scan yields, each organisation once: the
// duplicates HSCAN may return are dropped (seenSet).
func report(scan func(func(ledger.Record) error) error, fn func(ledger.Record) error) error {
	var seen seenSet
	return scan(func(rec ledger.Record) error {
		if !seen.add(rec) {
			return nil
		}
		return fn(rec)
	})
}

// MajorityVersion returns the version most succeeded organisations got, or
// "" when they all got the same one (nothing to flag).
func MajorityVersion(byVersion map[string]int64) string {
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

// NewRow returns the report row of a ledger record; majority is
// MajorityVersion's answer for the rollout.
func NewRow(rec ledger.Record, majority string) Row {
	row := Row{
		OrgID: rec.OrgID.String(), State: string(rec.State), Class: rec.Class, HTTPStatus: rec.HTTPStatus,
		Attempts: rec.Attempts, Error: rec.Error, Version: rec.Version,
		VersionMismatch: majority != "" && rec.State == ledger.Succeeded && rec.Version != "" && rec.Version != majority,
		DurationMS:      rec.Duration.Milliseconds(),
	}
	if !rec.FinishedAt.IsZero() {
		row.FinishedAt = rec.FinishedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	}
	return row
}

// Cells returns the row's CSV cells, in Columns order.
func (r Row) Cells() []string {
	return []string{
		SafeCell(r.OrgID), SafeCell(r.State), SafeCell(r.Class), strconv.Itoa(r.HTTPStatus), strconv.Itoa(r.Attempts),
		SafeCell(r.Error), SafeCell(r.Version), strconv.FormatBool(r.VersionMismatch), r.FinishedAt,
		strconv.FormatInt(r.DurationMS, 10),
	}
}

// SafeCell defuses a cell a spreadsheet would read as a formula: error
// messages and version names come from the API and may start with one.
func SafeCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
