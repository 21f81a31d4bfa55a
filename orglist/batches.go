package orglist

import (
	"iter"

	"github.com/versori/import-worker/versori"
)

// Batches cuts ids into slices of up to size, so that a producer writes one
// batch per round trip whatever the length of the stream. The slice is
// reused: copy what you keep.
func Batches(ids iter.Seq[versori.OrgID], size int) iter.Seq[[]versori.OrgID] {
	return func(yield func([]versori.OrgID) bool) {
		batch := make([]versori.OrgID, 0, max(1, size))
		for id := range ids {
			batch = append(batch, id)
			if len(batch) == cap(batch) {
				if !yield(batch) {
					return
				}
				batch = batch[:0]
			}
		}
		if len(batch) > 0 {
			yield(batch)
		}
	}
}

// ParseIDs parses the organisation IDs raw yields (versori.ParseOrgID), for
// a Go producer holding strings: an invalid ID ends the sequence, and its
// error is left in *err.
func ParseIDs(raw iter.Seq[string]) (iter.Seq[versori.OrgID], *error) {
	var err error
	return func(yield func(versori.OrgID) bool) {
		for s := range raw {
			id, perr := versori.ParseOrgID(s)
			if perr != nil {
				err = perr
				return
			}
			if !yield(id) {
				return
			}
		}
	}, &err
}
