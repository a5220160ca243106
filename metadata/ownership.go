package metadata

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrFenced: the caller no longer holds the partition's lease at the epoch
// it named, so an owner-only write was refused.
var ErrFenced = errors.New("metadata: fenced: lease lost or epoch changed")

func init() { sentinels = append(sentinels, ErrFenced) }

// AgentInfo is an agent's registry row.
type AgentInfo struct {
	ID          string
	Address     string
	Version     string
	StartedAt   time.Time
	HeartbeatAt time.Time
}

// Heartbeat registers the agent or refreshes its heartbeat.
func (s *Store) Heartbeat(ctx context.Context, a AgentInfo) error {
	_, err := s.pool.Exec(ctx, `
		INSERT INTO agents (id, address, version, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, now())
		ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, version = EXCLUDED.version,
		  started_at = EXCLUDED.started_at, heartbeat_at = now()`, a.ID, a.Address, a.Version, a.StartedAt)
	return s.classify("heartbeat", err)
}

// RemoveAgent deletes the agent's row (on clean shutdown).
func (s *Store) RemoveAgent(ctx context.Context, id string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM agents WHERE id = $1`, id)
	return s.classify("remove agent", err)
}

// LiveAgents lists agents whose heartbeat is younger than ttl, by id.
func (s *Store) LiveAgents(ctx context.Context, ttl time.Duration) ([]AgentInfo, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, address, version, started_at, heartbeat_at FROM agents
		WHERE heartbeat_at > now() - $1::interval ORDER BY id`, ttl)
	if err != nil {
		return nil, s.classify("live agents", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AgentInfo, error) {
		var a AgentInfo
		err := r.Scan(&a.ID, &a.Address, &a.Version, &a.StartedAt, &a.HeartbeatAt)
		return a, err
	})
	return out, s.classify("live agents", err)
}

// Lease is a held partition lease.
type Lease struct {
	TopicID   int64
	Partition int32
	Epoch     int64
}

// LeaseConfig tunes SyncLeases.
type LeaseConfig struct {
	AgentTTL time.Duration // heartbeat age past which an agent is dead
	LeaseTTL time.Duration // how long a renewal lasts
}

// LeaseRound is the outcome of one round of leader election.
type LeaseRound struct {
	Claimed  []Lease // leases taken this round
	Released []Lease // leases given up this round (epochs unknown: 0)
	Held     int     // leases held after the round
	// Full is set when All lists every lease held (asked for, or the
	// agent's lease had lapsed or its incarnation changed).
	Full bool
	All  []Lease
}

// SyncLeases runs one round of leader election for agentID (of
// incarnation, unique per process start) in one server-side call
// (silt_sync_leases): it renews the agent's lease, which covers every
// partition it holds, computes its fair share (ceil(partitions / live
// agents)), claims unowned partitions and those of lapsed owners up to
// that share with SELECT ... FOR UPDATE SKIP LOCKED (each claim bumps the
// partition's epoch), and releases what it holds above the share, or above
// floor(partitions / live agents) while another live agent holds less than
// that. A renewal writes one row however many partitions the agent holds.
func (s *Store) SyncLeases(ctx context.Context, agentID string, incarnation int64, cfg LeaseConfig, full bool) (LeaseRound, error) {
	var (
		r                                LeaseRound
		cTop, rTop, aTop, cEpoch, aEpoch []int64
		cPart, rPart, aPart              []int32
		held                             int32
	)
	err := s.pool.QueryRow(ctx, `
		SELECT claimed_topics, claimed_parts, claimed_epochs, released_topics, released_parts, held, is_full,
		       coalesce(all_topics, '{}'), coalesce(all_parts, '{}'), coalesce(all_epochs, '{}')
		FROM silt_sync_leases($1::text, $2::bigint, $3::interval, $4::interval, $5::boolean)`,
		pgx.QueryExecModeSimpleProtocol, agentID, incarnation, cfg.AgentTTL, cfg.LeaseTTL, full).
		Scan(&cTop, &cPart, &cEpoch, &rTop, &rPart, &held, &r.Full, &aTop, &aPart, &aEpoch)
	if err != nil {
		return LeaseRound{}, s.classify("sync leases", err)
	}
	r.Held = int(held)
	for i := range cTop {
		r.Claimed = append(r.Claimed, Lease{TopicID: cTop[i], Partition: cPart[i], Epoch: cEpoch[i]})
	}
	for i := range rTop {
		r.Released = append(r.Released, Lease{TopicID: rTop[i], Partition: rPart[i]})
	}
	if r.Full {
		r.All = make([]Lease, len(aTop))
		for i := range aTop {
			r.All[i] = Lease{TopicID: aTop[i], Partition: aPart[i], Epoch: aEpoch[i]}
		}
	}
	return r, nil
}

