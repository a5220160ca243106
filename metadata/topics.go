package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cleanup policies.
const (
	CleanupDelete        = "delete"
	CleanupCompact       = "compact"
	CleanupCompactDelete = "compact,delete"
)

// Timestamp types (message.timestamp.type).
const (
	CreateTime    = "CreateTime"    // the producer's timestamp, within the bounds below
	LogAppendTime = "LogAppendTime" // the agent's receive time, always
)

// TopicConfig holds a topic's settings, named and defaulted as in Kafka.
type TopicConfig struct {
	RetentionMs       int64  `json:"retention.ms"`        // -1 keeps forever
	RetentionBytes    int64  `json:"retention.bytes"`     // per partition; -1 is unlimited
	CleanupPolicy     string `json:"cleanup.policy"`      // delete, compact, or compact,delete
	MaxMessageBytes   int32  `json:"max.message.bytes"`   // largest record accepted
	DeleteRetentionMs int64  `json:"delete.retention.ms"` // how long compaction keeps tombstones
	// TimestampType is CreateTime or LogAppendTime; under CreateTime a
	// producer's timestamp may be at most TimestampBeforeMaxMs in the past
	// and TimestampAfterMaxMs in the future (math.MaxInt64: unbounded).
	TimestampType        string `json:"message.timestamp.type"`
	TimestampBeforeMaxMs int64  `json:"message.timestamp.before.max.ms"`
	TimestampAfterMaxMs  int64  `json:"message.timestamp.after.max.ms"`
}

// DefaultTopicConfig returns Kafka's defaults (those of Kafka 4 for the
// timestamp bounds: unbounded in the past, one hour in the future), but
// for max.message.bytes which is 1 MiB.
func DefaultTopicConfig() TopicConfig {
	return TopicConfig{
		RetentionMs:          7 * 24 * time.Hour.Milliseconds(),
		RetentionBytes:       -1,
		CleanupPolicy:        CleanupDelete,
		MaxMessageBytes:      1 << 20,
		DeleteRetentionMs:    24 * time.Hour.Milliseconds(),
		TimestampType:        CreateTime,
		TimestampBeforeMaxMs: math.MaxInt64,
		TimestampAfterMaxMs:  time.Hour.Milliseconds(),
	}
}

// ErrInvalidTimestamp: a record's timestamp is outside the topic's bounds.
var ErrInvalidTimestamp = errors.New("metadata: timestamp outside the topic's bounds")

// RecordTimestamp returns the timestamp a record is stored with: now under
// LogAppendTime or when the producer gave none (ts < 0), else ts if it is
// within the bounds around now, else ErrInvalidTimestamp (as Kafka's
// INVALID_TIMESTAMP).
func (c TopicConfig) RecordTimestamp(ts, now int64) (int64, error) {
	if ts < 0 || c.TimestampType == LogAppendTime {
		return now, nil
	}
	if now-ts > c.TimestampBeforeMaxMs {
		return 0, fmt.Errorf("%w: %d is more than message.timestamp.before.max.ms=%d before the agent's time %d", ErrInvalidTimestamp, ts, c.TimestampBeforeMaxMs, now)
	}
	if ts-now > c.TimestampAfterMaxMs {
		return 0, fmt.Errorf("%w: %d is more than message.timestamp.after.max.ms=%d after the agent's time %d", ErrInvalidTimestamp, ts, c.TimestampAfterMaxMs, now)
	}
	return ts, nil
}

