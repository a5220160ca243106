package ownership

import (
	"errors"
	"fmt"
	"time"
)

// Config tunes leader election and the janitor.
type Config struct {
	AgentID string
	Address string
	Version string

	HeartbeatInterval time.Duration // agent registry heartbeat
	AgentTTL          time.Duration // heartbeat age past which an agent is dead
	LeaseTTL          time.Duration // lease lifetime; renewed every LeaseInterval
	LeaseInterval     time.Duration

	Janitor JanitorConfig
}

// JanitorConfig tunes the owner's duties.
type JanitorConfig struct {
	// RetentionInterval is how often each owned partition's retention runs.
	RetentionInterval time.Duration

	// MergeInterval is how often each owned partition is considered for
	// merging; chunks of flush segments older than MergeMinAge and smaller
	// than MergeSmallChunkBytes are merged in runs of at least
	// MergeMinChunks, into segments of up to MergeTargetBytes.
	MergeInterval        time.Duration
	MergeMinAge          time.Duration
	MergeSmallChunkBytes int64
	MergeMinChunks       int
	MergeTargetBytes     int64
	// MergeRowBytes is the most bytes one index row of a merged segment
	// covers: a fetch reads a whole row, and a GiB takes about
	// 1 GiB / MergeRowBytes rows.
	MergeRowBytes int64
	// MergeRemergeBytes: merged rows smaller than this are merged again
	// with the rows after them (size-tiered), so that quiet partitions'
	// rows grow too; 0 leaves merged rows as they are.
	MergeRemergeBytes int64

	// CompactInterval is how often compacted topics' partitions are
	// cleaned; one pass maps at most CompactMapBytes of keys (Kafka's
	// log.cleaner.dedupe.buffer.size), and a partition with more keys is
	// cleaned over several passes.
	CompactInterval time.Duration
	CompactMapBytes int64

	// GCInterval is how often unreferenced objects are swept; they are
	// deleted GCGrace after they became unreferenced.
	GCInterval time.Duration
	GCGrace    time.Duration

	// OrphanInterval is how often the bucket is scanned for objects with no
	// segment row; each is deleted OrphanAge after it was first found
	// (Postgres's clock).
	OrphanInterval time.Duration
	OrphanAge      time.Duration

	// RewriteTimeout bounds each janitor duty (a merge or compaction
	// rewrite, a GC round, an orphan scan) and is the deadline of a
	// rewrite's pending segment and of a GC claim.
	RewriteTimeout time.Duration

	// ExpiryInterval is how often idle producer ids and empty consumer
	// groups are expired: producer state idle for ProducerExpiry (Kafka's
	// producer.id.expiration.ms) and groups empty for GroupRetention
	// (Kafka's offsets.retention.minutes).
	ExpiryInterval time.Duration
	ProducerExpiry time.Duration
	GroupRetention time.Duration

	// RewriteBytesPerSecond paces merging and compaction.
	RewriteBytesPerSecond int64

	// KeyPrefix is where segment objects live ("segments/").
	KeyPrefix string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		HeartbeatInterval: 2 * time.Second,
		AgentTTL:          10 * time.Second,
		LeaseTTL:          10 * time.Second,
		LeaseInterval:     3 * time.Second,
		Janitor: JanitorConfig{
			RetentionInterval:     30 * time.Second,
			MergeInterval:         time.Minute,
			MergeMinAge:           2 * time.Minute,
			MergeSmallChunkBytes:  1 << 20,
			MergeMinChunks:        8,
			MergeTargetBytes:      32 << 20,
			MergeRowBytes:         1 << 20,
			MergeRemergeBytes:     256 << 10,
			CompactInterval:       5 * time.Minute,
			CompactMapBytes:       64 << 20,
			GCInterval:            time.Minute,
			GCGrace:               5 * time.Minute,
			OrphanInterval:        15 * time.Minute,
			OrphanAge:             time.Hour,
			RewriteTimeout:        5 * time.Minute,
			ExpiryInterval:        10 * time.Minute,
			ProducerExpiry:        24 * time.Hour,
			GroupRetention:        7 * 24 * time.Hour,
			RewriteBytesPerSecond: 64 << 20,
			KeyPrefix:             "segments/",
		},
	}
}

// MinOrphanAge is the smallest orphan age. Orphans are found by a scan and
// deleted only after this long on Postgres's clock; no commit can index an
// object without its own pending row, so the age guards nothing but the
// scan's view of the bucket.
const MinOrphanAge = time.Second

// Validate checks the config.
func (c Config) Validate() error {
	j := c.Janitor
	switch {
	case c.AgentID == "":
		return errors.New("ownership: agent id is required")
	case c.HeartbeatInterval <= 0 || c.AgentTTL <= c.HeartbeatInterval:
		return errors.New("ownership: agent TTL must exceed a positive heartbeat interval")
	case c.LeaseInterval <= 0 || c.LeaseTTL <= c.LeaseInterval:
		return errors.New("ownership: lease TTL must exceed a positive lease interval")
	case j.RetentionInterval <= 0 || j.MergeInterval <= 0 || j.CompactInterval <= 0 || j.GCInterval <= 0 || j.OrphanInterval <= 0 || j.ExpiryInterval <= 0:
		return errors.New("ownership: janitor intervals must be positive")
	case j.MergeMinAge < 0 || j.GCGrace < 0:
		return errors.New("ownership: janitor ages must not be negative")
	case j.OrphanAge < MinOrphanAge:
		return fmt.Errorf("ownership: orphan age must be at least %v", MinOrphanAge)
	case j.ProducerExpiry < time.Minute || j.GroupRetention < time.Minute:
		return errors.New("ownership: producer expiry and group retention must be at least a minute")
	case j.RewriteTimeout < time.Second:
		return errors.New("ownership: rewrite timeout must be at least 1s")
	case j.MergeMinChunks < 2 || j.MergeTargetBytes < 1 || j.MergeSmallChunkBytes < 1 || j.MergeRowBytes < 1:
		return errors.New("ownership: merge needs at least 2 chunks and positive sizes")
	case j.MergeRemergeBytes < 0 || j.MergeRemergeBytes > j.MergeRowBytes:
		return errors.New("ownership: the size below which merged rows merge again must be from 0 to the merge row size")
	case j.RewriteBytesPerSecond < 1 || j.CompactMapBytes < 1024:
		return errors.New("ownership: rewrite rate must be positive and the compaction map at least 1 KiB")
	case j.KeyPrefix == "":
		return errors.New("ownership: key prefix is required")
	}
	return nil
}
