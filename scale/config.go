package scale

import (
	"errors"
	"fmt"
	"time"
)

// Config is one load run: the cluster's shape and the rates of each
// operation.
type Config struct {
	// DatabaseURL names the database the run works in; Setup migrates it
	// and creates the topics (see Env).
	DatabaseURL string

	// Agents is how many agents are simulated, each with a pool of
	// PoolSize connections.
	Agents   int
	PoolSize int
	// Topics topics of Partitions partitions each take the produce.
	Topics     int
	Partitions int

	// FlushRate is flushes per second per agent; each commits
	// FlushPartitions chunks, one per partition, chosen at random among
	// all topics' partitions. FlushInflight bounds each agent's
	// concurrent flushes (the batcher's --max-inflight-flushes).
	FlushRate       float64
	FlushPartitions int
	FlushInflight   int

	// LookupRate is fetch index lookups per second per agent, half at a
	// partition's tail and half at a random offset below it.
	LookupRate float64

	// Groups consumer groups of GroupMembers members each; each member
	// heartbeats every GroupHeartbeat and commits the offsets of its
	// partitions every GroupCommit. They subscribe to GroupTopics topics
	// of GroupTopicPartitions partitions (group g to topic g mod
	// GroupTopics).
	Groups               int
	GroupMembers         int
	GroupHeartbeat       time.Duration
	GroupCommit          time.Duration
	GroupTopics          int
	GroupTopicPartitions int
	// GroupInflight bounds each agent's concurrent group operations.
	GroupInflight int

	// Listen gives each agent a LISTEN connection on the commit channel,
	// as the fetcher's notifier keeps one.
	Listen bool

	// Janitor runs each agent's janitor (retention, merging, GC) beside
	// its lease rounds, with the agent's default intervals.
	Janitor bool
	// HeartbeatInterval, LeaseInterval, LeaseTTL and AgentTTL are the
	// ownership loops' settings (the agent's defaults).
	HeartbeatInterval time.Duration
	LeaseInterval     time.Duration
	LeaseTTL          time.Duration
	AgentTTL          time.Duration

	// Warmup runs the load unmeasured; Duration is measured.
	Warmup   time.Duration
	Duration time.Duration
	// OpTimeout bounds each operation.
	OpTimeout time.Duration
}

// DefaultConfig is 10 agents on 10,000 partitions flushing 4 times a
// second with 10 partitions per flush.
func DefaultConfig() Config {
	return Config{
		Agents:               10,
		PoolSize:             4,
		Topics:               1,
		Partitions:           10_000,
		FlushRate:            4,
		FlushPartitions:      10,
		FlushInflight:        4,
		LookupRate:           20,
		GroupMembers:         10,
		GroupHeartbeat:       3 * time.Second,
		GroupCommit:          5 * time.Second,
		GroupTopics:          10,
		GroupTopicPartitions: 20,
		GroupInflight:        8,
		Janitor:              true,
		Listen:               true,
		HeartbeatInterval:    2 * time.Second,
		LeaseInterval:        3 * time.Second,
		LeaseTTL:             10 * time.Second,
		AgentTTL:             10 * time.Second,
		Warmup:               10 * time.Second,
		Duration:             30 * time.Second,
		OpTimeout:            10 * time.Second,
	}
}

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case c.DatabaseURL == "":
		return errors.New("scale: database URL is required")
	case c.Agents < 1:
		return errors.New("scale: at least one agent")
	case c.PoolSize < 2:
		return errors.New("scale: pool size must be at least 2")
	case c.Topics < 0 || c.Partitions < 1 && c.Topics > 0:
		return errors.New("scale: topics need at least one partition")
	case c.FlushRate < 0 || c.LookupRate < 0:
		return errors.New("scale: rates must not be negative")
	case c.FlushRate > 0 && (c.Topics == 0 || c.FlushPartitions < 1 || c.FlushPartitions > c.Topics*c.Partitions):
		return fmt.Errorf("scale: a flush needs 1 to %d partitions", c.Topics*c.Partitions)
	case c.FlushInflight < 1 || c.GroupInflight < 1:
		return errors.New("scale: inflight bounds must be positive")
	case c.LookupRate > 0 && c.Topics == 0:
		return errors.New("scale: lookups need a topic")
	case c.Groups < 0 || c.Groups > 0 && (c.GroupMembers < 1 || c.GroupTopics < 1 || c.GroupTopicPartitions < 1):
		return errors.New("scale: groups need members and topics")
	case c.Groups > 0 && (c.GroupHeartbeat <= 0 || c.GroupCommit <= 0):
		return errors.New("scale: group intervals must be positive")
	case c.HeartbeatInterval <= 0 || c.LeaseInterval <= 0 || c.LeaseTTL <= c.LeaseInterval || c.AgentTTL <= c.HeartbeatInterval:
		return errors.New("scale: ownership intervals must be positive and below their TTLs")
	case c.Duration <= 0 || c.Warmup < 0 || c.OpTimeout <= 0:
		return errors.New("scale: durations must be positive")
	}
	return nil
}
