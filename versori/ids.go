package versori

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxIDBytes is the longest ID or version name accepted before any check of
// its shape, so a hostile input is refused cheaply and never echoed in full.
const MaxIDBytes = 128

// ulidLen is the length of a ULID in Crockford base32.
const ulidLen = 26

// InvalidIDError reports an organisation ID, connector ID or version name
// refused before any request was sent. Classify maps it to ClassInvalid.
type InvalidIDError struct {
	// Kind names what was checked, e.g. "organisation ID".
	Kind string
	// ID is the refused value, truncated and quoted safely for logs.
	ID string
	// Problem says what is wrong with it.
	Problem string
}

func (e *InvalidIDError) Error() string {
	return fmt.Sprintf("invalid %s %s: %s", e.Kind, e.ID, e.Problem)
}

// ValidateID checks that id is a ULID: 26 characters of Crockford base32,
// first character 0-7 (larger values overflow 128 bits). Letters are
// accepted in either case, as ULID parsers do; I, L, O and U are not part of
// the alphabet and are refused rather than silently read as 1, 1, 0 and V,
// because an ID that needs correcting is more likely a typo than a ULID.
//
// Values that could change the request path (/, ..), whitespace, control
// characters, and anything over MaxIDBytes are refused first, with an error
// saying so, before the shape is checked. kind names the value in the error,
// e.g. "organisation ID".
func ValidateID(kind, id string) error {
	if p := unsafeProblem(id); p != "" {
		return &InvalidIDError{Kind: kind, ID: quoteID(id), Problem: p}
	}
	// Characters first: a full-width digit is three bytes, and "is 28
	// bytes long" would hide the one wrong character of 26.
	n := 0
	for _, r := range id {
		n++
		if r > 0x7f || !isCrockford(byte(r)) {
			return &InvalidIDError{Kind: kind, ID: quoteID(id), Problem: fmt.Sprintf("character %d (%q) is not Crockford base32", n, r)}
		}
	}
	if n != ulidLen {
		return &InvalidIDError{Kind: kind, ID: quoteID(id), Problem: fmt.Sprintf("is %d characters long, a ULID has %d", n, ulidLen)}
	}
	if id[0] > '7' {
		return &InvalidIDError{Kind: kind, ID: quoteID(id), Problem: "first character must be 0-7 (the value overflows 128 bits)"}
	}
	return nil
}

// ValidateVersion checks a connector version name. Any name is allowed by
// the API and is path-escaped, but a name that could still change the path
// after a gateway unescapes it (containing / or \, or exactly . or ..), one
// with control characters or surrounding whitespace, an empty one, and one
// over MaxIDBytes are refused.
func ValidateVersion(version string) error {
	const kind = "version name"
	switch {
	case version == "":
		return &InvalidIDError{Kind: kind, ID: `""`, Problem: "is empty"}
	case len(version) > MaxIDBytes:
		return &InvalidIDError{Kind: kind, ID: quoteID(version), Problem: fmt.Sprintf("is %d bytes long, at most %d allowed", len(version), MaxIDBytes)}
	case !utf8.ValidString(version):
		return &InvalidIDError{Kind: kind, ID: quoteID(version), Problem: "is not valid UTF-8"}
	case version == "." || version == "..":
		return &InvalidIDError{Kind: kind, ID: quoteID(version), Problem: "is a relative path element"}
	case strings.ContainsAny(version, `/\`):
		return &InvalidIDError{Kind: kind, ID: quoteID(version), Problem: `contains a path separator (/ or \)`}
	case strings.TrimSpace(version) != version:
		return &InvalidIDError{Kind: kind, ID: quoteID(version), Problem: "has leading or trailing whitespace"}
	}
	for _, r := range version {
		if unicode.IsControl(r) {
			return &InvalidIDError{Kind: kind, ID: quoteID(version), Problem: "contains a control character"}
		}
	}
	return nil
}

// unsafeProblem names the first reason id must not go near a URL, or "".
func unsafeProblem(id string) string {
	switch {
	case id == "":
		return "is empty"
	case len(id) > MaxIDBytes:
		return fmt.Sprintf("is %d bytes long, at most %d allowed", len(id), MaxIDBytes)
	case strings.Contains(id, "/"):
		return `contains "/"`
	case strings.Contains(id, ".."):
		return `contains ".."`
	}
	for _, r := range id {
		switch {
		case r == utf8.RuneError:
			return "is not valid UTF-8"
		case unicode.IsControl(r):
			return "contains a control character"
		case unicode.IsSpace(r):
			return "contains whitespace"
		}
	}
	return ""
}

func isCrockford(c byte) bool {
	switch {
	case c >= '0' && c <= '9':
		return true
	case c >= 'a' && c <= 'z':
		c -= 'a' - 'A'
	}
	return c >= 'A' && c <= 'Z' && c != 'I' && c != 'L' && c != 'O' && c != 'U'
}

// quoteID quotes an ID for an error message, cut to a readable length.
func quoteID(id string) string {
	// At most 40 bytes of the ID, and at most 80 of its quoted form: a byte
	// that is not UTF-8 quotes as four ("\xf5"), so 40 such bytes alone
	// would make a 160-byte message.
	const max, maxQuoted = 40, 80
	cut := len(id)
	if cut > max {
		cut = max
	}
	for {
		for cut > 0 && cut < len(id) && !utf8.RuneStart(id[cut]) {
			cut--
		}
		q := strconv.Quote(id[:cut])
		if cut == len(id) && len(q) <= maxQuoted {
			return q
		}
		if len(q) <= maxQuoted {
			return q + "…"
		}
		cut--
	}
}
