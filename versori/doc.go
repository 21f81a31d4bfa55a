// Package versori is a client for the one part of Versori's Connect API v1
// that the import worker needs: importing a public connector version into an
// organisation, and the lookups a rollout needs around it.
//
// Every outcome of a call maps to exactly one [Class] (see [Classify]); the
// same vocabulary is used by the ledger, the reports, the metrics and the
// logs, so a class name means the same thing everywhere.
//
// The API key is a secret: it is sent in the Authorization header and nowhere
// else, it is scrubbed from anything the server echoes back into an [Error],
// and neither [Config] nor [Client] prints it under any fmt verb.
package versori
