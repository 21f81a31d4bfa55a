package rollout

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/versori/import-worker/gate"
	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/orglist"
	"github.com/versori/import-worker/tasks"
	"github.com/versori/import-worker/versori"
)

// Spec defines a rollout to create or re-run.
type Spec struct {
	// ID names the rollout; empty means a new ULID. Re-using an ID
	// enqueues only what the rollout does not hold yet.
	ID string
	// ConnectorID is the public connector, parsed where it came in
	// (versori.ParseConnectorID, or ParseConnector for an *InputError).
	ConnectorID versori.ConnectorID
	// Version is the version name, or "latest" or "default".
	Version string
	// SkipInvalid enqueues the valid IDs even when some are invalid.
	SkipInvalid bool
	// CallbackURL, if set, gets one signed POST of the rollout's final
	// status. The caller checks its host against the allowed hosts
	// (AllowedHosts.Check); the worker checks it again.
	CallbackURL string

	// Waves, when set, releases the organisations wave by wave, in list
	// order (see ParseWaves): "10,10%,100%". Empty: one wave.
	Waves string
	// ListSize is the number of distinct organisations in the list, which
	// resolves the percentages of Waves; Enqueue sets it from the spool.
	ListSize int
	// Bake is the wait after a wave has finished before the next.
	Bake time.Duration
	// MaxFailureRatio is each wave's gate (failed / finished at most it);
	// nil means DefaultMaxFailureRatio.
	MaxFailureRatio *float64
	// Weight is the rollout's share of the fleet's rate while other
	// rollouts have work; 0 means DefaultWeight.
	Weight float64
	// Gate, if set, is a PromQL gate each finished wave must pass, after
	// its bake, before the next is released (the worker measures it
	// against GATE_PROMETHEUS_URL).
	Gate *gate.Spec
}

// ParseConnector parses a connector ID given by a user
// (versori.ParseConnectorID); the error is an *InputError.
func ParseConnector(s string) (versori.ConnectorID, error) {
	id, err := versori.ParseConnectorID(s)
	if err != nil {
		return "", inputErr(err)
	}
	return id, nil
}

// Canonical validates s and returns it with its defaults set. An empty ID
// stays empty. The connector ID comes parsed; only a zero one is refused.
// Errors are *InputError.
func (s Spec) Canonical() (Spec, error) {
	if s.ID != "" {
		if err := tasks.ValidateRolloutID(s.ID); err != nil {
			return s, inputErr(err)
		}
	}
	if s.ConnectorID == "" {
		return s, inputErr(&versori.InvalidIDError{Kind: "connector ID", ID: `""`, Problem: "is empty"})
	}
	if err := versori.ValidateVersion(s.Version); err != nil {
		return s, inputErr(err)
	}
	if s.Waves != "" {
		if _, err := ParseWaves(s.Waves); err != nil {
			return s, inputErr(err)
		}
	}
	if err := CheckBake(s.Bake); err != nil {
		return s, inputErr(err)
	}
	if s.MaxFailureRatio != nil {
		if err := CheckRatio(*s.MaxFailureRatio); err != nil {
			return s, inputErr(err)
		}
	}
	if s.Weight == 0 {
		s.Weight = DefaultWeight
	}
	if err := CheckWeight(s.Weight); err != nil {
		return s, inputErr(err)
	}
	if s.Gate != nil {
		g := s.Gate.WithDefaults()
		if err := g.Validate(); err != nil {
			return s, inputErr(err)
		}
		s.Gate = &g
	}
	return s, nil
}

// Plan resolves s's waves for a list of s.ListSize organisations. Errors
// are *InputError.
func (s Spec) Plan() (Plan, error) {
	p := Plan{Waves: s.Waves, Bake: s.Bake, MaxFailureRatio: DefaultMaxFailureRatio, Weight: cmp.Or(s.Weight, DefaultWeight)}
	if s.MaxFailureRatio != nil {
		p.MaxFailureRatio = *s.MaxFailureRatio
	}
	if s.Gate != nil {
		b, err := json.Marshal(s.Gate)
		if err != nil {
			return p, inputErr(err)
		}
		p.Gate = string(b)
	}
	if s.Waves == "" {
		return p, nil
	}
	waves, err := ParseWaves(s.Waves)
	if err != nil {
		return p, inputErr(err)
	}
	bounds, err := ResolveWaves(waves, s.ListSize)
	if err != nil {
		return p, inputErr(err)
	}
	// The last wave is the rest of the list, whatever a re-run adds.
	p.Bounds = bounds[:len(bounds)-1]
	return p, nil
}

// Invalid is an invalid organisation ID of a list: Index is its position
// (0-based in a JSON array or NDJSON body, the 1-based line number in a
// file or CSV), ID the value as given (truncated), Problem what is wrong.
type Invalid struct {
	Index   int    `json:"index"`
	ID      string `json:"id"`
	Problem string `json:"problem"`
}

