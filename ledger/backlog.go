package ledger

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// A rollout's backlog is the list, in the order the producer gave them, of
// its organisations registered but not yet handed to the queue. Releasing
// from it rather than enqueueing the whole list at once is what lets canary
// waves hold organisations back and lets rollouts share the fleet fairly.
// It lives in the rollout's cluster slot, so registering a record and
// listing it are one atomic script: a producer that crashes in between
// leaves neither.

// BacklogKey is the Redis key of rollout id's backlog (a list).
func (l *Ledger) BacklogKey(id string) string { return l.keys(id).backlog }

// enlistScript is registerScript that also gives each new record its
// position (1-based, in list order, field q) and appends it to the backlog.
// KEYS: def, orgs, counts, backlog.
// ARGV: pending record JSON, organisation IDs...
var enlistScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local out = {}
local n = 0
local head = string.sub(ARGV[1], 1, -2)
local seq = tonumber(redis.call('HGET', KEYS[3], 'seq')) or 0
for i = 2, #ARGV do
  local raw = redis.call('HGET', KEYS[2], ARGV[i])
  if raw then
    local s = cjson.decode(raw).s
    if type(s) ~= 'string' or s == '' then return redis.error_reply('record of ' .. ARGV[i] .. ' has no state') end
    out[#out + 1] = s
  else
    seq = seq + 1
    redis.call('HSET', KEYS[2], ARGV[i], head .. ',"q":' .. seq .. '}')
    redis.call('RPUSH', KEYS[4], ARGV[i])
    n = n + 1
    out[#out + 1] = ''
  end
end
if n > 0 then
  redis.call('HINCRBY', KEYS[3], 'total', n)
  redis.call('HINCRBY', KEYS[3], 'pending', n)
  redis.call('HSET', KEYS[3], 'seq', seq)
end
return out
`)

// Enlist is Register for a rollout released from its backlog: each
// organisation new to the rollout gets a pending record with its Position
// and is appended to the backlog, in the order given. It reports each
// organisation's state before the call, "" when new. Batches run one after
// another, so positions follow the list across batches; calling again with
// the same list adds nothing.
func (l *Ledger) Enlist(ctx context.Context, rolloutID string, orgIDs []string) ([]State, error) {
	if err := l.checkBatch(ctx, rolloutID, orgIDs); err != nil || len(orgIDs) == 0 {
		return nil, err
	}
	k := l.keys(rolloutID)
	keys := []string{k.def, k.orgs, k.counts, k.backlog}
	rec := pendingRecord(l.opts.Clock())
	out := make([]State, 0, len(orgIDs))
	for lo := 0; lo < len(orgIDs); lo += l.opts.BatchSize {
		hi := min(lo+l.opts.BatchSize, len(orgIDs))
		res, err := enlistScript.Run(ctx, l.rdb, keys, batchArgs(orgIDs[lo:hi], rec)...).Result()
		if err != nil {
			return out, fmt.Errorf("ledger: enlist organisations in rollout %q: %w", rolloutID, err)
		}
		if code, ok := res.(int64); ok {
			return out, scriptErr(code, rolloutID, "")
		}
		states, ok := res.([]any)
		if !ok || len(states) != hi-lo {
			return out, fmt.Errorf("ledger: enlist organisations in rollout %q: unexpected script result %T", rolloutID, res)
		}
		for _, v := range states {
			s, _ := v.(string)
			out = append(out, State(s))
		}
	}
	return out, nil
}

// BatchSize is how many organisations one script call handles
// (Options.BatchSize).
func (l *Ledger) BatchSize() int { return l.opts.BatchSize }
