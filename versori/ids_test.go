package versori_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"

	"github.com/versori/import-worker/versori"
)

func TestValidateID(t *testing.T) {
	tests := []struct {
		id      string
		problem string // substring of the error; "" means valid
	}{
		{"01J8Z3K4M5N6P7Q8R9S0T1V2W3", ""},
		{"01j8z3k4m5n6p7q8r9s0t1v2w3", ""}, // Crockford decoding is case-insensitive
		{"7ZZZZZZZZZZZZZZZZZZZZZZZZZ", ""}, // the largest ULID
		{"00000000000000000000000000", ""},
		{"", "is empty"},
		{"8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "overflows"},
		{"01J8Z3K4M5N6P7Q8R9S0T1V2W", "is 25 characters long"},
		{"01J8Z3K4M5N6P7Q8R9S0T1V2W34", "is 27 characters long"},
		{"01J8Z3K4M5N6P7Q8R9S0T1V2WI", "character 26 ('I')"},
		{"01J8Z3K4M5N6P7Q8R9S0T1V2WL", "not Crockford"},
		{"01J8Z3K4M5N6P7Q8R9S0T1V2WO", "not Crockford"},
		{"U1J8Z3K4M5N6P7Q8R9S0T1V2W3", "character 1 ('U')"},
		{"01J8Z3K4M5N6P7Q8R9S0T1V2-3", "not Crockford"},
		{"01J8Z3K4M5N6P7Q8R9S0T1V2W\uff13", "character 26 ('３') is not Crockford base32"}, // a full-width digit: 26 characters, 28 bytes
		{"01J8Z3K4M5N6P7Q8R9S0T1V/W3", `contains "/"`},
		{"../../../admin", `contains "/"`},
		{"..", `contains ".."`},
		{"01J8Z3K4M5N6P7Q8R9S0T1V..3", `contains ".."`},
		{"01J8Z3K4M5N6P7Q8R9S0T1V W3", "whitespace"},
		{" 01J8Z3K4M5N6P7Q8R9S0T1V2W3", "whitespace"},
		{"01J8Z3K4M5N6P7Q8R9S0T1V2W3\n", "control character"},
		{"01J8Z3K4M5N6P7Q8R9S0T1V\x002W", "control character"},
		{"01J8Z3K4M5N6P7Q8R9S0T1V\u00a02", "whitespace"},
		{"01J8Z3K4M5N6P7Q8R9S0T1V2W\xff", "UTF-8"},
		{"01J8Z3K4M5N6P7Q8R9S0T1V2W%", "not Crockford"},
		{strings.Repeat("0", 129), "129 bytes long, at most 128"},
		{"ÅÅÅÅÅÅÅÅÅÅÅÅÅ", "not Crockford"},
	}
	for _, tc := range tests {
		err := versori.ValidateID("organisation ID", tc.id)
		if tc.problem == "" {
			if err != nil {
				t.Errorf("ValidateID(%q) = %v, want nil", tc.id, err)
			}
			continue
		}
		var idErr *versori.InvalidIDError
		if !errors.As(err, &idErr) {
			t.Errorf("ValidateID(%q) = %v, want *InvalidIDError", tc.id, err)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.problem) || !strings.HasPrefix(msg, "invalid organisation ID ") {
			t.Errorf("ValidateID(%q) = %q, want it to name the kind and say %q", tc.id, msg, tc.problem)
		}
		if len(msg) > 160 {
			t.Errorf("error for a long ID is %d bytes: the ID must be cut", len(msg))
		}
		if versori.Classify(err) != versori.ClassInvalid {
			t.Errorf("Classify = %s", versori.Classify(err))
		}
	}
}

func TestValidateIDAcceptsEveryULID(t *testing.T) {
	for range 1000 {
		id := ulid.Make().String()
		if err := versori.ValidateID("x", id); err != nil {
			t.Fatal(err)
		}
		if err := versori.ValidateID("x", strings.ToLower(id)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestValidateVersion(t *testing.T) {
	tests := []struct {
		v       string
		problem string
	}{
		{"1.2.0", ""},
		{"latest", ""},
		{"default", ""},
		{"v1 beta", ""},
		{"100%", ""},
		{"ünïcode", ""},
		{"1..2", ""},
		{"", "is empty"},
		{".", "relative path"},
		{"..", "relative path"},
		{"a/b", "path separator"},
		{`a\b`, "path separator"},
		{" 1.0", "whitespace"},
		{"1.0\t", "whitespace"},
		{"1.\x000", "control character"},
		{"1.\u00850", "control character"},
		{"\xff", "UTF-8"},
		{strings.Repeat("v", 129), "at most 128"},
	}
	for _, tc := range tests {
		err := versori.ValidateVersion(tc.v)
		if tc.problem == "" {
			if err != nil {
				t.Errorf("ValidateVersion(%q) = %v", tc.v, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.problem) || !strings.Contains(err.Error(), "version name") {
			t.Errorf("ValidateVersion(%q) = %v, want an error saying %q", tc.v, err, tc.problem)
		}
	}
}
