// Package kafka is Silt's second door onto the log: a Kafka wire-protocol
// listener. Requests are decoded and responses encoded with franz-go's
// kmsg; the work is done by the same services the HTTP API uses: the
// batcher for produce, the fetcher for fetch, the metadata store for
// topics, the group coordinator (package groups) for consumer groups, and
// package auth for keys and ACLs. The package does not import the HTTP
// server (package agent), nor does the HTTP server import it.
//
// Contract:
//   - Stateless, like HTTP: Metadata names one broker, the advertised
//     address (a load balancer's in a cluster), as leader of every
//     partition, so any agent serves any request.
//   - Produce: every RecordBatch is checked (CRC, records, limits) by
//     decoding it. A compressed batch of at least Config.RawBatchMinBytes
//     is stored as the client sent it (its codec and bytes kept); smaller
//     and uncompressed ones are re-encoded with the other records of the
//     flush. acks 1 and -1 answer
//     after the commit, acks 0 never answers. A connection's produce
//     requests commit in the order they arrived.
//   - Fetch returns stored batches with only their base offset patched,
//     waiting up to max_wait_ms (capped) for min_bytes on the commit
//     notifications HTTP long-polls use. Fetch sessions are not kept: every
//     response says "no session", so clients send full requests.
//   - Responses go out in request order on each connection. Connections,
//     request sizes and the bytes of requests and fetch responses in
//     flight are bounded; past the in-flight bound the listener stops
//     reading, which is how Kafka pushes back.
//   - Consumer groups: Kafka's classic protocol, its state in Postgres;
//     JoinGroup and SyncGroup wait in their agent, without locks, until
//     the group's rebalance answers them (woken by NOTIFY), and answer
//     NOT_COORDINATOR when the listener shuts down.
//   - With Config.RequireAuth, a connection authenticates first (SASL
//     PLAIN or SCRAM with an API key, or a TLS client certificate naming
//     one): before that only ApiVersions and SASL are answered. Every
//     request checks the key again and against its ACLs; a revoked key's
//     connections close.
//   - An API or version not served is answered with UNSUPPORTED_VERSION
//     (ApiVersions lists what is served); only an API key or version that
//     kmsg cannot encode closes the connection.
package kafka
