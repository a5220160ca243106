// Package groups coordinates consumer groups on top of package metadata:
// membership with stateless HTTP members, Kafka's range assignment,
// generations and rebalancing, committed offsets, lag, the positions of
// the server-side group fetch, and a Prometheus collector of lag.
//
// Contract:
//   - Every decision about a group (join, heartbeat, leave, commit,
//     describe, delete, the two halves of a group fetch) is taken in one
//     Postgres transaction holding the group's lock (metadata.InGroup:
//     exclusive; a member's offset commit holds it shared, beside the
//     others', metadata.InGroupShared; a heartbeat with nothing else to do
//     checks a snapshot instead), so requests through different agents
//     agree. No state is kept in the process: any agent can serve any
//     request.
//   - Each of those operations first removes members whose last sign of
//     life (join, heartbeat, commit, fetch) is older than their session
//     timeout, and notices topics created, deleted or grown among the
//     subscribed ones; either bumps the generation.
//   - A rebalance (a new member, a member leaving or expiring, a changed
//     subscription, a changed topic) increments the generation by exactly
//     one and recomputes every member's assignment with RangeAssign; the
//     assignment is deterministic given the member ids, their subscriptions
//     and the partition counts.
//   - A member learns of a rebalance from its heartbeat (rejoin) or from a
//     409 (ErrStaleGeneration) and rejoins with its member id. Commits are
//     accepted only from a member at the current generation, for
//     partitions assigned to it, at offsets in [0, high watermark]; a
//     commit without a member id only while the group has no members.
//   - Errors callers act on are this package's sentinels (ErrGroupNotFound,
//     ErrMemberNotFound, ErrStaleGeneration, ...); metadata.ErrUnavailable
//     passes through unchanged.
//
// Kafka's classic group protocol (KafkaJoin, KafkaSync, KafkaHeartbeat,
// KafkaLeave, KafkaCommit, ...) runs on the same tables under the same
// lock, with Kafka's state machine (empty, preparing and completing a
// rebalance, stable), client-side assignment by the group's leader and
// Kafka's timers. A JoinGroup or SyncGroup that must wait for other members
// commits, then waits holding no lock, woken by the Waker (NOTIFY on
// metadata.GroupsChannel from whichever agent changed the group) or at the
// group's next timer. A group is managed by one door at a time
// (ErrProtocolMismatch).
//
// Delivery is at least once: records fetched by a member but not yet
// committed when its partitions move are read again by the next owner.
package groups
