// Package agent is Silt's HTTP API: an echo server with the /v1 routes,
// request parsing and validation, response types, and the mapping of
// errors to RFC 9457 problem+json responses with stable codes. It holds no
// SQL and no SDK calls: handlers call the batcher, the fetcher, the
// metadata store and the group coordinator through small interfaces
// declared here.
//
// Contract: every error response is application/problem+json with a
// stable code and a retriable flag; 429 and 503 carry Retry-After. Limits
// (record bytes, headers per record, request bytes, records per request)
// are enforced before anything is buffered; produce bodies reserve the
// in-flight budget by the bytes that arrive and must arrive within the
// body timeout; every response write has its own deadline and fetch
// responses are written in pieces (docs/security.md). /healthz answers while the process runs; /readyz
// answers 200 only while every dependency check passes and the server is
// not shutting down; /metrics serves Prometheus text.
//
// Access: one table (access.go) gives every route its decision, which a
// middleware (guard.go) applies before any handler runs: authenticate
// (401), authorize with package auth (403, before anything a handler
// could answer), apply the key's quotas (429), and audit admin mutations
// that succeeded. Handlers never check permissions; lists filter by what
// the key may describe.
package agent
