package versori

import (
	"encoding/base64"
	"html"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// fragmentLen is the shortest run of a secret's bytes that is redacted on
// its own: a server that echoes part of the key (cut by a size limit, split
// by a line wrap) must not leak that part.
const fragmentLen = 8

// maxDecodeDepth bounds how many layers of escaping are peeled off (a key
// JSON-escaped inside a percent-encoded string is two).
const maxDecodeDepth = 3

// maxScrubMargin is how far past a cut the text is read and scrubbed
// before cutting, so an encoded key that starts before the cut is seen
// whole: 16 bytes per byte of a 2 KiB key, more than any escaping here
// produces. Longer keys are still redacted by their fragments.
const maxScrubMargin = 32 << 10

// scrubber redacts an API key from text a server sent back. It finds the
// key, and any run of fragmentLen or more of its bytes, as sent and in the
// forms a server or proxy may echo it in: JSON escapes (\/, \uXXXX, also
// PHP's), percent-encoding, HTML entities (each of those nested up to
// maxDecodeDepth deep, in any mix of cases), and base64 (standard or URL
// alphabet, at any alignment, so base64 of "Bearer KEY" is covered). It is
// immutable and safe for concurrent use.
type scrubber struct {
	// grams holds every fragmentLen-byte substring of each secret form
	// at least fragmentLen long.
	grams map[string]struct{}
	// short lists secret forms shorter than fragmentLen, matched whole.
	short []string
	// first marks bytes that can start a gram: a cheap test before the
	// map lookup.
	first [256]bool
}

// newScrubber returns the scrubber for key; an empty key redacts nothing.
func newScrubber(key string) *scrubber {
	s := &scrubber{grams: map[string]struct{}{}}
	if key == "" {
		return s
	}
	add := func(form string) {
		if len(form) < fragmentLen {
			s.short = append(s.short, form)
			return
		}
		for i := 0; i+fragmentLen <= len(form); i++ {
			s.grams[form[i:i+fragmentLen]] = struct{}{}
			s.first[form[i]] = true
		}
	}
	add(key)
	// Base64 at each of the three alignments: keep the characters that
	// depend on the key's bytes alone, which appear in the encoding of any
	// text holding the key at that alignment. Only long forms: short ones
	// would match innocent text.
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for a := 0; a < 3; a++ {
			e := enc.EncodeToString(append(make([]byte, a), key...))
			lo, hi := (8*a+5)/6, 8*(a+len(key))/6
			if hi-lo >= fragmentLen {
				add(e[lo:hi])
			}
		}
	}
	return s
}

// Replace returns s with every found form of the key replaced by
// [REDACTED]; adjacent finds become one marker.
func (sc *scrubber) Replace(s string) string {
	if len(sc.grams) == 0 && len(sc.short) == 0 {
		return s
	}
	var marks []bool // marks[i]: byte i of s is part of the key
	mark := func(lo, hi int) {
		if marks == nil {
			marks = make([]bool, len(s))
		}
		for i := lo; i < hi; i++ {
			marks[i] = true
		}
	}
	v := view{text: []byte(s)}
	for depth := 0; ; depth++ {
		sc.find(v, mark)
		if depth == maxDecodeDepth {
			break
		}
		next, changed := v.decode()
		if !changed {
			break
		}
		v = next
	}
	if marks == nil {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		if !marks[i] {
			b.WriteByte(s[i])
			i++
			continue
		}
		b.WriteString(redacted)
		for i < len(s) && marks[i] {
			i++
		}
	}
	return b.String()
}

// find marks, in original offsets, every secret fragment in v.
func (sc *scrubber) find(v view, mark func(lo, hi int)) {
	t := v.text
	for i := 0; i+fragmentLen <= len(t); i++ {
		if !sc.first[t[i]] {
			continue
		}
		if _, ok := sc.grams[string(t[i:i+fragmentLen])]; ok {
			mark(v.start(i), v.end(i+fragmentLen-1))
		}
	}
	for _, f := range sc.short {
		for off := 0; ; {
			j := strings.Index(string(t[off:]), f)
			if j < 0 {
				break
			}
			mark(v.start(off+j), v.end(off+j+len(f)-1))
			off += j + 1
		}
	}
}

