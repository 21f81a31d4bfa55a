package taskstest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
)

// Ledger is an in-memory tasks.OutcomeLedger for tests: it keeps records
// as *ledger.Ledger does (a succeeded record never changes, a failed or
// cancelled one only to succeeded, an attempt counts only on a pending
// record) and remembers every call. It does not check IDs or classes. The
// zero value is not usable; call NewLedger. It is safe for concurrent use.
type Ledger struct {
	// Fail, if set, is asked before each call; an error it returns is
	// returned by the call, which then changes nothing. method is one of
	// "Org", "CreateRollout", "AddOrgs", "Finish", "Attempt".
	Fail func(method, rolloutID string, orgID versori.OrgID) error

	mu       sync.Mutex
	now      func() time.Time
	rollouts map[string]ledger.Rollout
	records  map[string]map[versori.OrgID]ledger.Record
	calls    []Call
}

var _ tasks.OutcomeLedger = (*Ledger)(nil)

// Call is one call the handler made on a Ledger.
type Call struct {
	// Method is "Org", "CreateRollout", "AddOrgs", "Finish" or "Attempt".
	Method    string
	RolloutID string
	// OrgID is empty for CreateRollout; for AddOrgs, the first listed.
	OrgID versori.OrgID
	// Outcome is set for Finish, Attempt for Attempt.
	Outcome ledger.Outcome
	Attempt ledger.Attempt
}

// NewLedger returns an empty Ledger.
func NewLedger() *Ledger {
	return &Ledger{now: time.Now, rollouts: map[string]ledger.Rollout{}, records: map[string]map[versori.OrgID]ledger.Record{}}
}

// Put stores rec (its OrgID set) in the rollout, creating the rollout with
// r's definition if it does not exist. Use it to start a test from a given
// state, such as an organisation that already succeeded.
func (l *Ledger) Put(r ledger.Rollout, rec ledger.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.rollouts[r.ID]; !ok {
		l.rollouts[r.ID] = r
		l.records[r.ID] = map[versori.OrgID]ledger.Record{}
	}
	l.records[r.ID][rec.OrgID] = rec
}

// Record returns the organisation's record, and whether there is one.
func (l *Ledger) Record(rolloutID string, orgID versori.OrgID) (ledger.Record, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rec, ok := l.records[rolloutID][orgID]
	return rec, ok
}

// Calls returns the calls made so far, in order.
func (l *Ledger) Calls() []Call {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// Methods returns the methods of the calls made so far, in order.
func (l *Ledger) Methods() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make([]string, len(l.calls))
	for i, c := range l.calls {
		m[i] = c.Method
	}
	return m
}

// begin records the call and asks Fail; l.mu is held.
func (l *Ledger) begin(c Call) error {
	l.calls = append(l.calls, c)
	if l.Fail != nil {
		return l.Fail(c.Method, c.RolloutID, c.OrgID)
	}
	return nil
}

// find returns the record, or the error *ledger.Ledger would; l.mu is held.
func (l *Ledger) find(rolloutID string, orgID versori.OrgID) (ledger.Record, error) {
	orgs, ok := l.records[rolloutID]
	if !ok {
		return ledger.Record{}, fmt.Errorf("ledger: rollout %q: %w", rolloutID, ledger.ErrRolloutNotFound)
	}
	rec, ok := orgs[orgID]
	if !ok {
		return ledger.Record{}, fmt.Errorf("ledger: organisation %q in rollout %q: %w", orgID, rolloutID, ledger.ErrOrgNotFound)
	}
	return rec, nil
}

// Org implements tasks.OutcomeLedger.
func (l *Ledger) Org(_ context.Context, rolloutID string, orgID versori.OrgID) (ledger.Record, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.begin(Call{Method: "Org", RolloutID: rolloutID, OrgID: orgID}); err != nil {
		return ledger.Record{}, err
	}
	return l.find(rolloutID, orgID)
}

