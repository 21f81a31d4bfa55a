package orglist

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/versori/import-worker/versori"
)

const (
	idA = "01HZY3K8W0V6Q1B2C3D4E5F6G7"
	idB = "01HZY3K8W0V6Q1B2C3D4E5F6G8"
	idC = "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"
)

// got is what a test reads out of a list: the valid IDs with their lines,
// and the lines of the invalid entries.
type got struct {
	ids     []string // "line:ID"
	invalid []int
	format  Format
	err     error
}

func readAll(t *testing.T, r io.Reader, opts Options) got {
	t.Helper()
	var g got
	lr := NewReader(r, opts)
	for {
		e, err := lr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			g.err = err
			break
		}
		if e.Err != nil {
			g.invalid = append(g.invalid, e.Line)
			continue
		}
		g.ids = append(g.ids, fmt.Sprintf("%d:%s", e.Line, e.ID))
	}
	g.format = lr.Format()
	return g
}

func TestReader(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		ids     []string
		invalid []int
		format  Format
	}{
		{name: "empty", in: "", format: Unknown},
		{name: "only comments and blanks", in: "# a list\n\n   \n#" + idA + "\n", format: Unknown},
		{name: "plain", in: idA + "\n" + idB + "\n", ids: []string{"1:" + idA, "2:" + idB}, format: Plain},
		{name: "no final newline", in: idA + "\n" + idB, ids: []string{"1:" + idA, "2:" + idB}, format: Plain},
		{name: "crlf", in: idA + "\r\n" + idB + "\r\n", ids: []string{"1:" + idA, "2:" + idB}, format: Plain},
		{name: "bom", in: "\uFEFF" + idA + "\n", ids: []string{"1:" + idA}, format: Plain},
		{name: "bom then comment", in: "\uFEFF# orgs\n" + idA + "\n", ids: []string{"2:" + idA}, format: Plain},
		{name: "surrounding whitespace", in: "  \t" + idA + " \t\r\n", ids: []string{"1:" + idA}, format: Plain},
		{name: "lower case is canonicalised", in: strings.ToLower(idA) + "\n", ids: []string{"1:" + idA}, format: Plain},
		{name: "comments and blanks keep line numbers", in: "# orgs\n\n" + idA + "\n# x\n" + idB + "\n", ids: []string{"3:" + idA, "5:" + idB}, format: Plain},
		{name: "duplicates are not the reader's business", in: idA + "\n" + idA + "\n", ids: []string{"1:" + idA, "2:" + idA}, format: Plain},
		{name: "nul byte", in: idA + "\n01HZY3K8W0V6Q1B2C3D4E5F6\x00\n", ids: []string{"1:" + idA}, invalid: []int{2}, format: Plain},
		{name: "latin-1", in: "caf\xe9\n" + idA + "\n", ids: []string{"2:" + idA}, invalid: []int{1}, format: Plain},
		{name: "path traversal", in: "../../etc/passwd\n" + idA + "\n", ids: []string{"2:" + idA}, invalid: []int{1}, format: Plain},
		{name: "space inside", in: "01HZY3K8W0V6 Q1B2C3D4E5F6G7\n", invalid: []int{1}, format: Plain},
		{name: "slash inside", in: "01HZY3K8W0V6/1B2C3D4E5F6G7\n", invalid: []int{1}, format: Plain},
		{name: "inline comment is not stripped", in: idA + " # acme\n", invalid: []int{1}, format: Plain},
		{name: "too short", in: "01HZY\n", invalid: []int{1}, format: Plain},
		{name: "overflowing ULID", in: "8ZZZZZZZZZZZZZZZZZZZZZZZZZ\n" + idC + "\n", ids: []string{"2:" + idC}, invalid: []int{1}, format: Plain},
		{name: "letters outside crockford", in: "01HZY3K8W0V6Q1B2C3D4E5F6GU\n", invalid: []int{1}, format: Plain},
		{name: "csv", in: "name,organisation_id\nacme," + idA + "\n\"Smith, Jones\"," + idB + "\n",
			ids: []string{"2:" + idA, "3:" + idB}, format: CSV},
		{name: "csv header only column", in: "organisation_id\n" + idA + "\n", ids: []string{"2:" + idA}, format: CSV},
		{name: "csv header case and spaces", in: " Organisation_ID , name\r\n " + idA + " ,x\r\n", ids: []string{"2:" + idA}, format: CSV},
		{name: "csv quoted header", in: "\"organisation_id\",\"name\"\n\"" + idA + "\",\"a\"\n", ids: []string{"2:" + idA}, format: CSV},
		{name: "csv with bom, comments, blanks", in: "\uFEFF# export\n\norganisation_id,plan\n" + idA + ",gold\n\n# end\n", ids: []string{"4:" + idA}, format: CSV},
		{name: "csv short row", in: "name,organisation_id\nacme\n" + "x," + idA + "\n", ids: []string{"3:" + idA}, invalid: []int{2}, format: CSV},
		{name: "csv empty cell", in: "organisation_id,name\n,acme\n", invalid: []int{2}, format: CSV},
		{name: "csv unterminated quote", in: "organisation_id,name\n\"" + idA + ",acme\n" + idB + ",x\n", ids: []string{"3:" + idB}, invalid: []int{2}, format: CSV},
		{name: "csv bad value", in: "organisation_id\n../../etc/passwd\n", invalid: []int{2}, format: CSV},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := readAll(t, strings.NewReader(tt.in), Options{})
			if g.err != nil {
				t.Fatalf("error: %v", g.err)
			}
			if fmt.Sprint(g.ids) != fmt.Sprint(tt.ids) {
				t.Errorf("ids = %v, want %v", g.ids, tt.ids)
			}
			if fmt.Sprint(g.invalid) != fmt.Sprint(tt.invalid) {
				t.Errorf("invalid lines = %v, want %v", g.invalid, tt.invalid)
			}
			if g.format != tt.format {
				t.Errorf("format = %v, want %v", g.format, tt.format)
			}
			// One byte at a time must read the same.
			g1 := readAll(t, iotest.OneByteReader(strings.NewReader(tt.in)), Options{})
			if fmt.Sprint(g1.ids, g1.invalid) != fmt.Sprint(g.ids, g.invalid) {
				t.Errorf("one byte at a time: %v %v, want %v %v", g1.ids, g1.invalid, g.ids, g.invalid)
			}
		})
	}
}

