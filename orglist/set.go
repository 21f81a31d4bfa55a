package orglist

import "strings"

// Set is a set of organisation IDs that costs about 16 bytes a member plus
// the map's overhead, however the IDs are spelt: a ULID is kept as its
// 128-bit value, so IDs differing only in case are one member. IDs that are
// not ULIDs are kept as strings. The zero value is an empty set; it is not
// safe for concurrent use.
type Set struct {
	ulids map[[16]byte]struct{}
	other map[string]struct{}
}

// Add adds id and reports whether it was new.
func (s *Set) Add(id string) bool {
	if k, ok := decodeULID(id); ok {
		if s.ulids == nil {
			s.ulids = make(map[[16]byte]struct{})
		}
		if _, dup := s.ulids[k]; dup {
			return false
		}
		s.ulids[k] = struct{}{}
		return true
	}
	if s.other == nil {
		s.other = make(map[string]struct{})
	}
	if _, dup := s.other[id]; dup {
		return false
	}
	s.other[strings.Clone(id)] = struct{}{}
	return true
}

// Contains reports whether id is in the set.
func (s *Set) Contains(id string) bool {
	if k, ok := decodeULID(id); ok {
		_, in := s.ulids[k]
		return in
	}
	_, in := s.other[id]
	return in
}

// Len returns the number of members.
func (s *Set) Len() int { return len(s.ulids) + len(s.other) }

// crockford maps a Crockford base32 character to its value, or 0xFF. I, L,
// O and U are not in the alphabet; versori.ValidateID refuses them too.
var crockford = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xFF
	}
	const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = byte(i)
		if c := alphabet[i]; c >= 'A' && c <= 'Z' {
			t[c+'a'-'A'] = byte(i)
		}
	}
	return t
}()

// decodeULID returns the 128-bit value of a ULID: 26 characters of 5 bits,
// the first holding only 3.
func decodeULID(id string) (k [16]byte, ok bool) {
	if len(id) != 26 {
		return k, false
	}
	var hi, lo uint64 // the value as two 64-bit halves, shifted in 5 bits at a time
	for i := 0; i < len(id); i++ {
		v := crockford[id[i]]
		if v == 0xFF || (i == 0 && v > 7) {
			return k, false
		}
		hi = hi<<5 | lo>>59
		lo = lo<<5 | uint64(v)
	}
	for i := 0; i < 8; i++ {
		k[i] = byte(hi >> (56 - 8*i))
		k[8+i] = byte(lo >> (56 - 8*i))
	}
	return k, true
}