// CreateRollout implements tasks.OutcomeLedger.
func (l *Ledger) CreateRollout(_ context.Context, r ledger.Rollout) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.begin(Call{Method: "CreateRollout", RolloutID: r.ID}); err != nil {
		return false, err
	}
	if old, ok := l.rollouts[r.ID]; ok {
		if old.ConnectorID != r.ConnectorID || old.Version != r.Version {
			return false, fmt.Errorf("ledger: rollout %q: %w", r.ID, ledger.ErrRolloutMismatch)
		}
		return false, nil
	}
	if r.CreatedAt.IsZero() {
		r.CreatedAt = l.now()
	}
	l.rollouts[r.ID] = r
	l.records[r.ID] = map[versori.OrgID]ledger.Record{}
	return true, nil
}

// AddOrgs implements tasks.OutcomeLedger.
func (l *Ledger) AddOrgs(_ context.Context, rolloutID string, orgIDs []versori.OrgID) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := Call{Method: "AddOrgs", RolloutID: rolloutID}
	if len(orgIDs) > 0 {
		c.OrgID = orgIDs[0]
	}
	if err := l.begin(c); err != nil {
		return 0, err
	}
	orgs, ok := l.records[rolloutID]
	if !ok {
		return 0, fmt.Errorf("ledger: rollout %q: %w", rolloutID, ledger.ErrRolloutNotFound)
	}
	added := 0
	for _, id := range orgIDs {
		if _, ok := orgs[id]; !ok {
			orgs[id] = ledger.Record{OrgID: id, State: ledger.Pending, UpdatedAt: l.now()}
			added++
		}
	}
	return added, nil
}

// Finish implements tasks.OutcomeLedger.
func (l *Ledger) Finish(_ context.Context, rolloutID string, orgID versori.OrgID, o ledger.Outcome) (ledger.Finished, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.begin(Call{Method: "Finish", RolloutID: rolloutID, OrgID: orgID, Outcome: o}); err != nil {
		return ledger.Finished{}, err
	}
	if o.State != ledger.Succeeded && o.State != ledger.Failed {
		return ledger.Finished{}, fmt.Errorf("ledger: finish organisation %q with state %q: %w", orgID, o.State, ledger.ErrInvalidOutcome)
	}
	old, err := l.find(rolloutID, orgID)
	if err != nil {
		return ledger.Finished{}, err
	}
	switch {
	case old.State == ledger.Succeeded:
		return ledger.Finished{Pending: l.pending(rolloutID)}, nil
	case old.State != ledger.Pending && o.State != ledger.Succeeded:
		return ledger.Finished{Pending: l.pending(rolloutID)}, nil
	}
	now := l.now()
	rec := ledger.Record{
		OrgID: orgID, State: o.State, Class: o.Class, HTTPStatus: o.HTTPStatus, Attempts: old.Attempts,
		Error: o.Error, ConnectorID: o.ConnectorID, Version: o.Version, Duration: o.Duration,
		FinishedAt: now, UpdatedAt: now,
	}
	if o.CountAttempt {
		rec.Attempts++
	}
	l.records[rolloutID][orgID] = rec
	return ledger.Finished{Changed: true, Pending: l.pending(rolloutID)}, nil
}

// pending counts the rollout's pending records, as the ledger's counter.
func (l *Ledger) pending(rolloutID string) int64 {
	var n int64
	for _, r := range l.records[rolloutID] {
		if r.State == ledger.Pending {
			n++
		}
	}
	return n
}

// Attempt implements tasks.OutcomeLedger.
func (l *Ledger) Attempt(_ context.Context, rolloutID string, orgID versori.OrgID, a ledger.Attempt) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.begin(Call{Method: "Attempt", RolloutID: rolloutID, OrgID: orgID, Attempt: a}); err != nil {
		return err
	}
	rec, err := l.find(rolloutID, orgID)
	if err != nil || rec.State != ledger.Pending {
		return err
	}
	rec.Attempts++
	rec.Class, rec.HTTPStatus, rec.Error, rec.Duration = a.Class, a.HTTPStatus, a.Error, a.Duration
	rec.UpdatedAt = l.now()
	l.records[rolloutID][orgID] = rec
	return nil
}
