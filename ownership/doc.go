// Package ownership elects one owner agent per partition with row locks in
// Postgres, and runs the owner's janitor duties.
//
// Contract:
//   - Every agent heartbeats into the agents table; one whose heartbeat is
//     older than AgentTTL counts as dead.
//   - Every LeaseInterval an agent renews its leases, claims unowned or
//     expired partitions up to its fair share, ceil(partitions / live
//     agents), with SELECT ... FOR UPDATE SKIP LOCKED, and releases what it
//     holds above that share, so a new agent gets work within a few
//     intervals. Each claim increments the partition's epoch.
//   - Owner-only writes (retention, merge, compaction) name the lease epoch
//     and are checked in the same transaction (metadata.ErrFenced): an
//     agent that was paused or cut off cannot act on stale ownership.
//   - Stop releases every lease and removes the agent's row, so a rolling
//     restart moves ownership without waiting for leases to expire. After
//     kill -9, leases expire within LeaseTTL and are claimed by others.
//   - Janitor duties, each on its own interval and all paced by a byte
//     budget: retention (retention.ms, retention.bytes: the log start
//     advances, index rows go), merging small chunks of flush segments into
//     per-partition segments (bytes and offsets unchanged, the index swap is
//     atomic and fenced), key compaction for cleanup.policy=compact (latest
//     record per key, tombstones dropped after delete.retention.ms, offsets
//     kept with gaps), deletion of objects no index row references once a
//     grace period has passed (reads in flight never 404), and deletion of
//     orphans of failed flushes older than a safety window.
package ownership
