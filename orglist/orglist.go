// Package orglist reads lists of organisation IDs: the files an operator
// hands to `enqueue --orgs`.
//
// Two formats are read, told apart by the first line that is neither blank
// nor a comment:
//
//   - a plain list: one ID a line;
//   - CSV: a header line holding an organisation_id column (matched without
//     regard to case or surrounding spaces), then one row a line. A first
//     line with a comma, or that is exactly organisation_id, is a header.
//
// In both, blank lines and lines starting with '#' are skipped, surrounding
// whitespace and a leading UTF-8 byte order mark are stripped, and CRLF line
// ends are accepted. A CSV field may be quoted, but may not span lines.
//
// The list is read as a stream, one line at a time, so memory does not grow
// with its length. A value that is not an organisation ID (a ULID) does not
// stop the read: it comes back as an Entry with Err set and its line number,
// so a caller can report every bad line at once. Neither does a line longer
// than Options.MaxLineBytes, which is skipped and reported the same way.
// Only a read error, a CSV header without the organisation_id column, or a
// line that runs on past MinSkipBytes without ending (a binary file,
// /dev/zero), ends the read with an error.
package orglist

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/versori/import-worker/versori"
)

// Column is the CSV column that holds organisation IDs.
const Column = "organisation_id"

// DefaultMaxLineBytes is the default of Options.MaxLineBytes: far longer than
// any sensible CSV row, far shorter than a file that is not a list at all.
const DefaultMaxLineBytes = 64 << 10

// Format is the shape of a list, known once its first line is read.
type Format int

// The formats. Unknown is the format of a list whose lines were all blank or
// comments.
const (
	Unknown Format = iota
	Plain
	CSV
)

func (f Format) String() string {
	switch f {
	case Plain:
		return "plain"
	case CSV:
		return "csv"
	}
	return "unknown"
}

// ErrLineTooLong is wrapped by the Err of an Entry whose line exceeded
// Options.MaxLineBytes, and by the *LineError that ends the read of a line
// that runs on past the skip limit (MinSkipBytes) without a line end.
var ErrLineTooLong = errors.New("line too long")

// MinSkipBytes bounds how much of one over-long line is read and skipped
// (or 16 times Options.MaxLineBytes, when larger): a line that has not ended
// by then (a binary file, /dev/zero) is not a list, and reading on would
// take for ever. Skipping costs no memory, and 64 MiB of input is read in a
// fraction of a second.
const MinSkipBytes = 64 << 20

