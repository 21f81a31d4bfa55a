package tasks

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/orglist"
	"github.com/versori/import-worker/versori"
)

// Rollout names what a producer imports, and where.
type Rollout struct {
	// ID names the rollout; see ValidateRolloutID.
	ID string
	// ConnectorID is the public connector (parsed:
	// versori.ParseConnectorID).
	ConnectorID versori.ConnectorID
	// Version is the version name, or "latest" or "default".
	Version string
}

// Validate checks the rollout's fields. The connector ID comes parsed, in
// canonical form, so a re-run spelling it in another case is the same
// rollout, not "another connector"; only a zero one is refused.
func (r Rollout) Validate() error {
	if err := ValidateRolloutID(r.ID); err != nil {
		return err
	}
	if r.ConnectorID == "" {
		return &versori.InvalidIDError{Kind: "connector", ID: `""`, Problem: "is empty"}
	}
	return versori.ValidateVersion(r.Version)
}

// Defaults of ProducerConfig.
const (
	// DefaultConcurrency is how many enqueue calls a Producer keeps in
	// flight.
	DefaultConcurrency = 32
	// DefaultBatchSize is how many organisations a Producer registers in
	// the ledger per round trip.
	DefaultBatchSize = 500
)

// ProducerConfig configures a Producer. The zero value is usable.
type ProducerConfig struct {
	// Task sets the queue, attempts and timeout of every task.
	Task TaskOptions
	// Concurrency is how many enqueue calls are in flight at once. asynq
	// enqueues one task per round trip; keeping many in flight is what
	// makes a 100,000-organisation rollout fast. Default DefaultConcurrency.
	Concurrency int
	// BatchSize is how many organisations are registered in the ledger per
	// round trip. Default DefaultBatchSize.
	BatchSize int
	// Ledger configures the ledger the producer records rollouts in; it must
	// match the workers' (the default prefix, unless both change it).
	Ledger ledger.Options
}

// Producer enqueues import tasks and records them in the rollout ledger.
// Other Go systems use it to start rollouts; the enqueue CLI is built on it.
// It is safe for concurrent use.
type Producer struct {
	client *asynq.Client
	ledger *ledger.Ledger
	cfg    ProducerConfig
}

// NewProducer returns a producer on rdb. The caller keeps ownership of rdb
// and closes it after the producer is done.
func NewProducer(rdb redis.UniversalClient, cfg ProducerConfig) *Producer {
	cfg.Task = cfg.Task.withDefaults()
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	return &Producer{
		client: asynq.NewClientFromRedisClient(rdb),
		ledger: ledger.New(rdb, cfg.Ledger),
		cfg:    cfg,
	}
}

// Ledger returns the ledger the producer writes to.
func (p *Producer) Ledger() *ledger.Ledger { return p.ledger }

// Summary counts what an enqueue call did.
type Summary struct {
	// Enqueued is the number of tasks added to the queue.
	Enqueued int
	// AlreadyEnqueued is the number of organisations skipped because the
	// rollout already had them: queued, running, or already settled.
	AlreadyEnqueued int
}

// Total is Enqueued plus AlreadyEnqueued.
func (s Summary) Total() int { return s.Enqueued + s.AlreadyEnqueued }

// ErrRolloutMismatch is returned when a rollout ID is reused for another
// connector or version.
var ErrRolloutMismatch = ledger.ErrRolloutMismatch

// ErrQueueMismatch is returned when a rollout ID is reused on another queue
// than the one its tasks were enqueued on.
var ErrQueueMismatch = ledger.ErrQueueMismatch

