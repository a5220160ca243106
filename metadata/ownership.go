package metadata

import (
	"context"
	"errors"
	"fmt"
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
	return classify("heartbeat", err)
}

// RemoveAgent deletes the agent's row (on clean shutdown).
func (s *Store) RemoveAgent(ctx context.Context, id string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM agents WHERE id = $1`, id)
	return classify("remove agent", err)
}

// LiveAgents lists agents whose heartbeat is younger than ttl, by id.
func (s *Store) LiveAgents(ctx context.Context, ttl time.Duration) ([]AgentInfo, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, address, version, started_at, heartbeat_at FROM agents
		WHERE heartbeat_at > now() - $1::interval ORDER BY id`, ttl)
	if err != nil {
		return nil, classify("live agents", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AgentInfo, error) {
		var a AgentInfo
		err := r.Scan(&a.ID, &a.Address, &a.Version, &a.StartedAt, &a.HeartbeatAt)
		return a, err
	})
	return out, classify("live agents", err)
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
	LeaseTTL time.Duration // how long a claim or renewal lasts
}

// SyncLeases runs one round of leader election for agentID in one
// transaction: it renews the leases it holds, computes its fair share
// (ceil(partitions / live agents)), claims unowned or expired partitions
// up to that share with SELECT ... FOR UPDATE SKIP LOCKED (each claim bumps
// the partition's epoch), and releases what it holds above the share, or
// above floor(partitions / live agents) while another live agent holds
// less than that. It returns the leases held afterwards.
func (s *Store) SyncLeases(ctx context.Context, agentID string, cfg LeaseConfig) ([]Lease, error) {
	var held []Lease
	err := s.inTx(ctx, "sync leases", func(tx pgx.Tx) error {
		held = held[:0]
		var live, total int
		if err := tx.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM agents WHERE heartbeat_at > now() - $1::interval OR id = $2),
			       (SELECT count(*) FROM leases)`, cfg.AgentTTL, agentID).Scan(&live, &total); err != nil {
			return err
		}
		share := 0
		if live > 0 {
			share = (total + live - 1) / live
		}
		// Rows are locked in key order, as everywhere leases are locked.
		rows, err := tx.Query(ctx, `
			WITH mine AS (
				SELECT topic_id, partition FROM leases
				WHERE owner_agent = $1 AND expires_at > now()
				ORDER BY topic_id, partition FOR UPDATE
			)
			UPDATE leases l SET expires_at = now() + $2::interval
			FROM mine WHERE l.topic_id = mine.topic_id AND l.partition = mine.partition
			RETURNING l.topic_id, l.partition, l.epoch`, agentID, cfg.LeaseTTL)
		if err != nil {
			return err
		}
		if held, err = pgx.AppendRows(held, rows, scanLease); err != nil {
			return err
		}
		// Kept above the floor, ceil shares can leave a new agent with
		// nothing (4 partitions, 2+2 held, a third agent): when a live
		// agent holds less than the floor, owners above it give back down
		// to the floor, and the starving agent claims what they free.
		keep := share
		if floor := total / max(live, 1); len(held) > floor {
			var starving int
			if err := tx.QueryRow(ctx, `
				SELECT count(*) FROM agents a
				WHERE (a.heartbeat_at > now() - $1::interval OR a.id = $2)
				  AND (SELECT count(*) FROM leases l WHERE l.owner_agent = a.id AND l.expires_at > now()) < $3`,
				cfg.AgentTTL, agentID, floor).Scan(&starving); err != nil {
				return err
			}
			if starving > 0 {
				keep = floor
			}
		}
		switch {
		case len(held) < share:
			rows, err := tx.Query(ctx, `
				WITH c AS (
					SELECT topic_id, partition FROM leases
					WHERE owner_agent IS NULL OR expires_at IS NULL OR expires_at <= now()
					ORDER BY topic_id, partition
					FOR UPDATE SKIP LOCKED
					LIMIT $3
				)
				UPDATE leases l SET owner_agent = $1, epoch = l.epoch + 1, expires_at = now() + $2::interval
				FROM c WHERE l.topic_id = c.topic_id AND l.partition = c.partition
				RETURNING l.topic_id, l.partition, l.epoch`, agentID, cfg.LeaseTTL, share-len(held))
			if err != nil {
				return err
			}
			if held, err = pgx.AppendRows(held, rows, scanLease); err != nil {
				return err
			}
		case len(held) > keep:
			extra := held[keep:]
			held = held[:keep]
			tops := make([]int64, len(extra))
			parts := make([]int32, len(extra))
			for i, l := range extra {
				tops[i], parts[i] = l.TopicID, l.Partition
			}
			if _, err := tx.Exec(ctx, `
				UPDATE leases l SET owner_agent = NULL, expires_at = NULL
				FROM unnest($2::bigint[], $3::int[]) AS r(topic_id, partition)
				WHERE l.topic_id = r.topic_id AND l.partition = r.partition AND l.owner_agent = $1`,
				agentID, tops, parts); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return held, nil
}

func scanLease(r pgx.CollectableRow) (Lease, error) {
	var l Lease
	err := r.Scan(&l.TopicID, &l.Partition, &l.Epoch)
	return l, err
}

// ReleaseLeases gives up every lease agentID holds (on shutdown).
func (s *Store) ReleaseLeases(ctx context.Context, agentID string) error {
	_, err := s.pool.Exec(ctx, `
		WITH mine AS (
			SELECT topic_id, partition FROM leases WHERE owner_agent = $1
			ORDER BY topic_id, partition FOR UPDATE
		)
		UPDATE leases l SET owner_agent = NULL, expires_at = NULL
		FROM mine WHERE l.topic_id = mine.topic_id AND l.partition = mine.partition`, agentID)
	return classify("release leases", err)
}

// OwnedPartition is a partition and its current, unexpired owner.
type OwnedPartition struct {
	Topic     string
	TopicID   int64
	Partition int32
	Owner     string
	Epoch     int64
}

// Owners lists every partition with an unexpired lease, by topic and partition.
func (s *Store) Owners(ctx context.Context) ([]OwnedPartition, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT t.name, l.topic_id, l.partition, l.owner_agent, l.epoch
		FROM leases l JOIN topics t ON t.id = l.topic_id
		WHERE l.owner_agent IS NOT NULL AND l.expires_at > now()
		ORDER BY t.name, l.partition`)
	if err != nil {
		return nil, classify("owners", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (OwnedPartition, error) {
		var o OwnedPartition
		err := r.Scan(&o.Topic, &o.TopicID, &o.Partition, &o.Owner, &o.Epoch)
		return o, err
	})
	return out, classify("owners", err)
}

// fence checks, inside tx, that agentID still holds lease at its epoch,
// keeping the lease row share-locked (no claim or renewal can change it)
// and the partition row locked for the rest of the transaction. Locks are
// taken lease first, then partition.
func fence(ctx context.Context, tx pgx.Tx, agentID string, l Lease) (PartitionState, error) {
	var st PartitionState
	err := tx.QueryRow(ctx, `
		SELECT p.log_start_offset, p.next_offset
		FROM leases l JOIN partitions p ON p.topic_id = l.topic_id AND p.partition = l.partition
		WHERE l.topic_id = $1 AND l.partition = $2 AND l.owner_agent = $3 AND l.epoch = $4 AND l.expires_at > now()
		FOR SHARE OF l`, l.TopicID, l.Partition, agentID, l.Epoch).Scan(&st.LogStartOffset, &st.HighWatermark)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, fmt.Errorf("topic %d partition %d epoch %d: %w", l.TopicID, l.Partition, l.Epoch, ErrFenced)
	}
	if err != nil {
		return st, err
	}
	err = tx.QueryRow(ctx, `
		SELECT log_start_offset, next_offset FROM partitions WHERE topic_id = $1 AND partition = $2
		FOR NO KEY UPDATE`, l.TopicID, l.Partition).Scan(&st.LogStartOffset, &st.HighWatermark)
	return st, err
}