// Validate checks the values.
func (c TopicConfig) Validate() error {
	switch {
	case c.RetentionMs < -1 || c.RetentionMs == 0:
		return fmt.Errorf("%w: retention.ms must be positive or -1", ErrInvalidArgument)
	case c.RetentionBytes < -1 || c.RetentionBytes == 0:
		return fmt.Errorf("%w: retention.bytes must be positive or -1", ErrInvalidArgument)
	case c.CleanupPolicy != CleanupDelete && c.CleanupPolicy != CleanupCompact && c.CleanupPolicy != CleanupCompactDelete:
		return fmt.Errorf("%w: cleanup.policy must be delete, compact or compact,delete", ErrInvalidArgument)
	case c.MaxMessageBytes < 1:
		return fmt.Errorf("%w: max.message.bytes must be positive", ErrInvalidArgument)
	case c.DeleteRetentionMs < 0:
		return fmt.Errorf("%w: delete.retention.ms must not be negative", ErrInvalidArgument)
	case c.TimestampType != CreateTime && c.TimestampType != LogAppendTime:
		return fmt.Errorf("%w: message.timestamp.type must be CreateTime or LogAppendTime", ErrInvalidArgument)
	case c.TimestampBeforeMaxMs < 0 || c.TimestampAfterMaxMs < 0:
		return fmt.Errorf("%w: message.timestamp.before.max.ms and message.timestamp.after.max.ms must not be negative", ErrInvalidArgument)
	}
	return nil
}

// Compacted reports whether key compaction applies.
func (c TopicConfig) Compacted() bool {
	return c.CleanupPolicy == CleanupCompact || c.CleanupPolicy == CleanupCompactDelete
}

// Deletes reports whether retention deletes old data.
func (c TopicConfig) Deletes() bool {
	return c.CleanupPolicy == CleanupDelete || c.CleanupPolicy == CleanupCompactDelete
}

// Topic is a topic's row.
type Topic struct {
	ID         int64
	Name       string
	Partitions int32
	Config     TopicConfig
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// PartitionInfo is a partition's state.
type PartitionInfo struct {
	Partition      int32
	LogStartOffset int64
	HighWatermark  int64
	TotalBytes     int64
	Owner          string // empty when unowned or the lease expired
	LeaseEpoch     int64
}

// CreateTopic creates a topic and its partitions.
func (s *Store) CreateTopic(ctx context.Context, name string, partitions int32, cfg TopicConfig) (Topic, error) {
	if partitions < 1 {
		return Topic{}, fmt.Errorf("%w: partitions must be at least 1", ErrInvalidArgument)
	}
	if err := cfg.Validate(); err != nil {
		return Topic{}, err
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return Topic{}, fmt.Errorf("create topic: %w", err)
	}
	var t Topic
	err = s.inTx(ctx, "create topic", func(tx pgx.Tx) error {
		if err := s.checkPartitionQuota(ctx, tx, int64(partitions)); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `
			INSERT INTO topics (name, partitions, config) VALUES ($1, $2, $3)
			RETURNING id, name, partitions, config, created_at, updated_at`,
			name, partitions, raw).Scan(&t.ID, &t.Name, &t.Partitions, &t.Config, &t.CreatedAt, &t.UpdatedAt)
		if pgCode(err) == sqlUniqueViolation {
			return fmt.Errorf("topic %q already exists: %w", name, ErrTopicExists)
		}
		if err != nil {
			return err
		}
		return addPartitions(ctx, tx, t.ID, 0, partitions)
	})
	return t, err
}

const topicColumns = `id, name, partitions, config, created_at, updated_at`

func scanTopic(row pgx.Row) (Topic, error) {
	var t Topic
	t.Config = DefaultTopicConfig()
	err := row.Scan(&t.ID, &t.Name, &t.Partitions, &t.Config, &t.CreatedAt, &t.UpdatedAt)
	return t, err
}

// GetTopic returns a topic by name.
func (s *Store) GetTopic(ctx context.Context, name string) (Topic, error) {
	t, err := scanTopic(s.pool.QueryRow(ctx, `SELECT `+topicColumns+` FROM topics WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return Topic{}, fmt.Errorf("topic %q does not exist: %w", name, ErrTopicNotFound)
	}
	return t, s.classify("get topic", err)
}

// GetTopicByID returns a topic by id.
func (s *Store) GetTopicByID(ctx context.Context, id int64) (Topic, error) {
	t, err := scanTopic(s.pool.QueryRow(ctx, `SELECT `+topicColumns+` FROM topics WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Topic{}, fmt.Errorf("topic id %d does not exist: %w", id, ErrTopicNotFound)
	}
	return t, s.classify("get topic", err)
}

// ListTopics returns, ordered by name, up to limit topics whose names
// sort after after (limit <= 0: all of them).
func (s *Store) ListTopics(ctx context.Context, after string, limit int) ([]Topic, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+topicColumns+` FROM topics WHERE name > $1 ORDER BY name LIMIT $2`, after, sqlLimit(limit))
	if err != nil {
		return nil, s.classify("list topics", err)
	}
	topics, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Topic, error) { return scanTopic(r) })
	return topics, s.classify("list topics", err)
}

