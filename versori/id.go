package versori

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// OrgID is an organisation ID in canonical form: a ULID in upper-case
// Crockford base32. ParseOrgID is the one way to make one from outside
// input (a list, a request, a task payload), so a value that came from it
// is known valid and canonical and the ledger, the tasks and the Client do
// not check it again. Converting a string (OrgID(s)) skips the check: it is
// for values already known canonical, such as an ID read back from the
// ledger or a constant in a test. The zero value, "", is no ID.
//
// In JSON and text an OrgID is its string, so payloads and reports holding
// one are unchanged.
type OrgID string

// ConnectorID is a connector ID in canonical form (an upper-case ULID),
// made from outside input by ParseConnectorID; see OrgID.
type ConnectorID string

// String returns the ID.
func (id OrgID) String() string { return string(id) }

// String returns the ID.
func (id ConnectorID) String() string { return string(id) }

// ParseOrgID validates s as an organisation ID (a ULID, ValidateID) and
// returns it in canonical form, upper case, so one organisation spelt in
// any case is one ledger record and one task. The error is an
// *InvalidIDError of kind "organisation ID"; for an ID holding a non-ASCII
// character (a full-width digit looks like a digit) it names that character
// and its position, never a length that counts bytes.
func ParseOrgID(s string) (OrgID, error) {
	id, err := canonicalID("organisation ID", s)
	return OrgID(id), err
}

// ParseConnectorID is ParseOrgID for a connector ID; the error's kind is
// "connector ID".
func ParseConnectorID(s string) (ConnectorID, error) {
	id, err := canonicalID("connector ID", s)
	return ConnectorID(id), err
}

// MustParseOrgID is ParseOrgID for IDs known valid, such as constants in
// examples and tests; it panics on an invalid one.
func MustParseOrgID(s string) OrgID {
	id, err := ParseOrgID(s)
	if err != nil {
		panic(err)
	}
	return id
}

// MustParseConnectorID is ParseConnectorID for IDs known valid; it panics
// on an invalid one.
func MustParseConnectorID(s string) ConnectorID {
	id, err := ParseConnectorID(s)
	if err != nil {
		panic(err)
	}
	return id
}

// canonicalID validates id (ValidateID) and upper-cases it; see ParseOrgID
// for the error.
func canonicalID(kind, id string) (string, error) {
	err := ValidateID(kind, id)
	if err == nil {
		return strings.ToUpper(id), nil
	}
	var ie *InvalidIDError
	if errors.As(err, &ie) && strings.Contains(ie.Problem, "characters long") {
		pos := 0
		for _, r := range id {
			pos++
			if r > unicode.MaxASCII {
				ie.Problem = fmt.Sprintf("character %d (%q) is not Crockford base32 (ASCII letters and digits only)", pos, r)
				break
			}
		}
	}
	return "", err
}