// Spool holds a list's distinct valid organisation IDs, parsed, in a
// temporary file, with counts of what was dropped. Filling it first
// and enqueueing from it second means nothing is enqueued when the list
// holds invalid IDs, and memory holds only the de-duplication set (about
// 16 bytes an ID) whatever the length of the list. It is not safe for
// concurrent use; Close removes the file.
type Spool struct {
	f    *os.File
	w    *bufio.Writer
	seen orglist.Set
	// Unique, Duplicates and InvalidCount count the distinct valid IDs,
	// the repeats dropped and the invalid values.
	Unique, Duplicates, InvalidCount int
	// Invalid lists the first MaxListedInvalid invalid values.
	Invalid []Invalid
}

// NewSpool returns an empty spool in the temporary directory.
func NewSpool() (*Spool, error) {
	f, err := os.CreateTemp("", "rollout-orgs-*.txt")
	if err != nil {
		return nil, fmt.Errorf("spool file: %w", err)
	}
	return &Spool{f: f, w: bufio.NewWriter(f)}, nil
}

// Add parses one value at index (versori.ParseOrgID) and adds it if valid,
// else counts and lists it as invalid (and returns the problem as invalid).
// It reports whether the value was a new valid ID (false for a duplicate).
// A write error of the spool file is returned as err with added false.
func (s *Spool) Add(index int, raw string) (added bool, invalid error, err error) {
	id, verr := versori.ParseOrgID(raw)
	if verr != nil {
		s.AddInvalid(index, raw, verr)
		return false, verr, nil
	}
	ok, err := s.AddID(id)
	return ok, nil, err
}

// AddInvalid counts and lists an invalid value.
func (s *Spool) AddInvalid(index int, raw string, problem error) {
	s.InvalidCount++
	if len(s.Invalid) < MaxListedInvalid {
		p := problem.Error()
		var ie *versori.InvalidIDError
		if errors.As(problem, &ie) {
			p = ie.Problem
		}
		s.Invalid = append(s.Invalid, Invalid{Index: index, ID: truncate(raw, 80), Problem: p})
	}
}

// AddID adds a parsed ID and reports whether it was new.
func (s *Spool) AddID(id versori.OrgID) (bool, error) {
	if !s.seen.Add(string(id)) {
		s.Duplicates++
		return false, nil
	}
	s.Unique++
	s.w.WriteString(string(id))
	if err := s.w.WriteByte('\n'); err != nil {
		return false, fmt.Errorf("spool file: %w", err)
	}
	return true, nil
}

// IDs yields the spooled IDs, from the start; a read error stops the
// sequence and is left in *err.
func (s *Spool) IDs() (iter.Seq[versori.OrgID], *error) {
	var err error
	return func(yield func(versori.OrgID) bool) {
		if err = s.w.Flush(); err != nil {
			err = fmt.Errorf("spool file: %w", err)
			return
		}
		if _, err = s.f.Seek(0, io.SeekStart); err != nil {
			err = fmt.Errorf("spool file: %w", err)
			return
		}
		sc := bufio.NewScanner(s.f)
		for sc.Scan() {
			// The spool holds only what AddID wrote: parsed IDs.
			if !yield(versori.OrgID(sc.Text())) {
				return
			}
		}
		if sc.Err() != nil {
			err = fmt.Errorf("read spool file: %w", sc.Err())
		}
	}, &err
}

// Close removes the spool file.
func (s *Spool) Close() error {
	s.f.Close()
	return os.Remove(s.f.Name())
}

// Result is what Enqueue did; the first five fields are the contract of
// design.md (`enqueue --json`, the answer of POST /v1/rollouts).
type Result struct {
	RolloutID       string `json:"rollout_id"`
	Enqueued        int    `json:"enqueued"`
	AlreadyEnqueued int    `json:"already_enqueued"`
	Duplicates      int    `json:"duplicates"`
	Invalid         int    `json:"invalid"`
	// Organisations is the number of distinct valid IDs in the list.
	Organisations int    `json:"organisations"`
	ConnectorID   string `json:"connector_id"`
	Version       string `json:"version"`
	// Created is false when the call re-ran an existing rollout.
	Created bool `json:"created"`
}

// Check validates spec against a filled spool without writing anything:
// an *InputError wrapping ErrInvalidOrganisations when the list holds
// invalid IDs and spec.SkipInvalid is false, or ErrNoOrganisations.
func Check(spec Spec, sp *Spool) error {
	switch {
	case sp.InvalidCount > 0 && !spec.SkipInvalid:
		return inputErr(fmt.Errorf("%w: %d invalid organisation ID(s); nothing enqueued (fix the list or skip invalid IDs)", ErrInvalidOrganisations, sp.InvalidCount))
	case sp.Unique == 0:
		return inputErr(ErrNoOrganisations)
	}
	return nil
}

