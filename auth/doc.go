// Package auth decides who a request comes from and what it may do, for
// every door onto Silt (the HTTP API and the Kafka listener): API
// keys (silt_<id>_<secret>, only a SHA-256 stored), Kafka-style ACLs
// (resource type x pattern x operations, or admin), per-key quotas and the
// audit log of admin mutations. It knows nothing of HTTP.
//
// Contract: Authenticate answers from a cache that NOTIFY on
// metadata.KeysChannel invalidates at once and a short TTL bounds, so a
// revoked key stops working on every agent within seconds; Watch lets a
// long request end when its key is revoked or loses the ACL it relied on.
// Authorize is a pure function of a Principal.
package auth
