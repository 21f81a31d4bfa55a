// Package ledger is the rollout ledger: for every rollout, its definition and
// one record per organisation, kept in Redis, with counters that a status
// query reads in O(1).
//
// Delivery of import tasks is at-least-once, so every write here is an
// idempotent, atomic Lua script that moves the counters only when a record
// actually changes. The counters are, by construction, a function of the set
// of records: a task delivered twice never counts twice, and Recount can
// prove it.
//
// A worker's handlers read and finish records through a Batcher, which
// sends the reads and finishes of one rollout that arrive while a batch is
// in flight together, in one round trip (FinishAll is the batched finish).
//
// # Lifecycle of an organisation's record
//
//	AddOrgs, Register    -> pending (an organisation already present keeps its record)
//	Attempt  (pending)   -> pending, attempts+1, class of the failed call ("retrying")
//	Finish   (pending)   -> succeeded | failed
//	Finish   (failed)    -> succeeded only (a late success is the truth); failed again is a no-op
//	Finish   (cancelled) -> succeeded only (an in-flight call that landed after the cancel)
//	Finish   (succeeded) -> never changes
//	Requeue  (failed)    -> pending (for a retry; attempts and last error kept)
//	Cancel   (pending)   -> cancelled
//
// # Redis layout (an on-disk format: other tools may read it)
//
// Every key of one rollout carries the rollout ID as a hash tag, so all of
// them live in one Redis Cluster slot and each script touches one slot.
// <p> is Options.Prefix ("versori-import" by default; it must not hold
// braces, or it would become the hash tag of every key).
//
//	<p>:rollout:{<id>}:def     HASH  id, connector_id, version, created_at_ms, queue
//	<p>:rollout:{<id>}:orgs    HASH  organisation ID -> record (compact JSON, below)
//	<p>:rollout:{<id>}:counts  HASH  counter name -> integer (below)
//	<p>:rollouts               ZSET  rollout ID scored by created_at_ms
//	<p>:rollouts_removed       STRING  count of rollouts removed from the index (expired or deleted)
//
// A finished rollout's keys (these three and any other key under its hash
// tag, such as package rollout's callback keys) carry one expiry, the
// retention (Retain; see retention.go); an active one's carry none. An
// index member whose definition is gone is stale: readers skip it and
// Rollouts and PruneIndex remove it.
//
// A record is a JSON object; field order is unspecified, fields whose value
// is empty or zero are omitted, numbers are integers:
//
//	s   state: "pending", "succeeded", "failed" or "cancelled" (always present)
//	c   outcome class of the last call (design.md's vocabulary, e.g. "imported", "server_error")
//	h   HTTP status of the last call
//	a   number of API calls recorded for the organisation
//	e   last error message (at most Options.MaxErrorLen bytes of printable UTF-8)
//	ci  connector ID the API returned, when it is not the rollout's own (the handler leaves it out then)
//	v   version name the API returned
//	d   duration of the last call in microseconds
//	f   when the record reached its state (succeeded, failed or cancelled), Unix milliseconds
//	u   when the record last changed, Unix milliseconds; absent once finished (f says it)
//	q   position (1-based) in the rollout's release order, for a record Enlist added; kept for its life
//
// The counters hash holds:
//
//	total                 organisations added to the rollout
//	pending, succeeded, failed, cancelled
//	                      records in each state (they sum to total)
//	retrying              pending records with at least one attempt
//	retry:<class>         retrying records by the class of their last attempt
//	class:<class>         succeeded and failed records by class
//	version:<name>        succeeded records by the version name the API returned
//	first_finish_ms       when Finish first changed a record, Unix milliseconds
//	last_finish_ms        the latest time Finish changed a record, Unix milliseconds
//
// A counter may be absent (zero) or hold zero; the two times are absent
// until the first Finish.
package ledger