// ReleaseLeases gives up every lease agentID holds (on shutdown).
func (s *Store) ReleaseLeases(ctx context.Context, agentID string) error {
	_, err := s.pool.Exec(ctx, `
		WITH r AS (UPDATE leases SET owner_agent = NULL, incarnation = NULL WHERE owner_agent = $1)
		UPDATE agent_leases SET held = 0, expires_at = least(expires_at, now()) WHERE agent_id = $1`, agentID)
	return s.classify("release leases", err)
}

// OwnedPartition is a partition and its current, unexpired owner.
type OwnedPartition struct {
	Topic     string
	TopicID   int64
	Partition int32
	Owner     string
	Epoch     int64
}

// Owners lists, by topic name and partition, up to limit partitions with
// a valid lease after (afterTopic, afterPartition) (limit <= 0: all).
func (s *Store) Owners(ctx context.Context, afterTopic string, afterPartition int32, limit int) ([]OwnedPartition, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT t.name, l.topic_id, l.partition, l.owner_agent, l.epoch
		FROM leases l JOIN topics t ON t.id = l.topic_id
		JOIN agent_leases a ON a.agent_id = l.owner_agent AND a.incarnation = l.incarnation
		WHERE a.expires_at > now() AND (t.name, l.partition) > ($1, $2)
		ORDER BY t.name, l.partition LIMIT $3`, afterTopic, afterPartition, sqlLimit(limit))
	if err != nil {
		return nil, s.classify("owners", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (OwnedPartition, error) {
		var o OwnedPartition
		err := r.Scan(&o.Topic, &o.TopicID, &o.Partition, &o.Owner, &o.Epoch)
		return o, err
	})
	return out, s.classify("owners", err)
}

// ListBatches returns up to limit index rows of a partition from offset
// on, in offset order, with their segments.
func (s *Store) ListBatches(ctx context.Context, topicID int64, partition int32, offset int64, limit int) ([]BatchRef, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT b.base_offset, b.last_offset, b.record_count, b.max_timestamp, s.id, s.key, s.kind, s.size, s.created_at,
		       now() - s.created_at, b.byte_offset, b.byte_length, coalesce(b.delete_horizon, 0), b.batch_count
		FROM batches b JOIN segments s ON s.id = b.segment_id
		WHERE b.topic_id = $1 AND b.partition = $2 AND b.last_offset >= $3
		ORDER BY b.last_offset LIMIT $4`, topicID, partition, offset, limit)
	if err != nil {
		return nil, s.classify("list batches", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (BatchRef, error) {
		var b BatchRef
		err := r.Scan(&b.BaseOffset, &b.LastOffset, &b.Records, &b.MaxTimestamp, &b.SegmentID, &b.SegmentKey, &b.SegmentKind, &b.SegmentSize,
			&b.SegmentAt, &b.SegmentAge, &b.ByteOffset, &b.ByteLength, &b.DeleteHorizon, &b.Batches)
		return b, err
	})
	return out, s.classify("list batches", err)
}