// sqlLimit turns "limit <= 0: no limit" into a LIMIT argument (NULL).
func sqlLimit(limit int) *int {
	if limit <= 0 {
		return nil
	}
	return &limit
}

// Partitions returns the state of up to limit of a topic's partitions
// from partition from on, in order (limit <= 0: all). Owner is set only
// while the owner's lease is valid.
func (s *Store) Partitions(ctx context.Context, topicID int64, from int32, limit int) ([]PartitionInfo, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT p.partition, p.log_start_offset, p.next_offset, p.total_bytes,
		       CASE WHEN a.expires_at > now() THEN l.owner_agent ELSE '' END,
		       coalesce(l.epoch, 0)
		FROM partitions p LEFT JOIN leases l ON l.topic_id = p.topic_id AND l.partition = p.partition
		LEFT JOIN agent_leases a ON a.agent_id = l.owner_agent AND a.incarnation = l.incarnation
		WHERE p.topic_id = $1 AND p.partition >= $2 ORDER BY p.partition LIMIT $3`, topicID, from, sqlLimit(limit))
	if err != nil {
		return nil, s.classify("partitions", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (PartitionInfo, error) {
		var p PartitionInfo
		err := r.Scan(&p.Partition, &p.LogStartOffset, &p.HighWatermark, &p.TotalBytes, &p.Owner, &p.LeaseEpoch)
		return p, err
	})
	return out, s.classify("partitions", err)
}

// PartitionsOf returns the offsets and sizes of the named partitions of a
// topic that exist, in partition order (Owner and LeaseEpoch are not
// read). An owner reads the partitions it holds with it, at a cost that
// follows how many it holds rather than the topic's size.
func (s *Store) PartitionsOf(ctx context.Context, topicID int64, parts []int32) ([]PartitionInfo, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT partition, log_start_offset, next_offset, total_bytes FROM partitions
		WHERE topic_id = $1 AND partition = ANY ($2::integer[]) ORDER BY partition`, topicID, parts)
	if err != nil {
		return nil, s.classify("partitions of", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (PartitionInfo, error) {
		var p PartitionInfo
		err := r.Scan(&p.Partition, &p.LogStartOffset, &p.HighWatermark, &p.TotalBytes)
		return p, err
	})
	return out, s.classify("partitions of", err)
}

// ErrPartitionQuota: the cluster's partition quota would be exceeded.
var ErrPartitionQuota = errors.New("metadata: cluster partition quota exceeded")

func init() { sentinels = append(sentinels, ErrPartitionQuota) }

// partitionQuotaLock serializes the quota check of topic creations and
// partition growth ("siltquo").
const partitionQuotaLock int64 = 0x73696c7471756f

// checkPartitionQuota fails, inside tx, when adding n partitions would
// take all topics past the cluster quota. Creations and growths check one
// at a time, under a transaction advisory lock.
func (s *Store) checkPartitionQuota(ctx context.Context, tx pgx.Tx, n int64) error {
	if s.maxPartitions <= 0 {
		return nil
	}
	var total int64
	if err := tx.QueryRow(ctx, `SELECT pg_advisory_xact_lock($1), (SELECT coalesce(sum(partitions), 0) FROM topics)`,
		partitionQuotaLock).Scan(nil, &total); err != nil {
		return err
	}
	if total+n > s.maxPartitions {
		return fmt.Errorf("%w: the cluster has %d partitions; %d more would pass the quota of %d", ErrPartitionQuota, total, n, s.maxPartitions)
	}
	return nil
}

