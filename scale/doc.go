// Package scale simulates many agents against one Postgres to find where
// Silt's metadata stops scaling (`silt scale`, `make bench-scale`).
//
// It calls the real metadata.Store verbs, the real ownership.Owner (agent
// heartbeats, lease rounds and, optionally, the janitor) and the real
// groups.Coordinator, each simulated agent with a pgx pool of its own; no
// object store is touched but an in-memory one. Five experiments:
//
//   - Load: N agents flush (register a segment, commit K chunks), look up
//     the index, heartbeat and renew leases, and drive consumer groups
//     (member heartbeats and offset commits) at set rates; it reports, per
//     operation, the rate reached and p50/p99 latency, and from Postgres
//     the transactions per second, sessions waiting on locks
//     (pg_stat_activity, pg_locks) and the CPU of the Postgres processes.
//   - Groups: consumer group members only (heartbeats and offset commits
//     through the coordinator, no produce) at each of several group
//     counts, with the first bottleneck read from each run's figures.
//   - Converge: N agents start at once on P partitions; how long until
//     every partition has one owner and every share is within one
//     partition of fair, and again after a fraction of the agents is cut
//     off from Postgres (their leases lapse, as after kill -9).
//   - Index: synthetic index rows loaded with COPY, then fetch lookups at
//     the tail and at random offsets, with the table and index sizes.
//   - Week: a week of produce in simulated time (record timestamps move an
//     hour per round), small flush chunks, the janitor merging and
//     retention at seven days; index rows per GiB stored, day by day.
//
// A suite runs the sweeps and writes their tables (docs/scaling.md quotes
// them). Figures depend on the machine; the report records it.
package scale