// AdvanceLogStart deletes the index rows below newStart and moves the log
// start offset there, as the lease holder (fenced), in one server-side call.
// Objects left without index rows become unreferenced. It returns the
// bytes the deleted rows referenced.
func (s *Store) AdvanceLogStart(ctx context.Context, agentID string, l Lease, newStart int64) (int64, error) {
	var freed int64
	err := s.pool.QueryRow(ctx, `SELECT freed FROM silt_advance_log_start($1::text, $2::bigint, $3::integer, $4::bigint, $5::bigint)`,
		pgx.QueryExecModeSimpleProtocol, agentID, l.TopicID, l.Partition, l.Epoch, newStart).Scan(&freed)
	return freed, s.classify("advance log start", err)
}

// NewChunk is a chunk of a rewritten segment, with its offsets.
type NewChunk struct {
	BaseOffset   int64
	LastOffset   int64
	Records      int32
	MaxTimestamp int64
	ByteOffset   int64
	ByteLength   int32
	// DeleteHorizon (Unix ms, Postgres's clock; 0: none) is when the
	// chunk's tombstones may go.
	DeleteHorizon int64
	// Batches is how many RecordBatches the range holds (0 means 1); with
	// more than one, each carries its own base offset.
	Batches int32
}

// SwapBatches atomically replaces index rows with chunks of a registered
// segment, as the lease holder (fenced), in one server-side call: merging
// and compaction use it. old names the rows being replaced by their base
// offsets and segment ids; if any of them changed meanwhile (retention,
// another rewrite), nothing is written and ErrFenced is returned. The
// segment turns live last; ErrSegmentExpired means its deadline passed.
func (s *Store) SwapBatches(ctx context.Context, agentID string, l Lease, old []BatchRef, segmentID, segmentSize int64, chunks []NewChunk) error {
	bases := make([]int64, len(old))
	segs := make([]int64, len(old))
	for i, b := range old {
		bases[i], segs[i] = b.BaseOffset, b.SegmentID
	}
	base := make([]int64, len(chunks))
	horizon := make([]int64, len(chunks))
	nbatches := make([]int32, len(chunks))
	last := make([]int64, len(chunks))
	maxTS := make([]int64, len(chunks))
	byteOff := make([]int64, len(chunks))
	count := make([]int32, len(chunks))
	length := make([]int32, len(chunks))
	for i, c := range chunks {
		base[i], last[i], maxTS[i], byteOff[i], count[i], length[i] = c.BaseOffset, c.LastOffset, c.MaxTimestamp, c.ByteOffset, c.Records, c.ByteLength
		horizon[i], nbatches[i] = c.DeleteHorizon, c.Batches
	}
	_, err := s.pool.Exec(ctx, `SELECT silt_swap_batches($1::text, $2::bigint, $3::integer, $4::bigint, $5::bigint[], $6::bigint[],
		$7::bigint, $8::bigint, $9::bigint[], $10::bigint[], $11::integer[], $12::bigint[], $13::bigint[], $14::integer[], $15::bigint[],
		$16::integer[])`,
		pgx.QueryExecModeSimpleProtocol, agentID, l.TopicID, l.Partition, l.Epoch, bases, segs,
		segmentID, segmentSize, base, last, count, maxTS, byteOff, length, horizon, nbatches)
	return s.classify("swap batches", err)
}

// Now returns Postgres's clock, for decisions that must not depend on an
// agent's.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	var now time.Time
	err := s.pool.QueryRow(ctx, `SELECT now()`).Scan(&now)
	return now, s.classify("now", err)
}

// SegmentRef names a segment row and its object.
type SegmentRef struct {
	ID  int64
	Key string
	// Reason it is to be deleted: "unreferenced", "expired" (pending past
	// its deadline, or a lapsed claim) or "orphan" (adopted from the bucket).
	Reason string
}

