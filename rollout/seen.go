package rollout

import (
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/orglist"
)

// seenPageBits is how many positions one page of a seenSet covers (a page
// is 8 KiB).
const seenPageBits = 1 << 16

// seenSet remembers the records a scan has handed out, so the duplicates
// HSCAN may return are dropped, in far less memory than a set of IDs: a
// record with a position (every record a Manager enlisted; the ledger keeps
// it for the record's life) costs one bit, in pages of a bitset indexed by
// position, so a million such records cost 128 KiB. A record without one
// (added through tasks.Producer, or finished before the ledger kept
// positions) costs an entry in an orglist.Set, about 16 bytes and the map's
// overhead. A record never gains or loses its position, so the two halves
// never hold the same organisation. The zero value is empty; it is not safe
// for concurrent use.
type seenSet struct {
	pages map[int64]*[seenPageBits / 64]uint64
	other orglist.Set
}

// add records rec and reports whether it was new.
func (s *seenSet) add(rec ledger.Record) bool {
	q := rec.Position
	if q <= 0 {
		return s.other.Add(string(rec.OrgID))
	}
	if s.pages == nil {
		s.pages = map[int64]*[seenPageBits / 64]uint64{}
	}
	p := s.pages[q/seenPageBits]
	if p == nil {
		p = new([seenPageBits / 64]uint64)
		s.pages[q/seenPageBits] = p
	}
	i := q % seenPageBits
	word, bit := &p[i/64], uint64(1)<<(i%64)
	if *word&bit != 0 {
		return false
	}
	*word |= bit
	return true
}
