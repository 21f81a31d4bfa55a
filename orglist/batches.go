package orglist

import "iter"

// Batches reads organisation IDs from ids in slices of up to size, in
// canonical form (CanonicalID), so that a producer writes one batch per
// round trip whatever the length of the stream. The slice is reused: copy
// what you keep. An invalid ID ends the sequence: the valid IDs read before
// it come as a last, shorter batch, and its error is left in *err.
func Batches(ids iter.Seq[string], size int) (iter.Seq[[]string], *error) {
	var err error
	return func(yield func([]string) bool) {
		batch := make([]string, 0, max(1, size))
		for raw := range ids {
			id, cerr := CanonicalID("organisation", raw)
			if cerr != nil {
				err = cerr
				break
			}
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
	}, &err
}
