package ledger

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// registerScript adds pending records for new organisations and reports, for
// every organisation given, its state before the call ("" when it was new).
// ARGV: pending record JSON, organisation IDs...
var registerScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local out = {}
local n = 0
for i = 2, #ARGV do
  local raw = redis.call('HGET', KEYS[2], ARGV[i])
  if raw then
    local ok, r = pcall(cjson.decode, raw)
    if ok and type(r) == 'table' and type(r.s) == 'string' then
      out[#out + 1] = r.s
    else
      out[#out + 1] = 'pending'
    end
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[1])
    n = n + 1
    out[#out + 1] = ''
  end
end
if n > 0 then
  redis.call('HINCRBY', KEYS[3], 'total', n)
  redis.call('HINCRBY', KEYS[3], 'pending', n)
end
return out
`)

// Register adds the organisations of one batch to a rollout, like AddOrgs,
// and returns each one's state before the call, in order: "" for an
// organisation that is new to the rollout. The producer uses it to enqueue
// only what is missing when a rollout is enqueued again. One script call
// handles the whole batch, so keep batches to about Options.BatchSize; an
// organisation listed twice in one batch is new the first time only.
func (l *Ledger) Register(ctx context.Context, rolloutID string, orgIDs []string) ([]State, error) {
	if err := checkID("rollout", rolloutID, true); err != nil {
		return nil, err
	}
	for _, id := range orgIDs {
		if err := checkID("organisation", id, false); err != nil {
			return nil, err
		}
	}
	if len(orgIDs) == 0 {
		return nil, nil
	}
	args := make([]any, 0, len(orgIDs)+1)
	args = append(args, pendingRecord(l.opts.Clock()))
	for _, id := range orgIDs {
		args = append(args, id)
	}
	res, err := registerScript.Run(ctx, l.rdb, l.keys(rolloutID).list(), args...).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: register organisations in rollout %q: %w", rolloutID, err)
	}
	if code, ok := res.(int64); ok {
		return nil, scriptErr(code, rolloutID, "")
	}
	raw, ok := res.([]any)
	if !ok || len(raw) != len(orgIDs) {
		return nil, fmt.Errorf("ledger: register organisations in rollout %q: unexpected reply %T", rolloutID, res)
	}
	out := make([]State, len(raw))
	for i, v := range raw {
		s, _ := v.(string)
		out[i] = State(s)
	}
	return out, nil
}
