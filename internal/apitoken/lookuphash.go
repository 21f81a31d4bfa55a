package apitoken

import (
	"crypto/sha256"
	"crypto/subtle"
)

// LookupHash is Lookup by the token's SHA-256, for a session that keeps
// the hash rather than the token (the console's cookie): it compares with
// every entry in constant time, as Lookup does.
func (s *Set) LookupHash(sum [sha256.Size]byte) (Entry, bool) {
	var found Entry
	ok := 0
	for _, e := range s.entries {
		if subtle.ConstantTimeCompare(sum[:], e.Hash[:]) == 1 {
			found = e
			ok = 1
		}
	}
	return found, ok == 1
}
