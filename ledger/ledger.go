package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/versori"
)

// Errors returned by the Ledger. Test for them with errors.Is; the returned
// errors wrap them with the IDs involved.
var (
	// ErrRolloutNotFound means no rollout has the given ID.
	ErrRolloutNotFound = errors.New("rollout not found")
	// ErrRolloutMismatch means a rollout with the given ID exists for a
	// different connector or version.
	ErrRolloutMismatch = errors.New("rollout exists with a different connector or version")
	// ErrQueueMismatch means a rollout with the given ID was enqueued on
	// another queue: its tasks live there, so retry and cancel must act
	// there too.
	ErrQueueMismatch = errors.New("rollout exists on another queue")
	// ErrOrgNotFound means the rollout exists but the organisation was never
	// added to it.
	ErrOrgNotFound = errors.New("organisation not in rollout")
	// ErrInvalidID means a rollout ID is empty, too long or holds
	// characters the ledger cannot store safely, or an organisation or
	// connector ID is the zero value (organisation and connector IDs come
	// parsed, versori.ParseOrgID, and are not checked again).
	ErrInvalidID = errors.New("invalid ID")
	// ErrInvalidClass means an outcome class is longer than the ledger keeps.
	ErrInvalidClass = errors.New("invalid outcome class")
	// ErrInvalidOutcome means an Outcome's state is neither succeeded nor
	// failed.
	ErrInvalidOutcome = errors.New("invalid outcome")
	// ErrNotReplicated means an outcome was written but fewer replicas than
	// Options.WaitReplicas acknowledged it in time: a failover could lose
	// it. Writing it again is safe.
	ErrNotReplicated = errors.New("outcome not acknowledged by the replicas")
)

// Defaults of Options.
const (
	DefaultPrefix    = "versori-import"
	DefaultBatchSize = 1000
	DefaultScanCount = 1000
	// DefaultWaitTimeout bounds the WAIT for replicas after an outcome.
	DefaultWaitTimeout = time.Second
	// DefaultParallelism is how many batches AddOrgs and Register keep in
	// flight.
	DefaultParallelism = 4
)

// Options configure a Ledger. The zero value is usable.
type Options struct {
	// Prefix starts every key; it must not hold braces (see the package
	// documentation). Default DefaultPrefix.
	Prefix string
	// Clock tells the time of every write. Default time.Now.
	Clock func() time.Time
	// MaxErrorLen bounds, in bytes, the error message kept per record.
	// Default DefaultMaxErrorLen.
	MaxErrorLen int
	// BatchSize is how many organisations one script call of AddOrgs,
	// Register, Requeue or Cancel handles; it bounds how long Redis is busy with one
	// call. Default DefaultBatchSize.
	BatchSize int
	// Parallelism is how many AddOrgs or Register batches are in flight
	// at once.
	// Default DefaultParallelism.
	Parallelism int
	// ScanCount is the COUNT hint of the HSCAN calls that stream records.
	// Default DefaultScanCount.
	ScanCount int
	// WaitReplicas is how many replicas must acknowledge an outcome
	// (Finish, FinishAll, Batcher) before it counts as recorded: Redis's
	// WAIT after the write, ErrNotReplicated when fewer do in time. 0, the
	// default, waits for none. Behind Sentinel, 1 keeps a failover from
	// losing outcomes the old master took after the promotion (its writes
	// are discarded when it becomes a replica), and with them the calls a
	// lost outcome makes again.
	WaitReplicas int
	// WaitTimeout bounds each WAIT; keep it below the client's read
	// timeout. Default DefaultWaitTimeout.
	WaitTimeout time.Duration
}

// Ledger reads and writes rollouts in Redis. It is safe for concurrent use;
// every record-level write is a single atomic script.
type Ledger struct {
	rdb  redis.UniversalClient
	opts Options
}