// CreateRollout records the rollout's definition, with the producer's
// queue, in the ledger. Calling it again with the same definition is
// harmless; with another connector or version it returns an error wrapping
// ErrRolloutMismatch, on another queue one wrapping ErrQueueMismatch.
func (p *Producer) CreateRollout(ctx context.Context, r Rollout) error {
	if err := r.Validate(); err != nil {
		return err
	}
	_, err := p.ledger.CreateRollout(ctx, ledger.Rollout{ID: r.ID, ConnectorID: r.ConnectorID, Version: r.Version, CreatedAt: time.Now(), Queue: p.cfg.Task.Queue})
	if err != nil {
		return fmt.Errorf("create rollout %s: %w", r.ID, err)
	}
	return nil
}

// Enqueue enqueues the import of one organisation. It reports whether a
// task was added: false, with a nil error, means the organisation was
// already enqueued for this rollout (asynq.ErrTaskIDConflict) or already
// settled, which is no error for the caller.
func (p *Producer) Enqueue(ctx context.Context, r Rollout, orgID versori.OrgID) (bool, error) {
	s, err := p.EnqueueAll(ctx, r, slices.Values([]versori.OrgID{orgID}), nil)
	return s.Enqueued == 1, err
}

// EnqueueAll records the rollout and enqueues every organisation orgIDs
// yields, reading it as a stream: memory stays bounded by BatchSize and
// Concurrency whatever the length of the list. The IDs come parsed
// (versori.ParseOrgID, or orglist.ParseIDs for a stream of strings), in
// canonical form, so one organisation spelt in several cases is one record
// and one task. Organisations the rollout
// already holds are not enqueued again unless their record is pending and
// their task is missing (a producer that crashed between the two writes),
// so running the same rollout twice enqueues only what is missing.
//
// progress, if not nil, is called after each batch with the running totals.
// On error the summary counts what was done; calling again resumes.
func (p *Producer) EnqueueAll(ctx context.Context, r Rollout, orgIDs iter.Seq[versori.OrgID], progress func(Summary)) (Summary, error) {
	var sum Summary
	if err := p.CreateRollout(ctx, r); err != nil {
		return sum, err
	}
	for batch := range orglist.Batches(orgIDs, p.cfg.BatchSize) {
		s, err := p.enqueueBatch(ctx, r, batch)
		sum.Enqueued += s.Enqueued
		sum.AlreadyEnqueued += s.AlreadyEnqueued
		if progress != nil {
			progress(sum)
		}
		if err != nil {
			return sum, err
		}
	}
	return sum, nil
}

func (p *Producer) enqueueBatch(ctx context.Context, r Rollout, orgIDs []versori.OrgID) (Summary, error) {
	var sum Summary
	states, err := p.ledger.Register(ctx, r.ID, orgIDs)
	if err != nil {
		return sum, fmt.Errorf("enqueue rollout %s: %w", r.ID, err)
	}
	todo := make([]versori.OrgID, 0, len(orgIDs))
	for i, st := range states {
		if st == "" || st == ledger.Pending {
			todo = append(todo, orgIDs[i])
		} else {
			sum.AlreadyEnqueued++
		}
	}

	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
		next     = make(chan versori.OrgID)
	)
	workers := min(p.cfg.Concurrency, len(todo))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for org := range next {
				added, err := p.enqueueOne(ctx, r, org)
				mu.Lock()
				switch {
				case err != nil:
					if firstErr == nil {
						firstErr = err
					}
				case added:
					sum.Enqueued++
				default:
					sum.AlreadyEnqueued++
				}
				mu.Unlock()
			}
		}()
	}
	for _, org := range todo {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		next <- org
	}
	close(next)
	wg.Wait()
	return sum, firstErr
}

func (p *Producer) enqueueOne(ctx context.Context, r Rollout, orgID versori.OrgID) (bool, error) {
	t, err := NewImportTask(Payload{RolloutID: r.ID, OrgID: orgID, ConnectorID: r.ConnectorID, Version: r.Version}, p.cfg.Task)
	if err != nil {
		return false, err
	}
	_, err = p.client.EnqueueContext(ctx, t)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, asynq.ErrTaskIDConflict):
		return false, nil
	default:
		return false, fmt.Errorf("enqueue org %s: %w", orgID, err)
	}
}
