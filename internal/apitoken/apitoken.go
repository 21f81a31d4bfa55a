// Package apitoken handles the bearer tokens of the HTTP API (cmd/api): the
// token file API_TOKENS_FILE, one token a line as "ROLE SHA256HEX [NAME]"
// ('#' comments and blank lines ignored), where SHA256HEX is the lower-case
// hex SHA-256 of the token. The plain token is never stored; `enqueue token`
// prints a new one with its line.
package apitoken

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Role is what a token may do.
type Role string

const (
	// Reader may read rollouts, reports and the OpenAPI document.
	Reader Role = "reader"
	// Operator may also create, retry, cancel and delete rollouts and
	// pause or resume the queue.
	Operator Role = "operator"
)

// Valid reports whether r is reader or operator.
func (r Role) Valid() bool { return r == Reader || r == Operator }

// Prefix starts every generated token, so a leaked one is recognisable by
// secret scanners.
const Prefix = "vit_"

// Entry is one line of the token file.
type Entry struct {
	Role Role
	// Hash is the SHA-256 of the token.
	Hash [sha256.Size]byte
	// Name labels the token in logs; never the token.
	Name string
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// Generate returns a new random token (32 random bytes, URL-safe base64,
// with Prefix).
func Generate() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return Prefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// Hash returns the lower-case hex SHA-256 of token.
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Line returns the token file line of a token.
func Line(role Role, token, name string) string {
	l := string(role) + " " + Hash(token)
	if name != "" {
		l += " " + name
	}
	return l
}

// ValidateName checks a token name: 1 to 64 letters, digits, '.', '_', '@'
// or '-'.
func ValidateName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("token name %q: want 1-64 letters, digits, '.', '_', '@' or '-'", name)
	}
	return nil
}

// MaxEntries bounds the token file.
const MaxEntries = 10000

// Parse reads a token file. Every problem names its line.
func Parse(r io.Reader) ([]Entry, error) {
	var out []Entry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 4096)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 || len(f) > 3 {
			return nil, fmt.Errorf("line %d: want ROLE SHA256HEX [NAME]", n)
		}
		e := Entry{Role: Role(f[0])}
		if !e.Role.Valid() {
			return nil, fmt.Errorf("line %d: role %q: want reader or operator", n, f[0])
		}
		if len(f[1]) != 2*sha256.Size || strings.ToLower(f[1]) != f[1] {
			return nil, fmt.Errorf("line %d: want the lower-case hex SHA-256 of the token (64 characters), not the token itself", n)
		}
		if _, err := hex.Decode(e.Hash[:], []byte(f[1])); err != nil {
			return nil, fmt.Errorf("line %d: SHA256HEX: %v", n, err)
		}
		if len(f) == 3 {
			if err := ValidateName(f[2]); err != nil {
				return nil, fmt.Errorf("line %d: %v", n, err)
			}
			e.Name = f[2]
		} else {
			e.Name = fmt.Sprintf("line-%d", n)
		}
		out = append(out, e)
		if len(out) > MaxEntries {
			return nil, fmt.Errorf("more than %d tokens", MaxEntries)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %v", n+1, err)
	}
	return out, nil
}

// Set looks tokens up in constant time.
type Set struct{ entries []Entry }

// NewSet returns the set of entries.
func NewSet(entries []Entry) *Set { return &Set{entries: entries} }

// Len is the number of tokens.
func (s *Set) Len() int { return len(s.entries) }

// Lookup returns the entry of token. It hashes the token and compares the
// hash with every entry's with crypto/subtle, so its time depends on
// neither the token nor which entry matches.
func (s *Set) Lookup(token string) (Entry, bool) {
	return s.LookupHash(sha256.Sum256([]byte(token)))
}
