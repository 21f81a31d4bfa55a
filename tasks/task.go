// Package tasks defines the import task: its type and payload, the producer
// API that enqueues one organisation or a whole rollout, and the handler the
// worker runs for each task.
//
// One task imports one public connector version into one organisation. Its
// asynq task ID is the rollout ID and the organisation ID together, so
// enqueueing the same organisation twice for the same rollout is harmless:
// the second attempt meets asynq.ErrTaskIDConflict, which the producer
// reports as "already enqueued", not as an error.
package tasks

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/import-worker/ratebudget"
	"github.com/versori/import-worker/versori"
)

// TypeImport is the asynq task type of an import task.
const TypeImport = "versori:import"

// DefaultQueue is the asynq queue import tasks go to unless configured
// otherwise.
const DefaultQueue = "imports"

// DefaultMaxRetry is the number of failed attempts an import task may have
// unless TaskOptions.MaxRetry says otherwise.
const DefaultMaxRetry = 10

// MaxPayloadBytes bounds the payload the handler will decode: a real payload
// is a few hundred bytes, so anything larger comes from a foreign producer.
const MaxPayloadBytes = 4 << 10

// maxRolloutIDLen bounds a rollout ID, which names Redis keys, task IDs,
// files and URLs.
const maxRolloutIDLen = 64

// Payload is what an import task carries. It never holds the API key: the
// worker owns the key, and Redis must not see it.
type Payload struct {
	// RolloutID names the rollout the task belongs to.
	RolloutID string `json:"rollout_id"`
	// OrgID is the organisation to import into (parsed:
	// versori.ParseOrgID).
	OrgID versori.OrgID `json:"org_id"`
	// ConnectorID is the public connector (parsed:
	// versori.ParseConnectorID).
	ConnectorID versori.ConnectorID `json:"connector_id"`
	// Version is the version name, or "latest" or "default".
	Version string `json:"version"`
	// Weight is the rollout's share of the fleet's rate while other
	// rollouts have work too: a worker process hands its turns to book a
	// rate slot to the rollouts whose tasks its handlers hold in
	// proportion to their weights (ratebudget.WithFlow), so a small
	// rollout is not queued behind a big one. 0 means 1; at most
	// ratebudget.MaxFlowWeight. Alone, a rollout has the whole rate
	// whatever its weight.
	Weight float64 `json:"weight,omitempty"`
}

// ValidateRolloutID reports whether id can name a rollout: 1 to 64
// characters of letters, digits, '.', '_' and '-', starting with a letter or
// digit.
func ValidateRolloutID(id string) error {
	if !validRolloutID(id) {
		return fmt.Errorf("invalid rollout ID %q: want 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit", truncate(id, 80))
	}
	return nil
}

