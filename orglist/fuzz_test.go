package orglist

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/versori/import-worker/versori"
)

// FuzzParse checks what any input, however hostile, must give: no panic;
// entries in line order, within the input's lines; every ID a valid,
// canonical ULID that the input holds; no error but a CSV header error; and
// the same result however the input is split into reads.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		idA + "\n" + idB + "\n",
		"\uFEFF# orgs\r\n\r\n" + strings.ToLower(idA) + "\r\n",
		"name,organisation_id\nacme," + idA + "\n\"a,b\"," + idB + "\n",
		"organisation_id\n\"" + idA + "\n",
		"name,org\n",
		"../../etc/passwd\n\x00\ncaf\xe9\n",
		"organisation_id,x\n,\n" + idA + "\n",
		strings.Repeat("A", 300) + "\n" + idA,
	} {
		f.Add([]byte(s), uint16(0))
	}
	f.Fuzz(func(t *testing.T, data []byte, max uint16) {
		opts := Options{MaxLineBytes: int(max % 256)} // small limits reach the long-line path
		lines := bytes.Count(data, []byte("\n")) + 1
		read := func(r io.Reader) (out []Entry, err error) {
			lr := NewReader(r, opts)
			for {
				e, err := lr.Next()
				if errors.Is(err, io.EOF) {
					return out, nil
				}
				if err != nil {
					return out, err
				}
				out = append(out, e)
			}
		}
		entries, err := read(bytes.NewReader(data))
		if err != nil {
			var he *HeaderError
			var le *LineError
			switch {
			case errors.As(err, &he):
				if he.Line < 1 || he.Line > lines {
					t.Fatalf("header error on line %d of %d", he.Line, lines)
				}
			case errors.As(err, &le):
				if le.Line < 1 || le.Line > lines || len(data) <= MinSkipBytes || !errors.Is(err, ErrLineTooLong) {
					t.Fatalf("line error %v on line %d of %d, %d bytes", err, le.Line, lines, len(data))
				}
			default:
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
		}
		upper := bytes.ToUpper(data)
		last := 0
		for _, e := range entries {
			if e.Line <= last || e.Line > lines {
				t.Fatalf("entry on line %d after line %d (input has %d lines)", e.Line, last, lines)
			}
			last = e.Line
			if (e.ID == "") == (e.Err == nil) {
				t.Fatalf("line %d: ID %q with err %v: want exactly one", e.Line, e.ID, e.Err)
			}
			if e.Err != nil {
				continue
			}
			if err := versori.ValidateID("organisation ID", string(e.ID)); err != nil {
				t.Fatalf("line %d: returned ID %q is invalid: %v", e.Line, e.ID, err)
			}
			if string(e.ID) != strings.ToUpper(string(e.ID)) || !bytes.Contains(upper, []byte(e.ID)) {
				t.Fatalf("line %d: ID %q is not canonical or not in the input", e.Line, e.ID)
			}
		}
		slow, slowErr := read(iotest.HalfReader(iotest.OneByteReader(bytes.NewReader(data))))
		if (err == nil) != (slowErr == nil) || len(slow) != len(entries) {
			t.Fatalf("byte-at-a-time read differs: %d entries, err %v; want %d, %v", len(slow), slowErr, len(entries), err)
		}
		for i := range slow {
			if slow[i].Line != entries[i].Line || slow[i].ID != entries[i].ID {
				t.Fatalf("entry %d differs: %+v vs %+v", i, slow[i], entries[i])
			}
		}
	})
}
