package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Retention: a finished rollout's keys expire. The ledger does not decide
// the retention or when a rollout is re-driven (package rollout does); it
// gives the atomic steps:
//
//   - Retain, after anything that may have finished a rollout: when nothing
//     is pending, every key of the rollout gets the same PEXPIRE; when
//     something is, every key loses its expiry (PERSIST).
//   - Persist, before anything re-drives a rollout (retry, a re-run enqueue):
//     the keys lose their expiry, or, when the definition has expired
//     already, nothing is written and the rollout is not found.
//   - Expiry reads the definition's PTTL.
//   - PruneIndex and Rollouts drop index members whose definition is gone.
//
// All the keys of a rollout get one TTL from one script call, so they share
// one deadline (Redis freezes the clock while a script runs, from 7.0): a
// reader past the deadline finds every key gone, never a definition
// without its records or the reverse.

// KeyPrefix returns the start of every key of rollout id,
// "<p>:rollout:{<id>}:": keys of other packages about the rollout start
// with it, so they share its hash tag (its Redis Cluster slot).
func (l *Ledger) KeyPrefix(id string) string {
	return l.opts.Prefix + ":rollout:{" + id + "}:"
}

// Keys returns the ledger's keys of rollout id, the definition first.
func (l *Ledger) Keys(id string) []string {
	k := l.keys(id)
	return append(k.list(), k.backlog)
}

// retainScript applies the retention to a finished rollout, or removes it
// from an active one.
// KEYS: def, orgs, counts, then any other key of the rollout.
// ARGV: ttl_ms (> 0), only_unset ("1": leave a key that has an expiry).
// Returns -1 when the definition does not exist, 0 when something is
// pending (every key persisted), 1 when the expiry was set, 2 when the
// rollout is finished and only_unset left its expiry alone.
var retainScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local pending = tonumber(redis.call('HGET', KEYS[3], 'pending')) or 0
if pending > 0 then
  -- The keys get and lose their expiry together: while the definition has
  -- none, the others have none either. This runs after every outcome
  -- recorded, so it must cost little then.
  if redis.call('PTTL', KEYS[1]) >= 0 then
    for i = 1, #KEYS do redis.call('PERSIST', KEYS[i]) end
  end
  return 0
end
if ARGV[2] == '1' and redis.call('PTTL', KEYS[1]) >= 0 then return 2 end
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return 1
`)

// persistScript removes the expiry of every key of a rollout.
// KEYS: def, orgs, counts, then any other key of the rollout.
// Returns -1 when the definition does not exist (nothing written), else 1.
var persistScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
for i = 1, #KEYS do redis.call('PERSIST', KEYS[i]) end
return 1
`)

// RetainResult is what Retain found.
type RetainResult int

// Results of Retain.
const (
	// RetainActive: something is pending; every key was persisted.
	RetainActive RetainResult = iota
	// RetainSet: nothing is pending; every key expires after the TTL.
	RetainSet
	// RetainKept: nothing is pending and the keys had an expiry, which
	// Retain with onlyUnset left alone.
	RetainKept
)

// Done reports whether the rollout was finished.
func (r RetainResult) Done() bool { return r != RetainActive }

// Retain gives every key of a finished rollout (nothing pending) an expiry
// of ttl, and removes the expiry of an active one's; extra names the
// rollout's keys kept by other packages (they must start with KeyPrefix).
// With onlyUnset, a finished rollout whose keys have an expiry keeps it.
// ttl must be positive. An unknown (or expired) rollout wraps
// ErrRolloutNotFound, and nothing is written.
func (l *Ledger) Retain(ctx context.Context, id string, ttl time.Duration, onlyUnset bool, extra ...string) (RetainResult, error) {
	if err := checkID("rollout", id, true); err != nil {
		return 0, err
	}
	if ttl <= 0 {
		return 0, fmt.Errorf("ledger: retain rollout %q: ttl %s is not positive", id, ttl)
	}
	flag := "0"
	if onlyUnset {
		flag = "1"
	}
	code, err := retainScript.Run(ctx, l.rdb, append(l.Keys(id), extra...), ttl.Milliseconds(), flag).Int64()
	if err != nil {
		return 0, fmt.Errorf("ledger: retain rollout %q: %w", id, err)
	}
	switch code {
	case 0:
		return RetainActive, nil
	case 1:
		return RetainSet, nil
	case 2:
		return RetainKept, nil
	}
	return 0, scriptErr(code, id, "")
}

// Persist removes the expiry of every key of rollout id (extra as for
// Retain), before the rollout is re-driven. When the definition has
// expired already, nothing is written and the error wraps
// ErrRolloutNotFound: the re-drive must stop, or it would write records of
// a rollout that no longer exists.
func (l *Ledger) Persist(ctx context.Context, id string, extra ...string) error {
	if err := checkID("rollout", id, true); err != nil {
		return err
	}
	code, err := persistScript.Run(ctx, l.rdb, append(l.Keys(id), extra...)).Int64()
	if err != nil {
		return fmt.Errorf("ledger: persist rollout %q: %w", id, err)
	}
	if code < 0 {
		return scriptErr(code, id, "")
	}
	return nil
}