// view is text derived from the original by decoding, with each byte's
// span in the original (nil spans: the original itself).
type view struct {
	text   []byte
	lo, hi []int // byte i of text came from original bytes [lo[i], hi[i])
}

func (v view) start(i int) int {
	if v.lo == nil {
		return i
	}
	return v.lo[i]
}

func (v view) end(i int) int {
	if v.hi == nil {
		return i + 1
	}
	return v.hi[i]
}

// decode peels one layer of escaping: JSON and PHP backslash escapes,
// percent-encoding and HTML character references, wherever they occur. It
// reports whether anything was decoded.
func (v view) decode() (view, bool) {
	t := v.text
	out := view{text: make([]byte, 0, len(t)), lo: make([]int, 0, len(t)), hi: make([]int, 0, len(t))}
	changed := false
	emit := func(b []byte, from, to int) {
		for _, c := range b {
			out.text = append(out.text, c)
			out.lo = append(out.lo, v.start(from))
			out.hi = append(out.hi, v.end(to-1))
		}
	}
	var buf [utf8.UTFMax]byte
	for i := 0; i < len(t); {
		if n, r := decodeAt(t, i); n > 0 {
			changed = true
			k := utf8.EncodeRune(buf[:], r)
			if r < utf8.RuneSelf {
				buf[0], k = byte(r), 1
			}
			emit(buf[:k], i, i+n)
			i += n
			continue
		}
		if n, b := decodeByteAt(t, i); n > 0 {
			changed = true
			emit([]byte{b}, i, i+n)
			i += n
			continue
		}
		emit(t[i:i+1], i, i+1)
		i++
	}
	return out, changed
}

// decodeAt decodes a backslash escape or an HTML character reference at
// t[i:], returning its length (0 if none) and the character it stands for.
func decodeAt(t []byte, i int) (int, rune) {
	switch t[i] {
	case '\\':
		if i+1 >= len(t) {
			return 0, 0
		}
		switch c := t[i+1]; c {
		case 'u':
			r, ok := hex4(t, i+2)
			if !ok {
				return 0, 0
			}
			if utf16.IsSurrogate(r) && i+12 <= len(t) && t[i+6] == '\\' && t[i+7] == 'u' {
				if r2, ok := hex4(t, i+8); ok {
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						return 12, d
					}
				}
			}
			return 6, r
		case 'x':
			if i+3 < len(t) && isHex(t[i+2]) && isHex(t[i+3]) {
				return 4, rune(unhex(t[i+2])<<4 | unhex(t[i+3]))
			}
		case '/', '\\', '"', '\'':
			return 2, rune(c)
		case 'b':
			return 2, '\b'
		case 'f':
			return 2, '\f'
		case 'n':
			return 2, '\n'
		case 'r':
			return 2, '\r'
		case 't':
			return 2, '\t'
		}
	case '&':
		end := -1
		for j := i + 1; j < len(t) && j <= i+32; j++ {
			if t[j] == ';' {
				end = j
				break
			}
		}
		if end < 0 {
			return 0, 0
		}
		ref := string(t[i : end+1])
		u := html.UnescapeString(ref)
		if u == ref {
			return 0, 0
		}
		r, size := utf8.DecodeRuneInString(u)
		if size != len(u) {
			return 0, 0 // an entity standing for several characters: rare, left alone
		}
		return len(ref), r
	}
	return 0, 0
}

// decodeByteAt decodes a percent-encoded byte at t[i:].
func decodeByteAt(t []byte, i int) (int, byte) {
	if t[i] == '%' && i+2 < len(t) && isHex(t[i+1]) && isHex(t[i+2]) {
		return 3, unhex(t[i+1])<<4 | unhex(t[i+2])
	}
	return 0, 0
}

func hex4(t []byte, i int) (rune, bool) {
	if i+4 > len(t) {
		return 0, false
	}
	var r rune
	for _, c := range t[i : i+4] {
		if !isHex(c) {
			return 0, false
		}
		r = r<<4 | rune(unhex(c))
	}
	return r, true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
