package ledger

import (
	"cmp"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/versori/import-worker/versori"
)

// State is where an organisation stands in a rollout.
type State string

// The states of a record. Succeeded is final; see the package documentation
// for the transitions between the others.
const (
	Pending   State = "pending"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Cancelled State = "cancelled"
)

// Valid reports whether s is one of the four states.
func (s State) Valid() bool {
	switch s {
	case Pending, Succeeded, Failed, Cancelled:
		return true
	}
	return false
}

// Record is one organisation's entry in a rollout.
type Record struct {
	// OrgID is the organisation, as the ledger holds it (the hash field).
	OrgID versori.OrgID
	State State
	// Class is the outcome class of the last API call (design.md's
	// vocabulary). A pending record keeps the class of its last failed
	// attempt while it is retried.
	Class      string
	HTTPStatus int
	// Attempts counts the API calls recorded for the organisation.
	Attempts int
	// Error is the last error message, trimmed and made printable.
	Error string
	// ConnectorID and Version are what the API returned on success; Version
	// may differ from the rollout's when it asked for "latest". The import
	// handler records ConnectorID only when it is not the rollout's own
	// (empty: the connector asked for), which spares every record 33
	// bytes.
	ConnectorID string
	Version     string
	// Duration is how long the last API call took.
	Duration time.Duration
	// FinishedAt is when the record reached succeeded, failed or cancelled;
	// zero while pending.
	FinishedAt time.Time
	// UpdatedAt is when the record last changed (its FinishedAt once
	// finished).
	UpdatedAt time.Time
	// Position is the record's place (1-based) in its rollout's release
	// order, for a rollout released from a backlog (Enlist): dense, and
	// fixed for the record's life, so a reader can tell records apart by
	// it. 0 for a record added by AddOrgs or Register, and for one that
	// finished before finished records kept their position.
	Position int64
}

// Retrying reports whether the record is pending after at least one attempt.
func (r Record) Retrying() bool { return r.State == Pending && r.Attempts > 0 }

// wireRecord is the stored JSON form of a Record; see the package
// documentation. The organisation ID is the hash field, not part of the value.
type wireRecord struct {
	S  State  `json:"s"`
	C  string `json:"c,omitempty"`
	H  int    `json:"h,omitempty"`
	A  int    `json:"a,omitempty"`
	E  string `json:"e,omitempty"`
	CI string `json:"ci,omitempty"`
	V  string `json:"v,omitempty"`
	D  int64  `json:"d,omitempty"`
	F  int64  `json:"f,omitempty"`
	U  int64  `json:"u,omitempty"`
	Q  int64  `json:"q,omitempty"`
}

func decodeRecord(orgID, raw string) (Record, error) {
	var w wireRecord
	if err := json.Unmarshal([]byte(raw), &w); err != nil {
		return Record{}, fmt.Errorf("ledger: decode record of organisation %q: %w", orgID, err)
	}
	return Record{
		OrgID:       versori.OrgID(orgID),
		State:       w.S,
		Class:       w.C,
		HTTPStatus:  w.H,
		Attempts:    w.A,
		Error:       w.E,
		ConnectorID: w.CI,
		Version:     w.V,
		Duration:    time.Duration(w.D) * time.Microsecond,
		FinishedAt:  fromMillis(w.F),
		UpdatedAt:   fromMillis(cmp.Or(w.U, w.F)),
		Position:    w.Q,
	}, nil
}

func pendingRecord(now time.Time) string {
	b, err := json.Marshal(wireRecord{S: Pending, U: now.UnixMilli()})
	if err != nil {
		// A struct of strings and integers always marshals.
		panic(err)
	}
	return string(b)
}

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// Limits on what goes into a record or a key. IDs longer than maxIDLen are
// refused rather than trimmed, because a trimmed ID names something else.
const (
	maxIDLen    = 200
	maxClassLen = 64
	// maxAPIFieldLen bounds the connector ID and version name the API
	// returned; they are trimmed like error messages.
	maxAPIFieldLen = 256
	// DefaultMaxErrorLen is the default of Options.MaxErrorLen.
	DefaultMaxErrorLen = 512
)

// checkID refuses rollout IDs that are empty, too long, not UTF-8 or hold
// control characters, whitespace or braces (they become the hash tag of the
// rollout's keys).
func checkID(kind, id string, rollout bool) error {
	switch {
	case id == "":
		return fmt.Errorf("ledger: empty %s ID: %w", kind, ErrInvalidID)
	case len(id) > maxIDLen:
		return fmt.Errorf("ledger: %s ID of %d bytes exceeds %d: %w", kind, len(id), maxIDLen, ErrInvalidID)
	case !utf8.ValidString(id):
		return fmt.Errorf("ledger: %s ID %q is not valid UTF-8: %w", kind, id, ErrInvalidID)
	}
	for _, r := range id {
		if unicode.IsControl(r) || (rollout && (r == '{' || r == '}' || unicode.IsSpace(r))) {
			return fmt.Errorf("ledger: %s ID %q holds character %q: %w", kind, id, r, ErrInvalidID)
		}
	}
	return nil
}

// checkOrg refuses the zero organisation ID. A parsed one
// (versori.ParseOrgID) is valid and canonical, and is not checked again.
func checkOrg(id versori.OrgID) error {
	if id == "" {
		return fmt.Errorf("ledger: empty organisation ID: %w", ErrInvalidID)
	}
	return nil
}

func checkClass(class string) error {
	if len(class) > maxClassLen {
		return fmt.Errorf("ledger: class of %d bytes exceeds %d: %w", len(class), maxClassLen, ErrInvalidClass)
	}
	return nil
}

// sanitize makes s fit for a record and a report: invalid UTF-8 becomes
// U+FFFD, control characters (newlines included) become spaces, runs of
// spaces collapse, and the result is cut at a rune boundary to at most max
// bytes, ending in "…" when something was cut.
func sanitize(s string, max int) string {
	if max <= 0 {
		return ""
	}
	var b strings.Builder
	b.Grow(min(len(s), max))
	space := false
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			if !space && b.Len() > 0 {
				space = true
			}
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
		if b.Len() > max {
			break
		}
	}
	out := b.String()
	if len(out) <= max {
		return out
	}
	const ellipsis = "…"
	cut := max - len(ellipsis)
	if cut < 0 {
		cut = max
	}
	for cut > 0 && !utf8.RuneStart(out[cut]) {
		cut--
	}
	// A cut can land just after a collapsed space: drop it, or the stored
	// text would end in one.
	out = strings.TrimRight(out[:cut], " ")
	if len(out)+len(ellipsis) <= max {
		out += ellipsis
	}
	return out
}