// Expiry returns how long rollout id's definition has left to live, and
// false when it has no expiry (an active rollout, or retention off). An
// unknown rollout wraps ErrRolloutNotFound.
func (l *Ledger) Expiry(ctx context.Context, id string) (time.Duration, bool, error) {
	if err := checkID("rollout", id, true); err != nil {
		return 0, false, err
	}
	d, err := l.rdb.PTTL(ctx, l.keys(id).def).Result()
	if err != nil {
		return 0, false, fmt.Errorf("ledger: read expiry of rollout %q: %w", id, err)
	}
	// go-redis maps PTTL's -2 (no key) and -1 (no expiry) to those
	// durations, not multiplied.
	switch {
	case d == -2:
		return 0, false, scriptErr(-1, id, "")
	case d < 0:
		return 0, false, nil
	}
	return d, true, nil
}

// DeleteWith is Delete that also removes extra, the rollout's keys kept by
// other packages, in the same UNLINK.
func (l *Ledger) DeleteWith(ctx context.Context, id string, extra ...string) (bool, error) {
	if err := checkID("rollout", id, true); err != nil {
		return false, err
	}
	n, err := l.rdb.Unlink(ctx, append(l.Keys(id), extra...)...).Result()
	if err != nil {
		return false, fmt.Errorf("ledger: delete rollout %q: %w", id, err)
	}
	z, err := l.unindex(ctx, []string{id})
	if err != nil {
		return false, fmt.Errorf("ledger: unindex rollout %q: %w", id, err)
	}
	return n > 0 || z > 0, nil
}

// removedKey counts the rollouts ever removed from the index (expired or
// deleted), so that RolloutCount plus RemovedCount counts every rollout
// ever created and never goes down.
func (l *Ledger) removedKey() string { return l.opts.Prefix + ":rollouts_removed" }

// RemovedCount returns how many rollouts were removed from the index
// (expired and pruned, or deleted) since the counter began. Only the call
// that removed a member counts it, so replicas pruning at once do not
// count twice.
func (l *Ledger) RemovedCount(ctx context.Context) (int64, error) {
	n, err := l.rdb.Get(ctx, l.removedKey()).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("ledger: count removed rollouts: %w", err)
	}
	return n, nil
}

// pruneBatch is how many index members one PruneIndex round reads.
const pruneBatch = 1000

// PruneIndex removes from the index of rollouts the members created before
// cutoff whose definition no longer exists (expired or deleted), and
// returns how many it removed. No rollout can have expired sooner than the
// retention after its creation, so with cutoff = now - retention it reads
// only the members that may have. live, if not nil, is called with each
// batch of the old members that do exist (to give a retention to those
// that finished before there was one).
func (l *Ledger) PruneIndex(ctx context.Context, cutoff time.Time, live func(ids []string) error) (int, error) {
	max := strconv.FormatInt(cutoff.UnixMilli(), 10)
	removed := 0
	var offset int64
	for {
		ids, err := l.rdb.ZRangeByScore(ctx, l.indexKey(), &redis.ZRangeBy{Min: "-inf", Max: "(" + max, Offset: offset, Count: pruneBatch}).Result()
		if err != nil {
			return removed, fmt.Errorf("ledger: prune index: %w", err)
		}
		if len(ids) == 0 {
			return removed, nil
		}
		gone, kept, err := l.existing(ctx, ids)
		if err != nil {
			return removed, err
		}
		if n, err := l.unindex(ctx, gone); err != nil {
			return removed, err
		} else {
			removed += n
		}
		if live != nil && len(kept) > 0 {
			if err := live(kept); err != nil {
				return removed, err
			}
		}
		if len(ids) < pruneBatch {
			return removed, nil
		}
		offset += int64(len(kept))
	}
}

// existing splits ids into those whose definition is gone and the others.
func (l *Ledger) existing(ctx context.Context, ids []string) (gone, kept []string, err error) {
	pipe := l.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.Exists(ctx, l.keys(id).def)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, nil, fmt.Errorf("ledger: prune index: %w", err)
	}
	for i, id := range ids {
		if cmds[i].Val() == 0 {
			gone = append(gone, id)
		} else {
			kept = append(kept, id)
		}
	}
	return gone, kept, nil
}

// unindex removes ids from the index of rollouts.
func (l *Ledger) unindex(ctx context.Context, ids []string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	members := make([]any, len(ids))
	for i, id := range ids {
		members[i] = id
	}
	n, err := l.rdb.ZRem(ctx, l.indexKey(), members...).Result()
	if err != nil {
		return 0, fmt.Errorf("ledger: prune index: %w", err)
	}
	// Another slot than the index's (no hash tag), so not atomic with the
	// ZREM: a crash between the two undercounts by the members removed.
	if n > 0 {
		if err := l.rdb.IncrBy(ctx, l.removedKey(), n).Err(); err != nil {
			return int(n), fmt.Errorf("ledger: count removed rollouts: %w", err)
		}
	}
	return int(n), nil
}