func TestInvalidEntryErrors(t *testing.T) {
	in := "../../etc/passwd\n" + "a b\n" + "x\x00\n" + "caf\xe9\n"
	r := NewReader(strings.NewReader(in), Options{})
	want := []string{`contains "/"`, "contains whitespace", "control character", "not valid UTF-8"}
	for i, w := range want {
		e, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		var ide *versori.InvalidIDError
		if !errors.As(e.Err, &ide) {
			t.Fatalf("entry %d: err %v is not a *versori.InvalidIDError", i, e.Err)
		}
		if e.Line != i+1 || !strings.Contains(e.Err.Error(), w) || e.ID != "" {
			t.Errorf("entry %d = line %d, id %q, err %q; want line %d and %q", i, e.Line, e.ID, e.Err, i+1, w)
		}
	}
}

func TestCSVWithoutColumn(t *testing.T) {
	for _, in := range []string{
		"name,org_id\nacme," + idA + "\n",
		"# comment\n\nid,name\n",
		"\uFEFForganization_id,name\n" + idA + ",x\n",
	} {
		g := readAll(t, strings.NewReader(in), Options{})
		var he *HeaderError
		if !errors.As(g.err, &he) || !errors.Is(g.err, ErrNoColumn) {
			t.Fatalf("%q: err = %v, want a HeaderError wrapping ErrNoColumn", in, g.err)
		}
		if !strings.Contains(he.Error(), "organisation_id") || !strings.Contains(he.Error(), "line ") {
			t.Errorf("message %q should name the column and the line", he.Error())
		}
		if len(g.ids) != 0 {
			t.Errorf("read %v before the header error", g.ids)
		}
	}
}

func TestLongLines(t *testing.T) {
	huge := strings.Repeat("A", 10<<20)
	in := idA + "\n" + huge + "\n" + idB + "\n" + huge // the last one has no newline
	g := readAll(t, strings.NewReader(in), Options{})
	if g.err != nil {
		t.Fatal(g.err)
	}
	if want := []string{"1:" + idA, "3:" + idB}; fmt.Sprint(g.ids) != fmt.Sprint(want) {
		t.Errorf("ids = %v, want %v", g.ids, want)
	}
	if want := []int{2, 4}; fmt.Sprint(g.invalid) != fmt.Sprint(want) {
		t.Errorf("invalid = %v, want %v", g.invalid, want)
	}

	r := NewReader(strings.NewReader(huge), Options{})
	e, err := r.Next()
	if err != nil || !errors.Is(e.Err, ErrLineTooLong) {
		t.Fatalf("Next = %+v, %v; want ErrLineTooLong", e, err)
	}
}

func TestMaxLineBytesBoundary(t *testing.T) {
	// A line of exactly MaxLineBytes is read, with any line end; one byte
	// more is too long.
	const max = 30
	pad := strings.Repeat(" ", max-len(idA))
	for _, eol := range []string{"", "\n", "\r\n"} {
		g := readAll(t, strings.NewReader(idA+pad+eol), Options{MaxLineBytes: max})
		if len(g.ids) != 1 {
			t.Errorf("eol %q: line of %d bytes: ids %v invalid %v", eol, max, g.ids, g.invalid)
		}
		g = readAll(t, strings.NewReader(idA+pad+" "+eol), Options{MaxLineBytes: max})
		if len(g.ids) != 0 || fmt.Sprint(g.invalid) != "[1]" {
			t.Errorf("eol %q: line of %d bytes: ids %v invalid %v", eol, max+1, g.ids, g.invalid)
		}
	}
}

