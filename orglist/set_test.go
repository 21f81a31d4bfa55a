package orglist

import (
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"
)

func TestDecodeULIDMatchesOklog(t *testing.T) {
	ids := []string{idA, idB, idC, "00000000000000000000000000", ulid.Make().String(), ulid.Make().String()}
	for _, id := range ids {
		want := ulid.MustParseStrict(id)
		for _, spelt := range []string{id, strings.ToLower(id)} {
			got, ok := decodeULID(spelt)
			if !ok || got != [16]byte(want) {
				t.Errorf("decodeULID(%s) = %x, %v; want %x", spelt, got, ok, want[:])
			}
		}
	}
	for _, bad := range []string{"", "01HZY", idA + "0", "8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "01HZY3K8W0V6Q1B2C3D4E5F6GU", "01HZY3K8W0V6Q1B2C3D4E5F6G\x00"} {
		if _, ok := decodeULID(bad); ok {
			t.Errorf("decodeULID(%q) accepted", bad)
		}
	}
}

func TestSet(t *testing.T) {
	var s Set
	steps := []struct {
		id  string
		new bool
	}{
		{idA, true},
		{idA, false},
		{strings.ToLower(idA), false}, // the same ULID
		{idB, true},
		{"not-a-ulid", true},
		{"not-a-ulid", false},
		{"NOT-A-ULID", true}, // not a ULID: compared as given
	}
	for i, st := range steps {
		if got := s.Add(st.id); got != st.new {
			t.Errorf("step %d: Add(%q) = %v, want %v", i, st.id, got, st.new)
		}
	}
	if s.Len() != 4 {
		t.Errorf("Len = %d, want 4", s.Len())
	}
	if !s.Contains(strings.ToLower(idB)) || s.Contains(idC) || !s.Contains("not-a-ulid") {
		t.Error("Contains disagrees with Add")
	}
	var empty Set
	if empty.Contains(idA) || empty.Len() != 0 {
		t.Error("zero Set is not empty")
	}
}

func TestSetMemory(t *testing.T) {
	// The point of Set is to keep the de-duplication of a 1,000,000-line
	// list small: far below the 26-byte strings plus headers a
	// map[string]struct{} would hold.
	if testing.Short() {
		t.Skip("allocates 100,000 members")
	}
	const n = 100_000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = ulid.Make().String()
	}
	perMember := func(add func(string)) float64 { return bytesPerMember(n, ids, add) }
	var s Set
	setBytes := perMember(func(id string) { s.Add(id) })
	m := map[string]struct{}{}
	mapBytes := perMember(func(id string) { m[strings.Clone(id)] = struct{}{} })
	t.Logf("Set: %.1f bytes a member; map[string]struct{}: %.1f", setBytes, mapBytes)
	if setBytes >= mapBytes {
		t.Errorf("Set uses %.1f bytes a member, no better than a string map's %.1f", setBytes, mapBytes)
	}
}