// Create records the rollout of spec (a new ULID when spec.ID is empty)
// and its callback URL, and reports whether it is new. It is idempotent;
// another connector or version under the same ID wraps ErrMismatch, another
// queue ErrQueueMismatch. spec must be Canonical.
func (m *Manager) Create(ctx context.Context, spec Spec) (Spec, bool, error) {
	if spec.ID == "" {
		spec.ID = ulid.Make().String()
	} else if err := m.revive(ctx, spec.ID); err != nil && !errors.Is(err, ErrNotFound) {
		return spec, false, err // retention.go: a re-run must not expire
	}
	plan, err := spec.Plan()
	if err != nil {
		return spec, false, err
	}
	created, err := m.led.CreateRollout(ctx, ledger.Rollout{ID: spec.ID, ConnectorID: spec.ConnectorID, Version: spec.Version, CreatedAt: m.opts.Now(), Queue: m.opts.Queue})
	if err != nil {
		return spec, false, err
	}
	// A rollout enqueued whole before plans existed gets one now, with
	// what it holds counted as released.
	var held int64
	if !created {
		_, c, err := m.led.Rollout(ctx, spec.ID)
		if err != nil {
			return spec, false, err
		}
		held = c.Total
	}
	if _, err := m.savePlan(ctx, spec.ID, plan, held); err != nil {
		return spec, created, err
	}
	if spec.CallbackURL != "" {
		if err := m.rdb.Set(ctx, m.callbackKey(spec.ID), spec.CallbackURL, 0).Err(); err != nil {
			return spec, created, fmt.Errorf("record callback of rollout %s: %w", spec.ID, err)
		}
	}
	return spec, created, nil
}

// Enqueue creates (or re-runs) the rollout of spec and enqueues every
// organisation of sp that it does not hold yet, through tasks.Producer.
// It checks spec and sp first (Check): nothing is written for bad input.
// progress, if not nil, is called after each batch. On error the result
// counts what was done; calling again with the same spec.ID resumes.
func (m *Manager) Enqueue(ctx context.Context, spec Spec, sp *Spool, progress func(tasks.Summary)) (Result, error) {
	spec, err := spec.Canonical()
	res := Result{RolloutID: spec.ID, Duplicates: sp.Duplicates, Invalid: sp.InvalidCount, Organisations: sp.Unique, ConnectorID: spec.ConnectorID.String(), Version: spec.Version}
	if err != nil {
		return res, err
	}
	if err := Check(spec, sp); err != nil {
		return res, err
	}
	spec.ListSize = sp.Unique
	spec, res.Created, err = m.Create(ctx, spec)
	res.RolloutID = spec.ID
	if err != nil {
		return res, err
	}
	ids, readErr := sp.IDs()
	sum, err := m.EnqueueIDs(ctx, spec, ids, progress)
	if err == nil {
		err = *readErr
	}
	res.Enqueued, res.AlreadyEnqueued = sum.Enqueued, sum.AlreadyEnqueued
	return res, err
}

// EnqueueIDs adds the organisations ids yields (parsed:
// versori.ParseOrgID, orglist.ParseIDs) to a rollout already created, in order, as
// pending records in its backlog, from which the fleet's Releaser hands
// them to the queue (wave by wave, and sharing the fleet with other
// rollouts by weight). It streams: memory is bounded whatever the length
// of ids. Enqueued counts the organisations new to the rollout,
// AlreadyEnqueued those it held.
func (m *Manager) EnqueueIDs(ctx context.Context, spec Spec, ids iter.Seq[versori.OrgID], progress func(tasks.Summary)) (tasks.Summary, error) {
	var sum tasks.Summary
	defer m.settle(context.WithoutCancel(ctx), spec.ID) // retention.go
	if err := m.nextCallbackRound(ctx, spec.ID); err != nil {
		return sum, err
	}
	waves := spec.Waves != ""
	for batch := range orglist.Batches(ids, m.led.BatchSize()) {
		states, err := m.led.Enlist(ctx, spec.ID, batch)
		for _, st := range states {
			if st == "" {
				sum.Enqueued++
			} else {
				sum.AlreadyEnqueued++
			}
		}
		if err == nil {
			// Each batch, so the release starts while the list is read,
			// and a rollout the releaser retired meanwhile comes back.
			err = m.activate(ctx, spec.ID, m.opts.Queue, waves)
		}
		if progress != nil {
			progress(sum)
		}
		if err != nil {
			return sum, err
		}
	}
	return sum, nil
}

// EnqueueList is Enqueue for a list of IDs in memory or a stream: it
// spools ids (positions are 0-based indexes) and enqueues them. For Go
// producers; the CLI and the API fill their own spool to report invalid
// values as they read them.
//
// The invalid values are listed (the first MaxListedInvalid) whether or not
// spec.SkipInvalid is set.
func (m *Manager) EnqueueList(ctx context.Context, spec Spec, ids iter.Seq[string]) (Result, []Invalid, error) {
	sp, err := NewSpool()
	if err != nil {
		return Result{}, nil, err
	}
	defer sp.Close()
	i := 0
	for raw := range ids {
		if _, _, err := sp.Add(i, raw); err != nil {
			return Result{}, sp.Invalid, err
		}
		i++
	}
	res, err := m.Enqueue(ctx, spec, sp, nil)
	return res, sp.Invalid, err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