// LineError ends a read at a line that cannot be skipped.
type LineError struct {
	// Line is the line's number.
	Line int
	// Err wraps ErrLineTooLong.
	Err error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

func (e *LineError) Unwrap() error { return e.Err }

// ErrNoColumn is wrapped by the error of a CSV list whose header has no
// organisation_id column.
var ErrNoColumn = errors.New("CSV header has no " + Column + " column")

// HeaderError reports a CSV header that cannot be used.
type HeaderError struct {
	// Line is the header's line number.
	Line int
	// Columns are the header's column names, as read.
	Columns []string
	// Err says what is wrong: ErrNoColumn, or the CSV syntax error.
	Err error
}

func (e *HeaderError) Error() string {
	if errors.Is(e.Err, ErrNoColumn) {
		names := make([]string, len(e.Columns))
		for i, c := range e.Columns {
			names[i] = quote(c)
		}
		return fmt.Sprintf("line %d: %v (columns: %s)", e.Line, e.Err, strings.Join(names, ", "))
	}
	return fmt.Sprintf("line %d: CSV header: %v", e.Line, e.Err)
}

func (e *HeaderError) Unwrap() error { return e.Err }

// Entry is one organisation ID read from a list, or one line that should
// have held one.
type Entry struct {
	// Line is the 1-based line number.
	Line int
	// ID is the organisation ID, parsed (versori.ParseOrgID: a ULID in
	// upper case), when Err is nil, and empty otherwise.
	ID versori.OrgID
	// Err says why the line holds no valid ID. It is a
	// *versori.InvalidIDError, or wraps ErrLineTooLong or a CSV row error.
	Err error
}

// Options configure a Reader. The zero value is usable.
type Options struct {
	// MaxLineBytes bounds one line; longer lines are skipped and reported.
	// Default DefaultMaxLineBytes.
	MaxLineBytes int
}

// Reader reads entries from a list. It is not safe for concurrent use.
type Reader struct {
	r      *bufio.Reader
	max    int
	line   int
	format Format
	column int // index of the organisation_id column in CSV rows
	eof    bool
	err    error // the *LineError that ended the read, returned again
}

// NewReader returns a Reader reading the list from r. It buffers its own
// reads.
func NewReader(r io.Reader, opts Options) *Reader {
	if opts.MaxLineBytes <= 0 {
		opts.MaxLineBytes = DefaultMaxLineBytes
	}
	return &Reader{r: bufio.NewReaderSize(r, min(opts.MaxLineBytes, 1<<20)+2), max: opts.MaxLineBytes}
}

// Format returns the list's format: Unknown until the first line that is
// neither blank nor a comment has been read.
func (r *Reader) Format() Format { return r.format }

// Next returns the next entry. It returns io.EOF at the end of the list, a
// *HeaderError for a CSV header without the organisation_id column, a
// *LineError for a line that runs on past the skip limit, and the read
// error of the underlying reader; after an error other than an invalid
// entry, the Reader returns the same kind of error again.
func (r *Reader) Next() (Entry, error) {
	for {
		raw, tooLong, err := r.readLine()
		if err != nil {
			return Entry{}, err
		}
		if tooLong {
			return Entry{Line: r.line, Err: fmt.Errorf("%w: more than %d bytes", ErrLineTooLong, r.max)}, nil
		}
		if r.line == 1 {
			raw = bytes.TrimPrefix(raw, []byte("\uFEFF"))
		}
		text := bytes.TrimSpace(raw)
		if len(text) == 0 || text[0] == '#' {
			continue
		}
		if r.format == Unknown {
			if isHeader(text) {
				if err := r.header(string(text)); err != nil {
					return Entry{}, err
				}
				continue
			}
			r.format = Plain
		}
		value := string(text)
		if r.format == CSV {
			fields, err := splitRow(value)
			if err != nil {
				return Entry{Line: r.line, Err: fmt.Errorf("CSV row: %w", err)}, nil
			}
			if r.column >= len(fields) {
				return Entry{Line: r.line, Err: fmt.Errorf("CSV row has %d fields, %s is field %d", len(fields), Column, r.column+1)}, nil
			}
			value = strings.TrimSpace(fields[r.column])
		}
		id, err := versori.ParseOrgID(value)
		if err != nil {
			return Entry{Line: r.line, Err: err}, nil
		}
		return Entry{Line: r.line, ID: id}, nil
	}
}

// readLine returns the next line without its line end. A line longer than
// r.max is consumed whole and reported as too long, so one huge line costs
// at most the buffer, never its length.
func (r *Reader) readLine() (line []byte, tooLong bool, err error) {
	if r.err != nil {
		return nil, false, r.err
	}
	if r.eof {
		return nil, false, io.EOF
	}
	var buf []byte
	skipped := 0
	for {
		chunk, err := r.r.ReadSlice('\n')
		skipped += len(chunk)
		if tooLong && skipped > r.skipLimit() && !bytes.HasSuffix(chunk, []byte("\n")) {
			// Stop here, for good: the rest is not read.
			r.err = &LineError{Line: r.line + 1, Err: fmt.Errorf("%w: more than %d bytes without a line end (not a list of IDs?)", ErrLineTooLong, r.skipLimit())}
			return nil, false, r.err
		}
		if !tooLong {
			// +2: a CRLF line end is not part of the line.
			if len(buf)+len(chunk) > r.max+2 {
				tooLong, buf = true, nil
			} else {
				buf = append(buf, chunk...)
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			r.eof = true
			if len(buf) == 0 && !tooLong {
				return nil, false, io.EOF
			}
		default:
			return nil, false, fmt.Errorf("read line %d: %w", r.line+1, err)
		}
		r.line++
		buf = trimEOL(buf)
		if tooLong || len(buf) > r.max {
			return nil, true, nil
		}
		return buf, false, nil
	}
}

// skipLimit is how much of one line is read before it ends the read.
func (r *Reader) skipLimit() int { return max(MinSkipBytes, 16*r.max) }

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// isHeader reports whether the first line of a list is a CSV header.
func isHeader(line []byte) bool {
	if bytes.IndexByte(line, ',') >= 0 {
		return true
	}
	return strings.EqualFold(strings.Trim(string(line), `" `), Column)
}

func (r *Reader) header(line string) error {
	r.format = CSV
	fields, err := splitRow(line)
	if err != nil {
		return &HeaderError{Line: r.line, Err: err}
	}
	for i, f := range fields {
		if strings.EqualFold(strings.TrimSpace(f), Column) {
			r.column = i
			return nil
		}
	}
	return &HeaderError{Line: r.line, Columns: fields, Err: ErrNoColumn}
}

// splitRow splits one CSV line into fields. Lines without quotes, nearly all
// of them, are split without the csv package's allocations.
func splitRow(line string) ([]string, error) {
	if strings.IndexByte(line, '"') < 0 {
		return strings.Split(line, ","), nil
	}
	cr := csv.NewReader(strings.NewReader(line))
	cr.FieldsPerRecord = -1
	fields, err := cr.Read()
	if err != nil {
		return nil, err
	}
	if _, err := cr.Read(); !errors.Is(err, io.EOF) {
		return nil, errors.New("quoted field spans lines")
	}
	return fields, nil
}

// quote quotes s for an error message, cut to a readable length.
func quote(s string) string {
	const max = 40
	if len(s) > max {
		return fmt.Sprintf("%q…", strings.ToValidUTF8(s[:max], ""))
	}
	return fmt.Sprintf("%q", s)
}
