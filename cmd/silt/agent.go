package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"

	"silt/internal/agentd"
)

// agentConfig is everything `silt agent` is configured with.
// The size flags are int64 here and copied into the component configs.
type agentConfig struct {
	Agent           agentd.Config
	LogLevel        string
	LogFormat       string
	MaxSegmentBytes int64
	MaxBufferBytes  int64
	MaxRecordBytes  int64
	MaxRequestBytes int64
	// KafkaMaxRequestBytes is the Kafka listener's request bound.
	KafkaMaxRequestBytes int64
}

func defaultAgentConfig() agentConfig {
	c := agentConfig{Agent: agentd.DefaultConfig(), LogLevel: "info", LogFormat: "json"}
	c.MaxSegmentBytes = int64(c.Agent.Batcher.MaxSegmentBytes)
	c.MaxBufferBytes = c.Agent.Batcher.MaxBufferBytes
	c.MaxRecordBytes = int64(c.Agent.HTTP.MaxRecordBytes)
	c.MaxRequestBytes = c.Agent.HTTP.MaxRequestBytes
	c.KafkaMaxRequestBytes = c.Agent.Kafka.MaxRequestBytes
	return c
}

// agentFlags registers the agent's flags; dev adds its own around them.
func agentFlags(fs *flagSet, ac *agentConfig, withStores bool) {
	c := &ac.Agent
	fs.StringVar(&c.HTTP.Listen, "listen", c.HTTP.Listen, "HTTP listen address")
	if withStores {
		fs.StringVar(&c.DatabaseURL, "database-url", "", "Postgres URL (postgres://user:pass@host:5432/db)")
		fs.StringVar(&c.ObjectStore, "objectstore", "", "object store URL: s3://bucket/prefix?endpoint=&region=, minio://bucket/prefix?endpoint=, file:///path or mem://")
	}
	fs.IntVar(&c.DBMaxConns, "db-max-conns", c.DBMaxConns, "Postgres connection pool size")
	fs.StringVar(&c.AgentID, "agent-id", "", "this agent's id (default: host name plus a random suffix)")
	fs.StringVar(&c.Advertise, "advertise-address", "", "address other agents and tools reach this agent at (default: derived from --listen)")
	fs.DurationVar(&c.Batcher.Linger, "linger", c.Batcher.Linger, "how long a produced record may wait for a flush")
	fs.BytesVar(&ac.MaxSegmentBytes, "max-segment-bytes", ac.MaxSegmentBytes, "flush once this many record bytes are buffered")
	fs.BytesVar(&ac.MaxBufferBytes, "max-buffer-bytes", ac.MaxBufferBytes, "bound on buffered plus in-flight record bytes; past it produce gets 429")
	fs.IntVar(&c.Batcher.MaxInflightFlushes, "max-inflight-flushes", c.Batcher.MaxInflightFlushes, "flushes writing or committing at once")
	fs.DurationVar(&c.Batcher.FlushTimeout, "flush-timeout", c.Batcher.FlushTimeout, "bound on one flush's PUT and commit")
	fs.BytesVar(&c.Fetch.CacheBytes, "cache-bytes", c.Fetch.CacheBytes, "bound on the decoded-chunk read cache")
	fs.BytesVar(&c.Fetch.BatchCacheBytes, "batch-cache-bytes", c.Fetch.BatchCacheBytes, "bound on the cache of stored batches served as they are (Kafka fetch)")
	fs.BytesVar(&ac.MaxRecordBytes, "max-record-bytes", ac.MaxRecordBytes, "largest record accepted (key + value + headers)")
	fs.BytesVar(&ac.MaxRequestBytes, "max-request-bytes", ac.MaxRequestBytes, "largest produce request body")
	fs.BytesVar(&c.HTTP.MaxInflightRequestBytes, "max-inflight-request-bytes", c.HTTP.MaxInflightRequestBytes, "bound on produce request bodies being read and parsed at once; past it produce gets 429")
	fs.IntVar(&c.HTTP.MaxRecordsPerRequest, "max-records-per-request", c.HTTP.MaxRecordsPerRequest, "most records in one produce request")
	o, j := &c.Ownership, &c.Ownership.Janitor
	fs.DurationVar(&o.HeartbeatInterval, "heartbeat-interval", o.HeartbeatInterval, "how often this agent heartbeats into the registry")
	fs.DurationVar(&o.AgentTTL, "agent-ttl", o.AgentTTL, "heartbeat age past which an agent counts as dead")
	fs.DurationVar(&o.LeaseTTL, "lease-ttl", o.LeaseTTL, "partition lease lifetime; a dead owner's partitions move after about this long")
	fs.DurationVar(&o.LeaseInterval, "lease-interval", o.LeaseInterval, "how often leases are renewed, claimed and rebalanced")
	fs.DurationVar(&j.RetentionInterval, "retention-interval", j.RetentionInterval, "how often retention runs per owned partition")
	fs.DurationVar(&j.MergeInterval, "merge-interval", j.MergeInterval, "how often small chunks of an owned partition are merged")
	fs.DurationVar(&j.MergeMinAge, "merge-min-age", j.MergeMinAge, "chunks younger than this are left for tail readers")
	fs.BytesVar(&j.MergeTargetBytes, "merge-target-bytes", j.MergeTargetBytes, "size of the per-partition segments merging writes")
	fs.DurationVar(&j.CompactInterval, "compact-interval", j.CompactInterval, "how often compacted topics' partitions are cleaned")
	fs.DurationVar(&j.GCInterval, "gc-interval", j.GCInterval, "how often unreferenced objects are swept")
	fs.DurationVar(&j.GCGrace, "gc-grace", j.GCGrace, "how long an unreferenced object stays for reads in flight")
	fs.DurationVar(&j.OrphanInterval, "orphan-interval", j.OrphanInterval, "how often the bucket is scanned for orphans of failed flushes")
	fs.DurationVar(&j.OrphanAge, "orphan-age", j.OrphanAge, "objects without an index entry older than this are deleted")
	fs.BytesVar(&j.RewriteBytesPerSecond, "rewrite-bytes-per-second", j.RewriteBytesPerSecond, "pace of merging and compaction")
	g := &c.Groups
	fs.DurationVar(&g.DefaultSessionTimeout, "group-session-timeout", g.DefaultSessionTimeout, "consumer group session timeout when a join names none")
	fs.DurationVar(&g.MinSessionTimeout, "group-min-session-timeout", g.MinSessionTimeout, "shortest session timeout a group member may ask for")
	fs.DurationVar(&g.MaxSessionTimeout, "group-max-session-timeout", g.MaxSessionTimeout, "longest session timeout a group member may ask for")
	fs.IntVar(&g.MaxMembers, "group-max-members", g.MaxMembers, "most members in one consumer group")
	k := &c.Kafka
	fs.StringVar(&k.Listen, "kafka-listen", k.Listen, "Kafka protocol listen address (host:port); empty leaves the Kafka listener off")
	fs.StringVar(&k.AdvertisedAddr, "kafka-advertised-addr", k.AdvertisedAddr, "host:port Kafka clients are told to connect to: the load balancer's in a cluster (default: derived from --kafka-listen)")
	fs.BoolVar(&k.AutoCreateTopics, "kafka-auto-create-topics", k.AutoCreateTopics, "create a topic that a Kafka client's Metadata request names and that does not exist (with one partition)")
	fs.IntVar(&k.MaxConnections, "kafka-max-connections", k.MaxConnections, "most open Kafka connections; past it new ones are closed")
	fs.BytesVar(&ac.KafkaMaxRequestBytes, "kafka-max-request-bytes", ac.KafkaMaxRequestBytes, "largest Kafka request; a larger one closes its connection")
	fs.BytesVar(&k.MaxInflightBytes, "kafka-max-inflight-bytes", k.MaxInflightBytes, "bound on Kafka request and fetch response bytes in flight; past it the listener stops reading")
	fs.DurationVar(&c.DrainDelay, "drain-delay", c.DrainDelay, "on SIGTERM, how long /readyz fails before the listener closes (for load balancers without retries)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long SIGTERM waits for requests and the final flush")
	fs.BoolVar(&c.HTTP.Pprof, "pprof", c.HTTP.Pprof, "serve Go's profiler under /debug/pprof/")
	fs.StringVar(&ac.LogLevel, "log-level", ac.LogLevel, "debug, info, warn or error")
	fs.StringVar(&ac.LogFormat, "log-format", ac.LogFormat, "json or text")
}