// ListBatches returns up to limit index rows of a partition from offset
// on, in offset order, with their segments.
func (s *Store) ListBatches(ctx context.Context, topicID int64, partition int32, offset int64, limit int) ([]BatchRef, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT b.base_offset, b.last_offset, b.record_count, b.max_timestamp, s.id, s.key, s.kind, s.size, s.created_at,
		       b.byte_offset, b.byte_length
		FROM batches b JOIN segments s ON s.id = b.segment_id
		WHERE b.topic_id = $1 AND b.partition = $2 AND b.last_offset >= $3
		ORDER BY b.last_offset LIMIT $4`, topicID, partition, offset, limit)
	if err != nil {
		return nil, classify("list batches", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (BatchRef, error) {
		var b BatchRef
		err := r.Scan(&b.BaseOffset, &b.LastOffset, &b.Records, &b.MaxTimestamp, &b.SegmentID, &b.SegmentKey, &b.SegmentKind, &b.SegmentSize,
			&b.SegmentAt, &b.ByteOffset, &b.ByteLength)
		return b, err
	})
	return out, classify("list batches", err)
}

// AdvanceLogStart deletes the index rows below newStart and moves the log
// start offset there, as the lease holder (fenced). It returns the bytes
// the deleted rows referenced.
func (s *Store) AdvanceLogStart(ctx context.Context, agentID string, l Lease, newStart int64) (int64, error) {
	var freed int64
	err := s.inTx(ctx, "advance log start", func(tx pgx.Tx) error {
		st, err := fence(ctx, tx, agentID, l)
		if err != nil {
			return err
		}
		if newStart <= st.LogStartOffset {
			return nil
		}
		if newStart > st.HighWatermark {
			return fmt.Errorf("%w: log start %d beyond high watermark %d", ErrInvalidArgument, newStart, st.HighWatermark)
		}
		if err := tx.QueryRow(ctx, `
			WITH d AS (
				DELETE FROM batches WHERE topic_id = $1 AND partition = $2 AND last_offset < $3
				RETURNING byte_length
			) SELECT coalesce(sum(byte_length), 0) FROM d`, l.TopicID, l.Partition, newStart).Scan(&freed); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `
			UPDATE partitions SET log_start_offset = $3, total_bytes = greatest(total_bytes - $4, 0)
			WHERE topic_id = $1 AND partition = $2`, l.TopicID, l.Partition, newStart, freed)
		return err
	})
	return freed, err
}

// NewSegment is an object written by a rewrite.
type NewSegment struct {
	Key  string
	Size int64
	Kind string // merged or compacted
}

// NewChunk is a chunk of a rewritten segment, with its offsets.
type NewChunk struct {
	BaseOffset   int64
	LastOffset   int64
	Records      int32
	MaxTimestamp int64
	ByteOffset   int64
	ByteLength   int32
}

// SwapBatches atomically replaces index rows with chunks of a new segment,
// as the lease holder (fenced): merging and compaction use it. old names
// the rows being replaced by their base offsets and segment ids; if any of
// them changed meanwhile (retention, another rewrite), nothing is written
// and ErrFenced is returned.
func (s *Store) SwapBatches(ctx context.Context, agentID string, l Lease, old []BatchRef, seg NewSegment, chunks []NewChunk) error {
	return s.inTx(ctx, "swap batches", func(tx pgx.Tx) error {
		if _, err := fence(ctx, tx, agentID, l); err != nil {
			return err
		}
		bases := make([]int64, len(old))
		segs := make([]int64, len(old))
		var oldBytes int64
		for i, b := range old {
			bases[i], segs[i] = b.BaseOffset, b.SegmentID
			oldBytes += int64(b.ByteLength)
		}
		tag, err := tx.Exec(ctx, `
			DELETE FROM batches b USING unnest($3::bigint[], $4::bigint[]) AS r(base_offset, segment_id)
			WHERE b.topic_id = $1 AND b.partition = $2 AND b.base_offset = r.base_offset AND b.segment_id = r.segment_id`,
			l.TopicID, l.Partition, bases, segs)
		if err != nil {
			return err
		}
		if int(tag.RowsAffected()) != len(old) {
			return fmt.Errorf("topic %d partition %d: %d of %d rows changed under the rewrite: %w",
				l.TopicID, l.Partition, len(old)-int(tag.RowsAffected()), len(old), ErrFenced)
		}
		var segID int64
		if err := tx.QueryRow(ctx, `INSERT INTO segments (key, size, kind) VALUES ($1, $2, $3) RETURNING id`, seg.Key, seg.Size, seg.Kind).Scan(&segID); err != nil {
			return err
		}
		var newBytes int64
		base := make([]int64, len(chunks))
		last := make([]int64, len(chunks))
		maxTS := make([]int64, len(chunks))
		byteOff := make([]int64, len(chunks))
		count := make([]int32, len(chunks))
		length := make([]int32, len(chunks))
		for i, c := range chunks {
			base[i], last[i], maxTS[i], byteOff[i], count[i], length[i] = c.BaseOffset, c.LastOffset, c.MaxTimestamp, c.ByteOffset, c.Records, c.ByteLength
			newBytes += int64(c.ByteLength)
		}
		if len(chunks) > 0 {
			if _, err := tx.Exec(ctx, `
				INSERT INTO batches (topic_id, partition, base_offset, last_offset, record_count, max_timestamp, segment_id, byte_offset, byte_length)
				SELECT $1, $2, r.base_offset, r.last_offset, r.record_count, r.max_timestamp, $3, r.byte_offset, r.byte_length
				FROM unnest($4::bigint[], $5::bigint[], $6::int[], $7::bigint[], $8::bigint[], $9::int[])
				  AS r(base_offset, last_offset, record_count, max_timestamp, byte_offset, byte_length)`,
				l.TopicID, l.Partition, segID, base, last, count, maxTS, byteOff, length); err != nil {
				return err
			}
		} else {
			if _, err := tx.Exec(ctx, `UPDATE segments SET unreferenced_at = now() WHERE id = $1`, segID); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `UPDATE partitions SET total_bytes = greatest(total_bytes - $3 + $4, 0) WHERE topic_id = $1 AND partition = $2`,
			l.TopicID, l.Partition, oldBytes, newBytes)
		return err
	})
}

// MarkUnreferenced stamps segments that no index row references any more
// (and that are older than minAge, so a commit in flight is never
// involved) with the time they became unreferenced. It returns how many.
func (s *Store) MarkUnreferenced(ctx context.Context, minAge time.Duration, limit int) (int64, error) {
	tag, err := s.pool.Exec(ctx, `
		UPDATE segments s SET unreferenced_at = now()
		WHERE s.id IN (
			SELECT id FROM segments s2
			WHERE s2.unreferenced_at IS NULL AND s2.created_at < now() - $1::interval
			  AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.segment_id = s2.id)
			LIMIT $2)`, minAge, limit)
	if err != nil {
		return 0, classify("mark unreferenced", err)
	}
	return tag.RowsAffected(), nil
}

// TakeUnreferenced deletes the rows of up to limit segments unreferenced
// for longer than grace and returns their keys, for the caller to delete
// the objects. Rows are taken with SKIP LOCKED so several agents can sweep
// at once, and no transaction stays open across object-store calls: an
// object whose delete then fails has no row any more and is removed later
// by the orphan sweep.
func (s *Store) TakeUnreferenced(ctx context.Context, grace time.Duration, limit int) ([]string, error) {
	rows, err := s.pool.Query(ctx, `
		DELETE FROM segments WHERE id IN (
			SELECT id FROM segments
			WHERE unreferenced_at IS NOT NULL AND unreferenced_at < now() - $1::interval
			ORDER BY unreferenced_at LIMIT $2 FOR UPDATE SKIP LOCKED)
		RETURNING key`, grace, limit)
	if err != nil {
		return nil, classify("take unreferenced", err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return keys, classify("take unreferenced", err)
}

// KnownSegments returns which of keys have a segment row.
func (s *Store) KnownSegments(ctx context.Context, keys []string) (map[string]bool, error) {
	rows, err := s.pool.Query(ctx, `SELECT key FROM segments WHERE key = ANY($1)`, keys)
	if err != nil {
		return nil, classify("known segments", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, classify("known segments", err)
	}
	out := make(map[string]bool, len(found))
	for _, k := range found {
		out[k] = true
	}
	return out, nil
}

// TryLock runs fn while holding the session advisory lock key, if no one
// else holds it; ok is false when it was taken.
func (s *Store) TryLock(ctx context.Context, key int64, fn func(ctx context.Context) error) (ok bool, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, classify("try lock", err)
	}
	defer conn.Release()
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil {
		return false, classify("try lock", err)
	}
	if !ok {
		return false, nil
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key) }()
	return true, fn(ctx)
}
