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
	"runtime/debug"
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

	MaxPartitionsPerTopic int
	// KafkaMaxRequestBytes is the Kafka listener's request bound.
	KafkaMaxRequestBytes int64

	// MemoryLimit is --memory-limit; memoryFrom names where the limit in
	// force came from (--memory-limit or GOMEMLIMIT), once finish ran.
	MemoryLimit int64
	memoryFrom  string
	// flags are the parsed flags: settings given on their own are kept,
	// the other memory budgets are derived from the limit.
	flags *flagSet
}

func defaultAgentConfig() agentConfig {
	c := agentConfig{Agent: agentd.DefaultConfig(), LogLevel: "info", LogFormat: "json"}
	c.MaxSegmentBytes = int64(c.Agent.Batcher.MaxSegmentBytes)
	c.MaxBufferBytes = c.Agent.Batcher.MaxBufferBytes
	c.MaxRecordBytes = int64(c.Agent.HTTP.MaxRecordBytes)
	c.MaxRequestBytes = c.Agent.HTTP.MaxRequestBytes
	c.MaxPartitionsPerTopic = int(c.Agent.HTTP.MaxPartitions)
	c.KafkaMaxRequestBytes = c.Agent.Kafka.MaxRequestBytes
	c.MemoryLimit = c.Agent.MemoryLimit
	return c
}