// validRolloutID is the rule ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$, which
// keeps rollout IDs safe inside Redis keys, task IDs, file names and URLs.
// Written out rather than a regexp: every task's payload is checked (the
// regexp was a fifth of DecodePayload's time).
func validRolloutID(id string) bool {
	if id == "" || len(id) > maxRolloutIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// Validate checks every field of the payload. The organisation and
// connector IDs come parsed (their types say so): only a zero one, a field
// left unset, is refused.
func (p Payload) Validate() error {
	if err := ValidateRolloutID(p.RolloutID); err != nil {
		return err
	}
	if p.OrgID == "" {
		return &versori.InvalidIDError{Kind: "organisation", ID: `""`, Problem: "is empty"}
	}
	if p.ConnectorID == "" {
		return &versori.InvalidIDError{Kind: "connector", ID: `""`, Problem: "is empty"}
	}
	if err := ValidateWeight(p.Weight); err != nil {
		return err
	}
	return versori.ValidateVersion(p.Version)
}

// ValidateWeight reports whether w can be a rollout's weight: a finite
// number in [0, ratebudget.MaxFlowWeight], 0 meaning the default 1. The
// budget would read anything else as 1 or the maximum; refusing it at the
// producer tells whoever chose it.
func ValidateWeight(w float64) error {
	if math.IsNaN(w) || math.IsInf(w, 0) || w < 0 || w > ratebudget.MaxFlowWeight {
		return fmt.Errorf("invalid weight %v: want a number from 0 to %v (0 means 1)", w, ratebudget.MaxFlowWeight)
	}
	return nil
}

// TaskID is the asynq task ID of the task importing into orgID for
// rolloutID. It is unique per rollout and organisation, which is what makes
// enqueueing idempotent.
func TaskID(rolloutID string, orgID versori.OrgID) string {
	return rolloutID + ":" + string(orgID)
}

// DecodePayload decodes and validates a task payload: the edge where a
// task's organisation and connector IDs are parsed (versori.ParseOrgID),
// so a payload from another producer spelling them in lower case imports
// into, and records, the canonical ID. It refuses oversized payloads,
// unknown shapes and invalid IDs with an error naming the problem; the
// handler archives such tasks instead of retrying them.
func DecodePayload(data []byte) (Payload, error) {
	var p Payload
	if len(data) > MaxPayloadBytes {
		return p, fmt.Errorf("decode payload: %d bytes, at most %d", len(data), MaxPayloadBytes)
	}
	// json.Unmarshal rather than a Decoder: one pass over the bytes, no
	// copy (the Decoder was most of this function's time, and it runs for
	// every task). It refuses data after the object too.
	if err := json.Unmarshal(data, &p); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) && strings.Contains(se.Error(), "after top-level value") {
			return Payload{}, errors.New("decode payload: trailing data after the JSON object")
		}
		return Payload{}, fmt.Errorf("decode payload: %w", err)
	}
	// In the payload's own order, so a payload missing several fields is
	// always told of the same one (a map would pick one at random).
	for _, f := range [...]struct{ name, v string }{
		{"rollout_id", p.RolloutID}, {"org_id", string(p.OrgID)}, {"connector_id", string(p.ConnectorID)}, {"version", p.Version},
	} {
		if f.v == "" {
			return Payload{}, fmt.Errorf("decode payload: missing field %q", f.name)
		}
	}
	if err := ValidateRolloutID(p.RolloutID); err != nil {
		return Payload{}, fmt.Errorf("decode payload: %w", err)
	}
	org, err := versori.ParseOrgID(string(p.OrgID))
	if err != nil {
		return Payload{}, fmt.Errorf("decode payload: %w", relabel(err, "organisation"))
	}
	connector, err := versori.ParseConnectorID(string(p.ConnectorID))
	if err != nil {
		return Payload{}, fmt.Errorf("decode payload: %w", relabel(err, "connector"))
	}
	p.OrgID, p.ConnectorID = org, connector
	if err := p.Validate(); err != nil {
		return Payload{}, fmt.Errorf("decode payload: %w", err)
	}
	return p, nil
}

// TaskOptions are the asynq options every import task gets.
type TaskOptions struct {
	// Queue is the asynq queue. Default DefaultQueue.
	Queue string
	// MaxRetry is the number of failed attempts (5xx, timeouts, network
	// errors) before an organisation is recorded as exhausted. Rate limiting
	// and a paused key never use one up. Default DefaultMaxRetry; must be
	// at least 1, because asynq archives on the first error of a task with
	// none.
	MaxRetry int
	// Timeout bounds one run of the handler: the wait for a budget slot plus
	// the API call. Default 2 minutes.
	Timeout time.Duration
	// TaskID, if set, replaces TaskID(rollout, organisation): a second
	// task for an organisation whose first is stuck (orphaned by a killed
	// worker) must not conflict with it. The ledger still records the
	// organisation once.
	TaskID string
}

func (o TaskOptions) withDefaults() TaskOptions {
	if o.Queue == "" {
		o.Queue = DefaultQueue
	}
	if o.MaxRetry <= 0 {
		o.MaxRetry = DefaultMaxRetry
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	return o
}

// NewImportTask returns the task importing p, with its ID and options set.
func NewImportTask(p Payload, opts TaskOptions) (*asynq.Task, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	data, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode payload: %w", err)
	}
	opts = opts.withDefaults()
	id := opts.TaskID
	if id == "" {
		id = TaskID(p.RolloutID, p.OrgID)
	}
	return asynq.NewTask(TypeImport, data,
		asynq.TaskID(id),
		asynq.Queue(opts.Queue),
		asynq.MaxRetry(opts.MaxRetry),
		asynq.Timeout(opts.Timeout),
	), nil
}

// relabel names an invalid ID as the task's errors always have
// ("invalid organisation ...": archived tasks keep the message).
func relabel(err error, kind string) error {
	var ie *versori.InvalidIDError
	if errors.As(err, &ie) {
		c := *ie
		c.Kind = kind
		return &c
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