func TestReadError(t *testing.T) {
	boom := errors.New("disk on fire")
	r := NewReader(io.MultiReader(strings.NewReader(idA+"\n"+idB[:10]), iotest.ErrReader(boom)), Options{})
	if e, err := r.Next(); err != nil || e.ID != idA {
		t.Fatalf("first Next = %+v, %v", e, err)
	}
	if _, err := r.Next(); !errors.Is(err, boom) {
		t.Fatalf("second Next err = %v, want %v", err, boom)
	}
}

func TestStreaming(t *testing.T) {
	// The reader must hand out the first entry without reading the rest:
	// a list piped from another program is consumed as it comes.
	pr, pw := io.Pipe()
	go func() { pw.Write([]byte(idA + "\n")) }()
	r := NewReader(pr, Options{})
	e, err := r.Next()
	if err != nil || e.ID != idA {
		t.Fatalf("Next = %+v, %v", e, err)
	}
	pw.Close()
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after close: %v, want EOF", err)
	}
}

func TestReaderMemoryDoesNotGrowWithLineLength(t *testing.T) {
	// A 64 MiB line must not be buffered: allocations stay near the
	// buffer size whatever the line length.
	allocs := func(n int) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r := NewReader(io.LimitReader(repeatReader('A'), int64(n)), Options{})
		for {
			if _, err := r.Next(); err != nil {
				break
			}
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	small, big := allocs(1<<20), allocs(64<<20)
	if big > 4*small+(1<<20) {
		t.Errorf("allocated %d bytes for a 64 MiB line and %d for a 1 MiB one", big, small)
	}
}

type repeatReaderT byte

func repeatReader(b byte) io.Reader { return repeatReaderT(b) }

func (r repeatReaderT) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

func BenchmarkReader(b *testing.B) {
	var buf bytes.Buffer
	for i := 0; i < 10000; i++ {
		fmt.Fprintf(&buf, "01HZY3K8W0V6Q1B2C3D4E%05d\n", i)
	}
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		r := NewReader(bytes.NewReader(buf.Bytes()), Options{})
		for {
			if _, err := r.Next(); err != nil {
				break
			}
		}
	}
}

func bytesPerMember(n int, ids []string, add func(string)) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, id := range ids[:n] {
		add(id)
	}
	runtime.ReadMemStats(&after)
	return float64(after.TotalAlloc-before.TotalAlloc) / float64(n)
}

// TestEndlessLineEndsTheRead: input with no line end (a binary file,
// /dev/zero) ends the read with an error naming the line once it has run
// past the skip limit, instead of being read for ever; a NUL-filled line
// that does end is an invalid entry.
func TestEndlessLineEndsTheRead(t *testing.T) {
	lr := NewReader(io.MultiReader(strings.NewReader(idA+"\n"), zeros{}), Options{})
	e, err := lr.Next()
	if err != nil || e.ID != idA {
		t.Fatalf("first entry %+v, %v", e, err)
	}
	_, err = lr.Next()
	var le *LineError
	if !errors.As(err, &le) || le.Line != 2 || !errors.Is(err, ErrLineTooLong) || !strings.Contains(err.Error(), "line 2: line too long") {
		t.Fatalf("endless line: %v; want a *LineError on line 2", err)
	}
	if _, again := lr.Next(); !errors.Is(again, ErrLineTooLong) {
		t.Errorf("next call after the error: %v; want the same error", again)
	}

	g := readAll(t, strings.NewReader("\x00\x00\x00\n"+idA+"\n"), Options{})
	if g.err != nil || len(g.invalid) != 1 || g.invalid[0] != 1 || len(g.ids) != 1 || g.ids[0] != "2:"+idA {
		t.Errorf("NUL line: %+v", g)
	}
}

// zeros reads as an endless run of NUL bytes, like /dev/zero.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestReaderCanonicalises(t *testing.T) {
	lr := NewReader(strings.NewReader(strings.ToLower(idA)+"\n"+idA[:25]+"\uff11\n"), Options{})
	e, err := lr.Next()
	if err != nil || e.Err != nil || e.ID != versori.OrgID(idA) {
		t.Errorf("lower-case line: %+v, %v; want %q", e, err, idA)
	}
	e, _ = lr.Next()
	var ie *versori.InvalidIDError
	if !errors.As(e.Err, &ie) || !strings.Contains(e.Err.Error(), "character 26 ('１') is not Crockford base32") || strings.Contains(e.Err.Error(), "characters long") {
		t.Errorf("full-width digit: %v", e.Err)
	}
}
