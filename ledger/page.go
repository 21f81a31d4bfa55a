package ledger

import (
	"context"
	"fmt"
)

// Page returns one page of the records of a rollout that f selects, for a
// browser table that must never load a whole rollout: it runs HSCAN from
// cursor (0 for the first page) with COUNT limit until it holds at least
// limit matching records or the scan ends, and returns them with the
// cursor of the next page (0 when there is none). A page may hold more than
// limit records (all the matches of its last HSCAN call), and, as with
// HSCAN, a record may show on two pages if the hash is resized between
// them. maxCalls bounds the HSCAN calls of one page (a sparse filter on a
// large rollout then returns a short or empty page with a next cursor);
// 0 means 1,000.
func (l *Ledger) Page(ctx context.Context, rolloutID string, f Filter, cursor uint64, limit, maxCalls int) ([]Record, uint64, error) {
	if err := checkID("rollout", rolloutID, true); err != nil {
		return nil, 0, err
	}
	if limit <= 0 {
		limit = 50
	}
	if maxCalls <= 0 {
		maxCalls = 1000
	}
	k := l.keys(rolloutID)
	n, err := l.rdb.Exists(ctx, k.def).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("ledger: page rollout %q: %w", rolloutID, err)
	}
	if n == 0 {
		return nil, 0, scriptErr(-1, rolloutID, "")
	}
	var out []Record
	for range maxCalls {
		kv, next, err := l.rdb.HScan(ctx, k.orgs, cursor, "", int64(limit)).Result()
		if err != nil {
			return nil, 0, fmt.Errorf("ledger: page rollout %q: %w", rolloutID, err)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			r, err := decodeRecord(kv[i], kv[i+1])
			if err != nil {
				return nil, 0, fmt.Errorf("ledger: page rollout %q: %w", rolloutID, err)
			}
			if f.match(r) {
				out = append(out, r)
			}
		}
		cursor = next
		if cursor == 0 || len(out) >= limit {
			break
		}
	}
	return out, cursor, nil
}
