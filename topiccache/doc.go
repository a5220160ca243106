// Package topiccache keeps recent topic descriptions in front of the
// metadata store, so that produce and fetch (over HTTP and Kafka) do not
// read Postgres for every request.
//
// Contract: an entry lives for the cache's TTL. Changes made through the
// same agent call Forget or Put at once; changes made on other agents are
// seen within the TTL (a deleted topic is caught at commit time
// regardless). Concurrent lookups of one name share a single query, which
// runs under its own timeout so that one caller going away does not fail
// the others. The cache holds at most MaxEntries names; past that it
// starts again empty.
package topiccache