// finish copies the flag values into the component configs and validates.
func (ac *agentConfig) finish() error {
	c := &ac.Agent
	c.Batcher.MaxSegmentBytes = int(ac.MaxSegmentBytes)
	c.Batcher.MaxBufferBytes = ac.MaxBufferBytes
	c.HTTP.MaxRecordBytes = int(ac.MaxRecordBytes)
	c.HTTP.MaxRequestBytes = ac.MaxRequestBytes
	c.HTTP.Version = Version()
	c.Kafka.MaxRecordBytes = int(ac.MaxRecordBytes)
	c.Kafka.MaxRequestBytes = ac.KafkaMaxRequestBytes
	if c.DatabaseURL == "" {
		return errors.New("--database-url (SILT_DATABASE_URL) is required")
	}
	if c.ObjectStore == "" {
		return errors.New("--objectstore (SILT_OBJECTSTORE) is required")
	}
	if c.AgentID == "" {
		host, _ := os.Hostname()
		var b [3]byte
		_, _ = rand.Read(b[:])
		c.AgentID = host + "-" + hex.EncodeToString(b[:])
	}
	if c.Advertise == "" {
		host, port, err := net.SplitHostPort(c.HTTP.Listen)
		if err != nil {
			return fmt.Errorf("--listen %q: %w", c.HTTP.Listen, err)
		}
		if host == "" || host == "0.0.0.0" || host == "::" {
			host, _ = os.Hostname()
		}
		c.Advertise = net.JoinHostPort(host, port)
	}
	if c.Kafka.Listen != "" && c.Kafka.AdvertisedAddr == "" {
		addr, err := advertisedFrom(c.Kafka.Listen)
		if err != nil {
			return fmt.Errorf("--kafka-listen %q: %w", c.Kafka.Listen, err)
		}
		c.Kafka.AdvertisedAddr = addr
	}
	return c.Validate()
}

// advertisedFrom derives an address to advertise from a listen address:
// a wildcard host becomes this machine's name.
func advertisedFrom(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", err
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host, _ = os.Hostname()
	}
	return net.JoinHostPort(host, port), nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want json or text", format)
}

func runAgentCmd(ctx context.Context, args []string, _, stderr io.Writer) error {
	cfg := defaultAgentConfig()
	fs := newFlagSet("agent")
	agentFlags(fs, &cfg, true)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfg.finish(); err != nil {
		return err
	}
	logger, err := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	return runAgent(ctx, cfg, logger, nil)
}

// runAgent runs one agent until ctx ends, then stops it. ready, when set,
// receives the bound listen address once the agent serves.
func runAgent(ctx context.Context, cfg agentConfig, logger *slog.Logger, ready func(addr string)) error {
	a, err := agentd.Start(ctx, cfg.Agent, agentd.Overrides{}, logger)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(a.Addr())
	}
	waitErr := a.Wait(ctx)
	return errors.Join(waitErr, a.Stop(ctx))
}