// agentFlags registers the agent's flags; dev adds its own around them.
func agentFlags(fs *flagSet, ac *agentConfig, withStores bool) {
	c := &ac.Agent
	ac.flags = fs
	fs.StringVar(&c.HTTP.Listen, "listen", c.HTTP.Listen, "HTTP listen address")
	fs.BytesVar(&ac.MemoryLimit, "memory-limit", ac.MemoryLimit, "the agent's resident memory: the Go runtime's soft memory limit is 32MiB less, and the memory budgets (--max-buffer-bytes, --cache-bytes, the in-flight bounds...) are fractions of it unless each is set on its own; the agent refuses to start when the budgets given do not fit under it with its headroom (a quarter, at least 48MiB). A GOMEMLIMIT in the environment wins over it. See docs/deploy.md")
	if withStores {
		fs.StringVar(&c.DatabaseURL, "database-url", "", "Postgres URL (postgres://user:pass@host:5432/db)")
		fs.StringVar(&c.DatabaseDirectURL, "database-direct-url", "", "Postgres URL that reaches the server directly, when --database-url leads to a pooler in transaction mode (pgbouncer): the LISTEN connection and the migrations use it, and the agent then sets its session bounds (--db-lock-timeout...) in each transaction and uses no named prepared statements. See docs/scaling.md")
		fs.StringVar(&c.ObjectStore, "objectstore", "", "object store URL: s3://bucket/prefix?endpoint=&region=&unsigned_payload=, minio://bucket/prefix?endpoint=, file:///path or mem://")
	}
	fs.IntVar(&c.DBMaxConns, "db-max-conns", c.DBMaxConns, "Postgres connection pool size")
	d := &c.DBSession
	fs.DurationVar(&d.LockTimeout, "db-lock-timeout", d.LockTimeout, "Postgres lock_timeout of every agent session: the longest wait for a row lock; below --flush-timeout (0: the server's)")
	fs.DurationVar(&d.StatementTimeout, "db-statement-timeout", d.StatementTimeout, "Postgres statement_timeout of every agent session; below --flush-timeout (0: the server's)")
	fs.DurationVar(&d.IdleInTransactionTimeout, "db-idle-in-transaction-timeout", d.IdleInTransactionTimeout, "Postgres idle_in_transaction_session_timeout: a session that stalls inside a transaction is ended after this; below --flush-timeout (0: the server's)")
	fs.DurationVar(&d.KeepalivesIdle, "db-tcp-keepalives-idle", d.KeepalivesIdle, "Postgres tcp_keepalives_idle of agent sessions (0: the server's)")
	fs.DurationVar(&d.KeepalivesInterval, "db-tcp-keepalives-interval", d.KeepalivesInterval, "Postgres tcp_keepalives_interval of agent sessions (0: the server's)")
	fs.IntVar(&d.KeepalivesCount, "db-tcp-keepalives-count", d.KeepalivesCount, "Postgres tcp_keepalives_count of agent sessions (0: the server's)")
	fs.DurationVar(&d.TCPUserTimeout, "db-tcp-user-timeout", d.TCPUserTimeout, "Postgres tcp_user_timeout: the server drops an agent session whose sent data stays unacknowledged this long (0: the server's)")
	fs.StringVar(&c.AgentID, "agent-id", "", "this agent's id (default: host name plus a random suffix)")
	fs.StringVar(&c.Advertise, "advertise-address", "", "address other agents and tools reach this agent at (default: derived from --listen)")
	fs.DurationVar(&c.Batcher.Linger, "linger", c.Batcher.Linger, "how long a produced record may wait for a flush")
	fs.BytesVar(&ac.MaxSegmentBytes, "max-segment-bytes", ac.MaxSegmentBytes, "flush once this many record bytes are buffered")
	fs.BytesVar(&ac.MaxBufferBytes, "max-buffer-bytes", ac.MaxBufferBytes, "bound on buffered plus in-flight record bytes; past it produce gets 429 (default: 1/8 of --memory-limit)")
	fs.IntVar(&c.Batcher.MaxInflightFlushes, "max-inflight-flushes", c.Batcher.MaxInflightFlushes, "flushes writing or committing at once (default: as many as fit in 1/8 of --memory-limit at 2 × --max-segment-bytes each, 1 to 4)")
	fs.DurationVar(&c.Batcher.FlushTimeout, "flush-timeout", c.Batcher.FlushTimeout, "bound on one flush's PUT and commit; a commit not done this long after its object was registered (Postgres's clock) writes nothing")
	fs.DurationVar(&c.Batcher.UnreadyAfter, "unready-after", c.Batcher.UnreadyAfter, "/readyz fails once flushes have failed, with no success, for this long")
	fs.BytesVar(&c.Fetch.CacheBytes, "cache-bytes", c.Fetch.CacheBytes, "bound on the decoded-chunk read cache, for the record encodings (default: 1/64 of --memory-limit)")
	fs.BytesVar(&c.Fetch.ObjectCacheBytes, "object-cache-bytes", c.Fetch.ObjectCacheBytes, "bound on the object-span cache: whole small recent segment objects, which the tails of many partitions share, and spans of objects (whole flush objects, mostly) read once, or ahead, for the readers catching up on them (default: 1/8 of --memory-limit)")
	fs.BytesVar(&c.Fetch.BatchCacheBytes, "batch-cache-bytes", c.Fetch.BatchCacheBytes, "bound on the cache of stored batches served as they are (batch fetches and Kafka fetch) read by range (default: 1/64 of --memory-limit)")
	fs.BytesVar(&ac.MaxRecordBytes, "max-record-bytes", ac.MaxRecordBytes, "largest record accepted, by its encoded size in a segment (key, value, headers, their lengths and 21 bytes of record overhead)")
	fs.IntVar(&c.HTTP.MaxRecordHeaders, "max-record-headers", c.HTTP.MaxRecordHeaders, "most headers in one record; a record with more gets 413 too_many_headers")
	fs.BytesVar(&ac.MaxRequestBytes, "max-request-bytes", ac.MaxRequestBytes, "largest produce request body (default: 16MiB, at most --max-inflight-request-bytes)")
	fs.BytesVar(&c.HTTP.MaxInflightRequestBytes, "max-inflight-request-bytes", c.HTTP.MaxInflightRequestBytes, "bound on produce request bodies being read and parsed at once; past it produce gets 429 (default: 1/16 of --memory-limit)")
	fs.Int64Var(&c.MaxClusterPartitions, "max-cluster-partitions", c.MaxClusterPartitions, "most partitions of all topics together; topic creation and growth past it get 409 (0: no bound)")
	fs.IntVar(&ac.MaxPartitionsPerTopic, "max-partitions-per-topic", ac.MaxPartitionsPerTopic, "most partitions one topic may have")
	fs.IntVar(&c.HTTP.MaxRecordsPerRequest, "max-records-per-request", c.HTTP.MaxRecordsPerRequest, "most records in one produce request")
	fs.DurationVar(&c.HTTP.WriteTimeout, "write-timeout", c.HTTP.WriteTimeout, "time each write of a response has to reach the client (a client that stops reading is cut off after it; streams that keep reading are not)")
	fs.BytesVar(&c.Fetch.MaxInflightBytes, "max-inflight-fetch-bytes", c.Fetch.MaxInflightBytes, "bound on the record bytes of fetch responses being read or written at once; past it fetches are served smaller, then get 429 (default: 1/16 of --memory-limit)")
	fs.DurationVar(&c.HTTP.RequestBodyTimeout, "request-body-timeout", c.HTTP.RequestBodyTimeout, "time a produce request's body has to arrive once its headers are in; past it the request gets 408")
	o, j := &c.Ownership, &c.Ownership.Janitor
	fs.DurationVar(&o.HeartbeatInterval, "heartbeat-interval", o.HeartbeatInterval, "how often this agent heartbeats into the registry")
	fs.DurationVar(&o.AgentTTL, "agent-ttl", o.AgentTTL, "heartbeat age past which an agent counts as dead")
	fs.DurationVar(&o.LeaseTTL, "lease-ttl", o.LeaseTTL, "partition lease lifetime; a dead owner's partitions move after about this long")
	fs.DurationVar(&o.LeaseInterval, "lease-interval", o.LeaseInterval, "how often leases are renewed, claimed and rebalanced")
	fs.DurationVar(&j.RetentionInterval, "retention-interval", j.RetentionInterval, "how often retention runs per owned partition")
	fs.DurationVar(&j.MergeInterval, "merge-interval", j.MergeInterval, "how often small chunks of an owned partition are merged")
	fs.DurationVar(&j.MergeMinAge, "merge-min-age", j.MergeMinAge, "chunks younger than this are left for tail readers")
	fs.BytesVar(&j.MergeTargetBytes, "merge-target-bytes", j.MergeTargetBytes, "size of the per-partition segments merging writes; a merge holds twice this (default: 1/16 of --memory-limit, at most 32MiB)")
	fs.BytesVar(&j.MergeRowBytes, "merge-row-bytes", j.MergeRowBytes, "most bytes of merged batches one index row covers (a fetch reads a whole row)")
	fs.BytesVar(&j.MergeRemergeBytes, "merge-remerge-bytes", j.MergeRemergeBytes, "merged rows smaller than this are merged again with the rows after them (size-tiered), so that quiet partitions' rows grow too; 0 never merges a merged row again")
	fs.DurationVar(&j.CompactInterval, "compact-interval", j.CompactInterval, "how often compacted topics' partitions are cleaned")
	fs.BytesVar(&j.CompactMapBytes, "compact-map-bytes", j.CompactMapBytes, "memory for one compaction pass's map of keys to their latest offsets (Kafka's log.cleaner.dedupe.buffer.size); a partition with more keys is cleaned over several passes (default: 1/32 of --memory-limit)")
	fs.DurationVar(&j.GCInterval, "gc-interval", j.GCInterval, "how often objects of unreferenced and expired segments are deleted")
	fs.DurationVar(&j.GCGrace, "gc-grace", j.GCGrace, "how long an unreferenced object stays for reads in flight")
	fs.DurationVar(&j.OrphanInterval, "orphan-interval", j.OrphanInterval, "how often the bucket is scanned for orphans of failed flushes")
	fs.DurationVar(&j.OrphanAge, "orphan-age", j.OrphanAge, "objects found in the bucket without a segment row are deleted this long after (Postgres's clock)")
	fs.DurationVar(&j.RewriteTimeout, "rewrite-timeout", j.RewriteTimeout, "bound on each janitor duty (a merge or compaction rewrite, a GC round, an orphan scan)")
	fs.DurationVar(&j.ExpiryInterval, "expiry-interval", j.ExpiryInterval, "how often idle producer ids and empty consumer groups are expired")
	fs.DurationVar(&j.ProducerExpiry, "producer-expiry", j.ProducerExpiry, "an idempotent producer's state on a partition is forgotten after this long without a write there, and its id after this long without any state (Kafka's producer.id.expiration.ms)")
	fs.DurationVar(&j.GroupRetention, "group-retention", j.GroupRetention, "a consumer group empty this long is deleted with its committed offsets (Kafka's offsets.retention.minutes)")
	fs.BytesVar(&j.RewriteBytesPerSecond, "rewrite-bytes-per-second", j.RewriteBytesPerSecond, "pace of merging and compaction")
	g := &c.Groups
	fs.DurationVar(&g.DefaultSessionTimeout, "group-session-timeout", g.DefaultSessionTimeout, "consumer group session timeout when a join names none")
	fs.DurationVar(&g.MinSessionTimeout, "group-min-session-timeout", g.MinSessionTimeout, "shortest session timeout a group member may ask for")
	fs.DurationVar(&g.MaxSessionTimeout, "group-max-session-timeout", g.MaxSessionTimeout, "longest session timeout a group member may ask for")
	fs.DurationVar(&g.NewMemberTimeout, "group-new-member-timeout", g.NewMemberTimeout, "how long a member that joined is kept until its first heartbeat, commit or group fetch (its session timeout when shorter)")
	fs.IntVar(&g.MaxMembers, "group-max-members", g.MaxMembers, "most members in one consumer group")
	fs.IntVar(&g.MaxMetadataBytes, "group-max-metadata-bytes", g.MaxMetadataBytes, "largest metadata kept with a committed offset (Kafka's offset.metadata.max.bytes)")
	fs.DurationVar(&g.InitialRebalanceDelay, "group-initial-rebalance-delay", g.InitialRebalanceDelay, "the first rebalance of an empty Kafka consumer group waits this long for more members (Kafka's group.initial.rebalance.delay.ms)")
	k := &c.Kafka
	fs.StringVar(&k.Listen, "kafka-listen", k.Listen, "Kafka protocol listen address (host:port); empty leaves the Kafka listener off")
	fs.StringVar(&k.AdvertisedAddr, "kafka-advertised-addr", k.AdvertisedAddr, "host:port Kafka clients are told to connect to: the load balancer's in a cluster (default: derived from --kafka-listen)")
	fs.BoolVar(&k.AutoCreateTopics, "kafka-auto-create-topics", k.AutoCreateTopics, "create a topic that a Kafka client's Metadata request names and that does not exist (with one partition)")
	fs.IntVar(&k.MaxConnections, "kafka-max-connections", k.MaxConnections, "most open Kafka connections; past it new ones are closed")
	fs.BytesVar(&ac.KafkaMaxRequestBytes, "kafka-max-request-bytes", ac.KafkaMaxRequestBytes, "largest Kafka request; a larger one closes its connection (default: 64MiB, at most --kafka-max-inflight-bytes)")
	fs.BytesVar(&k.MaxInflightBytes, "kafka-max-inflight-bytes", k.MaxInflightBytes, "bound on Kafka request and fetch response bytes in flight; past it the listener stops reading (default: 1/16 of --memory-limit)")
	fs.DurationVar(&k.AuthTimeout, "kafka-auth-timeout", k.AuthTimeout, "how long a Kafka connection has to authenticate (SASL) when keys are required")
	fs.DurationVar(&c.DrainDelay, "drain-delay", c.DrainDelay, "on SIGTERM, how long /readyz fails before the listener closes (for load balancers without retries)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long SIGTERM waits for requests and the final flush")
	fs.BoolVar(&c.HTTP.Pprof, "pprof", c.HTTP.Pprof, "serve Go's profiler under /debug/pprof/ (admin keys only)")
	fs.StringVar(&c.HTTP.Auth, "auth", c.HTTP.Auth, "required: every route but /healthz, /readyz and /metrics needs an API key; none: anonymous, every request may do everything (logged as a warning)")
	fs.StringVar(&c.BootstrapAdminKey, "bootstrap-admin-key", "", "an API key (from `silt keys generate`) made a live admin key at start, for deployments that keep it in a secret store")
	fs.DurationVar(&c.Auth.CacheTTL, "auth-cache-ttl", c.Auth.CacheTTL, "how long a cached API key is trusted without a change notification (at most 5s; bounds revocation when notifications are lost)")
	fs.StringVar(&c.TLS.CertFile, "tls-cert", "", "PEM certificate chain: serve HTTPS (TLS 1.2 or newer, HTTP/2); reloaded when the file changes")
	fs.StringVar(&c.TLS.KeyFile, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.TLS.ClientCAFile, "tls-client-ca", "", "PEM CA certificates: clients may present a certificate it signed, whose CN or SAN names an API key (mutual TLS)")
	fs.DurationVar(&c.TLS.Interval, "tls-reload-interval", c.TLS.Interval, "how often the TLS files are checked for changes")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "", "serve /metrics on this address instead of the API listener (plain HTTP; keep it private)")
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
	if ac.MaxPartitionsPerTopic < 1 || ac.MaxPartitionsPerTopic > 1<<31-1 {
		return errors.New("--max-partitions-per-topic must be a positive int32")
	}
	c.HTTP.MaxPartitions = int32(ac.MaxPartitionsPerTopic)
	c.HTTP.Version = Version()
	c.Kafka.MaxRecordBytes = int(ac.MaxRecordBytes)
	c.Kafka.MaxRequestBytes = ac.KafkaMaxRequestBytes
	if err := ac.setMemoryLimit(); err != nil {
		return err
	}
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

