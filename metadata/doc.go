// Package metadata is Silt's Postgres store: topics and partitions, the
// batch index, idempotent producer state, the agent registry, leases and
// consumer groups. It exposes domain verbs (CreateTopic, CommitFlush,
// LookupBatches, ...) over a pgxpool.Pool; SQL lives here, next to the verb
// that runs it, and nowhere else.
//
// Contract: every verb takes ctx first and runs in at most one transaction.
// Errors that callers act on are sentinels (ErrTopicExists,
// ErrTopicNotFound, ...) matched with errors.Is; SQLSTATE codes are mapped
// to them inside this package, and connection failures become
// ErrUnavailable. The schema is owned by package migrations; a Store assumes
// it is current.
package metadata
