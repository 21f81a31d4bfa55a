// Package rollout owns a rollout's lifecycle, for every program that runs
// one: the enqueue CLI, the HTTP API (cmd/api), the worker (completion
// callbacks) and other Go systems.
//
//   - Create: validate and de-duplicate an organisation list into a Spool
//     (on disk: memory holds only the de-duplication set, whatever the
//     length of the list), then Manager.Enqueue records the rollout and
//     enqueues one task per organisation through tasks.Producer.
//   - Status: Manager.Status, one definition of pending and retrying
//     (see Breakdown) shared by the CLI, the API and the metrics.
//   - Report: Manager.Report streams one Row per organisation to a
//     RowWriter (CSV, NDJSON or a JSON array).
//   - Retry (by outcome class), Cancel, List, Delete.
//   - Callbacks: a rollout created with a callback URL gets one signed POST
//     of its final Status when nothing is left pending (see callback.go).
//
// IDs are parsed once, at the edge, into the types the ledger, the tasks
// and the Versori client take: organisation and connector IDs into
// versori.OrgID and versori.ConnectorID (versori.ParseOrgID: upper-case
// ULIDs) by the list readers (Spool.Add, orglist.Reader) and ParseConnector;
// rollout IDs are checked with tasks.ValidateRolloutID. Inner layers do not
// check them again. Every default lives in one exported constant.
package rollout