// ClaimDoomed claims up to limit segments whose objects are to be deleted:
// pending ones past their deadline, claims of other sweepers that lapsed,
// and unreferenced ones past grace, all by Postgres's clock. Each is marked
// 'deleting' until claim from now; delete the objects, then ForgetSegments.
// Rows are taken with SKIP LOCKED, so agents sweep side by side, and no
// transaction stays open across object-store calls.
func (s *Store) ClaimDoomed(ctx context.Context, grace, claim time.Duration, limit int) ([]SegmentRef, error) {
	rows, err := s.pool.Query(ctx, `
		WITH expired AS (
			SELECT id FROM segments WHERE state IN ('pending', 'deleting') AND deadline < now()
			ORDER BY deadline LIMIT $3 FOR UPDATE SKIP LOCKED
		), unreferenced AS (
			SELECT id FROM segments WHERE state = 'unreferenced' AND unreferenced_at < now() - $1::interval
			ORDER BY unreferenced_at LIMIT $3 FOR UPDATE SKIP LOCKED
		)
		UPDATE segments SET state = 'deleting', deadline = now() + $2::interval
		WHERE id IN (SELECT id FROM expired UNION ALL SELECT id FROM unreferenced)
		RETURNING id, key, CASE WHEN id IN (SELECT id FROM unreferenced) THEN 'unreferenced'
		                        WHEN kind = 'orphan' THEN 'orphan' ELSE 'expired' END`, grace, claim, limit)
	if err != nil {
		return nil, s.classify("claim doomed segments", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SegmentRef, error) {
		var ref SegmentRef
		err := r.Scan(&ref.ID, &ref.Key, &ref.Reason)
		return ref, err
	})
	return out, s.classify("claim doomed segments", err)
}

// ForgetSegments removes the rows of claimed segments whose objects are
// deleted.
func (s *Store) ForgetSegments(ctx context.Context, ids []int64) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM segments WHERE id = ANY ($1) AND state = 'deleting'`, ids)
	return s.classify("forget segments", err)
}

// AdoptOrphans gives every key without a segment row a pending row whose
// deadline is age from now on Postgres's clock, so the janitor deletes the
// object then, unless something indexes it first (which nothing can: a
// commit needs its own pending row). It returns how many it adopted.
func (s *Store) AdoptOrphans(ctx context.Context, keys []string, age time.Duration) (int64, error) {
	tag, err := s.pool.Exec(ctx, `
		INSERT INTO segments (key, size, kind, state, deadline)
		SELECT k, 0, 'orphan', 'pending', now() + $2::interval FROM unnest($1::text[]) AS k
		ON CONFLICT (key) DO NOTHING`, keys, age)
	if err != nil {
		return 0, s.classify("adopt orphans", err)
	}
	return tag.RowsAffected(), nil
}

// AcquireJanitorLock takes or renews the named cluster-wide janitor lock
// for agentID until ttl from now (Postgres's clock); ok is false while
// another agent holds it. The lock is a row, not a session lock, so a
// stalled holder's claim lapses.
func (s *Store) AcquireJanitorLock(ctx context.Context, name, agentID string, ttl time.Duration) (ok bool, err error) {
	tag, err := s.pool.Exec(ctx, `
		INSERT INTO janitor_locks (name, owner_agent, expires_at) VALUES ($1, $2, now() + $3::interval)
		ON CONFLICT (name) DO UPDATE SET owner_agent = EXCLUDED.owner_agent, expires_at = EXCLUDED.expires_at
		WHERE janitor_locks.owner_agent = EXCLUDED.owner_agent OR janitor_locks.expires_at < now()`, name, agentID, ttl)
	if err != nil {
		return false, s.classify("acquire janitor lock", err)
	}
	return tag.RowsAffected() == 1, nil
}

// ReleaseJanitorLock gives the named lock up if agentID holds it.
func (s *Store) ReleaseJanitorLock(ctx context.Context, name, agentID string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM janitor_locks WHERE name = $1 AND owner_agent = $2`, name, agentID)
	return s.classify("release janitor lock", err)
}