// New returns a Ledger on rdb. Options left zero take their defaults.
func New(rdb redis.UniversalClient, opts Options) *Ledger {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.MaxErrorLen <= 0 {
		opts.MaxErrorLen = DefaultMaxErrorLen
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.Parallelism <= 0 {
		opts.Parallelism = DefaultParallelism
	}
	if opts.ScanCount <= 0 {
		opts.ScanCount = DefaultScanCount
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = DefaultWaitTimeout
	}
	return &Ledger{rdb: rdb, opts: opts}
}

// Rollout is a rollout's definition.
type Rollout struct {
	ID          string
	ConnectorID versori.ConnectorID
	// Version is the version name the rollout asked for, as given
	// (it may be "latest" or "default").
	Version   string
	CreatedAt time.Time
	// Queue is the asynq queue the rollout's tasks were enqueued on, so
	// retry and cancel act where the tasks are. Empty for a rollout
	// recorded before queues were kept, or by a caller that does not say;
	// CreateRollout records the first non-empty queue it is given.
	Queue string
	// Total is the number of organisations added. CreateRollout ignores it;
	// reads fill it from the counters.
	Total int64
}

// Counts are a rollout's counters. Pending, Succeeded, Failed and Cancelled
// sum to Total; Retrying is the part of Pending that has had an attempt.
type Counts struct {
	Total, Pending, Retrying, Succeeded, Failed, Cancelled int64
	// ByClass counts succeeded and failed records by outcome class.
	ByClass map[string]int64
	// RetryingByClass counts retrying records by the class of their last
	// attempt.
	RetryingByClass map[string]int64
	// ByVersion counts succeeded records by the version name the API
	// returned; more than one key means the rollout straddled a new
	// publication of the version it asked for.
	ByVersion map[string]int64
	// FirstFinish and LastFinish are the earliest and latest times Finish
	// changed a record (zero before the first): with Succeeded+Failed they
	// give the rollout's rate, and with Pending an ETA.
	FirstFinish, LastFinish time.Time
}

// Done reports whether nothing is pending (retrying records are pending).
func (c Counts) Done() bool { return c.Pending == 0 }

// RolloutSummary is a rollout with its counters.
type RolloutSummary struct {
	Rollout
	Counts Counts
}

type keys struct{ def, orgs, counts, backlog string }

func (l *Ledger) keys(rolloutID string) keys {
	base := l.opts.Prefix + ":rollout:{" + rolloutID + "}:"
	return keys{def: base + "def", orgs: base + "orgs", counts: base + "counts", backlog: base + "backlog"}
}

func (k keys) list() []string { return []string{k.def, k.orgs, k.counts} }

func (l *Ledger) indexKey() string { return l.opts.Prefix + ":rollouts" }

// scriptErr maps a script's negative return code to an error.
func scriptErr(code int64, rolloutID, orgID string) error {
	switch code {
	case -1:
		return fmt.Errorf("ledger: rollout %q: %w", rolloutID, ErrRolloutNotFound)
	case -2:
		return fmt.Errorf("ledger: organisation %q in rollout %q: %w", orgID, rolloutID, ErrOrgNotFound)
	case -3:
		return fmt.Errorf("ledger: rollout %q: %w", rolloutID, ErrRolloutMismatch)
	case -4:
		return fmt.Errorf("ledger: rollout %q: %w", rolloutID, ErrQueueMismatch)
	}
	return fmt.Errorf("ledger: rollout %q: unexpected script result %d", rolloutID, code)
}

// CreateRollout records r's definition and lists it among the rollouts. It
// is idempotent: created is false when the same definition already exists,
// and the error wraps ErrRolloutMismatch when the ID is taken by a
// different connector or version, or ErrQueueMismatch when it was recorded
// on another queue (an empty r.Queue matches any). A zero CreatedAt means
// now; r.Total is ignored.
func (l *Ledger) CreateRollout(ctx context.Context, r Rollout) (created bool, err error) {
	if err := checkID("rollout", r.ID, true); err != nil {
		return false, err
	}
	if r.ConnectorID == "" || r.Version == "" {
		return false, fmt.Errorf("ledger: rollout %q needs a connector ID and a version: %w", r.ID, ErrInvalidID)
	}
	if r.CreatedAt.IsZero() {
		r.CreatedAt = l.opts.Clock()
	}
	res, err := createScript.Run(ctx, l.rdb, l.keys(r.ID).list(),
		r.ID, string(r.ConnectorID), r.Version, r.CreatedAt.UnixMilli(), r.Queue).Slice()
	if err != nil {
		return false, fmt.Errorf("ledger: create rollout %q: %w", r.ID, err)
	}
	if len(res) != 2 {
		return false, fmt.Errorf("ledger: create rollout %q: unexpected script result %v", r.ID, res)
	}
	code, _ := res[0].(int64)
	if code < 0 {
		return false, scriptErr(code, r.ID, "")
	}
	createdMS, err := strconv.ParseInt(fmt.Sprint(res[1]), 10, 64)
	if err != nil {
		return false, fmt.Errorf("ledger: create rollout %q: created_at_ms %v: %w", r.ID, res[1], err)
	}
	// The index lives in another slot, so it cannot join the script. NX and
	// the stored creation time make a retry after a crash between the two
	// calls converge on the same entry.
	// A new definition (code 1) replaces the entry of an expired rollout
	// of the same ID that no prune has removed yet.
	zadd := l.rdb.ZAddNX
	if code == 1 {
		zadd = l.rdb.ZAdd
	}
	if err := zadd(ctx, l.indexKey(), redis.Z{Score: float64(createdMS), Member: r.ID}).Err(); err != nil {
		return false, fmt.Errorf("ledger: index rollout %q: %w", r.ID, err)
	}
	return code == 1, nil
}

// AddOrgs adds organisations to a rollout as pending records and returns how
// many were new. Organisations already in the rollout, whatever their state,
// are left alone, so adding the same list twice adds nothing the second
// time. Every ID is checked before anything is written. The IDs go to Redis
// in batches of Options.BatchSize, Options.Parallelism at a time; on error,
// added counts the batches that did complete, and calling again is safe.
func (l *Ledger) AddOrgs(ctx context.Context, rolloutID string, orgIDs []versori.OrgID) (added int, err error) {
	if err := l.checkBatch(ctx, rolloutID, orgIDs); err != nil || len(orgIDs) == 0 {
		return 0, err
	}
	k := l.keys(rolloutID).list()
	rec := pendingRecord(l.opts.Clock())
	var mu sync.Mutex
	err = l.inBatches(ctx, len(orgIDs), func(ctx context.Context, lo, hi int) error {
		n, err := addScript.Run(ctx, l.rdb, k, batchArgs(orgIDs[lo:hi], rec)...).Int64()
		if err != nil {
			return fmt.Errorf("ledger: add organisations to rollout %q: %w", rolloutID, err)
		}
		if n < 0 {
			return scriptErr(n, rolloutID, "")
		}
		mu.Lock()
		added += int(n)
		mu.Unlock()
		return nil
	})
	return added, err
}

// Register is AddOrgs that also reports, for each organisation in order,
// its state before the call: "" for one new to the rollout (an
// organisation listed twice is reported new once). A producer
// enqueueing a rollout again uses it to enqueue only what is missing. It
// reads every existing record, so it costs more than AddOrgs.
func (l *Ledger) Register(ctx context.Context, rolloutID string, orgIDs []versori.OrgID) ([]State, error) {
	if err := l.checkBatch(ctx, rolloutID, orgIDs); err != nil || len(orgIDs) == 0 {
		return nil, err
	}
	k := l.keys(rolloutID).list()
	rec := pendingRecord(l.opts.Clock())
	out := make([]State, len(orgIDs))
	err := l.inBatches(ctx, len(orgIDs), func(ctx context.Context, lo, hi int) error {
		states, err := l.register(ctx, rolloutID, k, orgIDs[lo:hi], rec)
		copy(out[lo:], states)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// register runs registerScript on one batch (keys: the rollout's three, or
// four with its backlog) and returns each organisation's state before it.
func (l *Ledger) register(ctx context.Context, rolloutID string, keys []string, orgIDs []versori.OrgID, rec string) ([]State, error) {
	res, err := registerScript.Run(ctx, l.rdb, keys, batchArgs(orgIDs, rec)...).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: register organisations in rollout %q: %w", rolloutID, err)
	}
	if code, ok := res.(int64); ok {
		return nil, scriptErr(code, rolloutID, "")
	}
	states, ok := res.([]any)
	if !ok || len(states) != len(orgIDs) {
		return nil, fmt.Errorf("ledger: register organisations in rollout %q: unexpected script result %T", rolloutID, res)
	}
	out := make([]State, len(states))
	for i, v := range states {
		s, _ := v.(string)
		out[i] = State(s)
	}
	return out, nil
}

// checkBatch checks the rollout ID and that no organisation ID is zero
// before a batched write touches anything, and for an empty batch, that the
// rollout exists (the scripts check otherwise).
func (l *Ledger) checkBatch(ctx context.Context, rolloutID string, orgIDs []versori.OrgID) error {
	if err := checkID("rollout", rolloutID, true); err != nil {
		return err
	}
	for _, id := range orgIDs {
		if err := checkOrg(id); err != nil {
			return err
		}
	}
	if len(orgIDs) == 0 {
		_, _, err := l.Rollout(ctx, rolloutID)
		return err
	}
	return nil
}

// batchArgs is a script's ARGV: head, then the organisation IDs.
func batchArgs(orgIDs []versori.OrgID, head ...any) []any {
	args := make([]any, 0, len(head)+len(orgIDs))
	args = append(args, head...)
	for _, id := range orgIDs {
		args = append(args, string(id))
	}
	return args
}

// inBatches calls fn for [lo, hi) ranges of n items, Options.BatchSize
// long, Options.Parallelism at a time. The first error cancels the batches
// not yet started and is returned.
func (l *Ledger) inBatches(ctx context.Context, n int, fn func(ctx context.Context, lo, hi int) error) error {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, l.opts.Parallelism)
	)
	for lo := 0; lo < n; lo += l.opts.BatchSize {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(ctx, lo, min(lo+l.opts.BatchSize, n)); err != nil {
				mu.Lock()
				if first == nil {
					first = err
					cancel()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	if err := parent.Err(); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	return nil
}

// Rollout returns a rollout's definition and counters. It reads two small
// hashes, never the records, so it costs the same for any rollout size.
func (l *Ledger) Rollout(ctx context.Context, id string) (Rollout, Counts, error) {
	if err := checkID("rollout", id, true); err != nil {
		return Rollout{}, Counts{}, err
	}
	k := l.keys(id)
	pipe := l.rdb.Pipeline()
	def := pipe.HGetAll(ctx, k.def)
	counts := pipe.HGetAll(ctx, k.counts)
	if _, err := pipe.Exec(ctx); err != nil {
		return Rollout{}, Counts{}, fmt.Errorf("ledger: read rollout %q: %w", id, err)
	}
	return summary(id, def.Val(), counts.Val())
}

func summary(id string, def, counts map[string]string) (Rollout, Counts, error) {
	if len(def) == 0 {
		return Rollout{}, Counts{}, fmt.Errorf("ledger: rollout %q: %w", id, ErrRolloutNotFound)
	}
	ms, err := strconv.ParseInt(def["created_at_ms"], 10, 64)
	if err != nil {
		return Rollout{}, Counts{}, fmt.Errorf("ledger: rollout %q: created_at_ms %q: %w", id, def["created_at_ms"], err)
	}
	c, err := parseCounts(counts)
	if err != nil {
		return Rollout{}, Counts{}, fmt.Errorf("ledger: rollout %q: %w", id, err)
	}
	r := Rollout{
		ID:          id,
		ConnectorID: versori.ConnectorID(def["connector_id"]),
		Version:     def["version"],
		CreatedAt:   time.UnixMilli(ms),
		Queue:       def["queue"],
		Total:       c.Total,
	}
	return r, c, nil
}

func parseCounts(m map[string]string) (Counts, error) {
	c := Counts{
		ByClass:         map[string]int64{},
		RetryingByClass: map[string]int64{},
		ByVersion:       map[string]int64{},
	}
	for k, v := range m {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return Counts{}, fmt.Errorf("counter %q: %w", k, err)
		}
		if n == 0 {
			continue
		}
		switch name, sub, _ := strings.Cut(k, ":"); name {
		case "total":
			c.Total = n
		case "first_finish_ms":
			c.FirstFinish = time.UnixMilli(n)
		case "last_finish_ms":
			c.LastFinish = time.UnixMilli(n)
		case string(Pending):
			c.Pending = n
		case "retrying":
			c.Retrying = n
		case string(Succeeded):
			c.Succeeded = n
		case string(Failed):
			c.Failed = n
		case string(Cancelled):
			c.Cancelled = n
		case "class":
			c.ByClass[sub] = n
		case "retry":
			c.RetryingByClass[sub] = n
		case "version":
			c.ByVersion[sub] = n
		}
	}
	return c, nil
}

// Rollouts returns up to limit rollouts with their counters, most recently
// created first; limit <= 0 means all. Index members whose definition is
// gone (expired, or left by a Delete that stopped half-way) are skipped and
// removed from the index, and the list is filled up from older ones.
func (l *Ledger) Rollouts(ctx context.Context, limit int) ([]RolloutSummary, error) {
	page := int64(limit)
	if limit <= 0 || page > pruneBatch {
		page = pruneBatch
	}
	var out []RolloutSummary
	seen := map[string]bool{}
	for start := int64(0); ; {
		ids, err := l.rdb.ZRevRange(ctx, l.indexKey(), start, start+page-1).Result()
		if err != nil {
			return nil, fmt.Errorf("ledger: list rollouts: %w", err)
		}
		if len(ids) == 0 {
			return out, nil
		}
		type reads struct{ def, counts *redis.MapStringStringCmd }
		rs := make([]reads, len(ids))
		pipe := l.rdb.Pipeline()
		for i, id := range ids {
			k := l.keys(id)
			rs[i] = reads{pipe.HGetAll(ctx, k.def), pipe.HGetAll(ctx, k.counts)}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("ledger: list rollouts: %w", err)
		}
		var gone []string
		for i, id := range ids {
			r, c, err := summary(id, rs[i].def.Val(), rs[i].counts.Val())
			if errors.Is(err, ErrRolloutNotFound) {
				gone = append(gone, id)
				continue
			}
			if err != nil {
				return nil, err
			}
			if seen[id] { // moved by a concurrent prune
				continue
			}
			seen[id] = true
			out = append(out, RolloutSummary{Rollout: r, Counts: c})
			if limit > 0 && len(out) == limit {
				break
			}
		}
		if limit > 0 && len(out) >= limit || int64(len(ids)) < page {
			if _, err := l.unindex(ctx, gone); err != nil {
				return nil, err
			}
			return out, nil
		}
		n, err := l.unindex(ctx, gone)
		if err != nil {
			return nil, err
		}
		start += page - int64(n)
	}
}

// RolloutCount returns how many rollouts the ledger holds (one ZCARD).
func (l *Ledger) RolloutCount(ctx context.Context) (int64, error) {
	n, err := l.rdb.ZCard(ctx, l.indexKey()).Result()
	if err != nil {
		return 0, fmt.Errorf("ledger: count rollouts: %w", err)
	}
	return n, nil
}

// Delete removes a rollout and all its records. It reports whether the
// rollout existed. Redis frees the records in the background (UNLINK).
func (l *Ledger) Delete(ctx context.Context, id string) (bool, error) {
	return l.DeleteWith(ctx, id)
}