// setMemoryLimit settles the agent's memory limit, GOMEMLIMIT winning
// over --memory-limit, and derives the budgets not set on their own.
func (ac *agentConfig) setMemoryLimit() error {
	c := &ac.Agent
	c.MemoryLimit, ac.memoryFrom = ac.MemoryLimit, "--memory-limit"
	if v, ok := os.LookupEnv("GOMEMLIMIT"); ok && v != "off" {
		n, err := parseBytes(v)
		if err != nil {
			return fmt.Errorf("environment GOMEMLIMIT=%q: %w", v, err)
		}
		c.MemoryLimit, ac.memoryFrom = n, "GOMEMLIMIT"
	}
	keep := func(string) bool { return false }
	if ac.flags != nil {
		keep = ac.flags.isSet
	}
	c.DeriveBudgets(keep)
	return nil
}

// applyMemoryLimit sets the Go runtime's soft memory limit from the
// agent's (agentd.RuntimeMemoryLimit), unless GOMEMLIMIT set it already
// (the runtime read it at start), and the collector's GOGC to
// agentd.GCPercent unless GOGC is set.
func (ac *agentConfig) applyMemoryLimit(logger *slog.Logger) {
	limit := ac.Agent.MemoryLimit
	if ac.memoryFrom != "GOMEMLIMIT" {
		debug.SetMemoryLimit(agentd.RuntimeMemoryLimit(limit))
	} else if ac.flags != nil && ac.flags.isSet("memory-limit") && ac.MemoryLimit != limit {
		logger.Warn("GOMEMLIMIT wins over --memory-limit", "gomemlimit", limit, "memory_limit", ac.MemoryLimit)
	}
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(agentd.GCPercent)
	}
	logger.Info("memory limit", "bytes", limit, "from", ac.memoryFrom, "runtime_limit", debug.SetMemoryLimit(-1))
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
	cfg.applyMemoryLimit(logger)
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