// addPartitions creates partitions [from, to) of a topic and their leases.
func addPartitions(ctx context.Context, tx pgx.Tx, topicID int64, from, to int32) error {
	_, err := tx.Exec(ctx, `
		WITH p AS (
			INSERT INTO partitions (topic_id, partition)
			SELECT $1, n FROM generate_series($2::int, $3::int - 1) AS n
			RETURNING topic_id, partition
		) INSERT INTO leases (topic_id, partition) SELECT topic_id, partition FROM p`, topicID, from, to)
	return err
}

// TopicUpdate changes a topic; nil fields stay as they are.
type TopicUpdate struct {
	Partitions *int32
	// Config replaces the whole config.
	Config *TopicConfig
	// ConfigPatch edits the current config inside the update's
	// transaction, after Config; its error aborts the update unchanged.
	ConfigPatch func(*TopicConfig) error
}

// AlterTopic grows partitions and/or replaces the config.
func (s *Store) AlterTopic(ctx context.Context, name string, u TopicUpdate) (Topic, error) {
	if u.Config != nil {
		if err := u.Config.Validate(); err != nil {
			return Topic{}, err
		}
	}
	var t Topic
	err := s.inTx(ctx, "alter topic", func(tx pgx.Tx) error {
		var err error
		t, err = scanTopic(tx.QueryRow(ctx, `SELECT `+topicColumns+` FROM topics WHERE name = $1 FOR UPDATE`, name))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("topic %q does not exist: %w", name, ErrTopicNotFound)
		}
		if err != nil {
			return err
		}
		if u.Partitions != nil && *u.Partitions != t.Partitions {
			if *u.Partitions < t.Partitions {
				return fmt.Errorf("topic %q has %d partitions and cannot shrink to %d: %w", name, t.Partitions, *u.Partitions, ErrPartitionCount)
			}
			if err := s.checkPartitionQuota(ctx, tx, int64(*u.Partitions-t.Partitions)); err != nil {
				return err
			}
			if err := addPartitions(ctx, tx, t.ID, t.Partitions, *u.Partitions); err != nil {
				return err
			}
			t.Partitions = *u.Partitions
		}
		if u.Config != nil {
			t.Config = *u.Config
		}
		if u.ConfigPatch != nil {
			if err := u.ConfigPatch(&t.Config); err != nil {
				return err
			}
			if err := t.Config.Validate(); err != nil {
				return err
			}
		}
		raw, err := json.Marshal(t.Config)
		if err != nil {
			return err
		}
		return tx.QueryRow(ctx, `
			UPDATE topics SET partitions = $2, config = $3, updated_at = now() WHERE id = $1
			RETURNING updated_at`, t.ID, t.Partitions, raw).Scan(&t.UpdatedAt)
	})
	return t, err
}

// TopicDeletedNotice is the NotifyChannel entry that DeleteTopic sends
// for topic id: "topicID:*:deleted" (see silt_delete_topic). Waiters on
// any partition of the topic wake and find it gone; readers of the
// "topicID:partition:highWatermark" entries that do not know it skip it
// (its partition is not a number).
func TopicDeletedNotice(id int64) string { return fmt.Sprintf("%d:*:deleted", id) }

// DeleteTopic removes a topic, its partitions and its index rows in one
// server-side call (silt_delete_topic), and NOTIFYs its deletion
// (TopicDeletedNotice) at commit so that long-polls and streams on it end
// at once. Objects left without index rows become unreferenced and the
// janitor removes them later.
func (s *Store) DeleteTopic(ctx context.Context, name string) error {
	var found bool
	err := s.pool.QueryRow(ctx, `SELECT silt_delete_topic($1::text)`, pgx.QueryExecModeSimpleProtocol, name).Scan(&found)
	if err != nil {
		return s.classify("delete topic", err)
	}
	if !found {
		return fmt.Errorf("topic %q does not exist: %w", name, ErrTopicNotFound)
	}
	return nil
}
