package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"time"

	"silt/batcher"
	"silt/internal/agentd"
)

// Target is the agent a Silt run talks to.
type Target struct {
	// URL is the agent's base URL.
	URL string
	// KafkaAddr is the agent's Kafka listener (host:port), when known.
	KafkaAddr string
	// Metrics reads the agent's Prometheus registry.
	Metrics Gatherer
	// Linger and SegmentBytes are the agent's batching settings when known
	// (an agent of this process); 0 when not.
	Linger       time.Duration
	SegmentBytes int64
	// InflightFlushes is the agent's bound on concurrent flushes (0: unknown).
	InflightFlushes int

	restart func(ctx context.Context) (*Target, error)
	stop    func(ctx context.Context) error
}

// ExternalTarget is an agent running elsewhere, whose metrics are scraped
// from /metrics; kafkaAddr is its Kafka listener, if it has one.
func ExternalTarget(url, kafkaAddr string) *Target {
	return &Target{URL: url, KafkaAddr: kafkaAddr, Metrics: ScrapeGatherer{URL: metricsURL(url)}}
}

// Local reports whether the target runs in this process.
func (t *Target) Local() bool { return t.stop != nil }

// Stop stops an agent of this process; a no-op for external targets.
func (t *Target) Stop(ctx context.Context) error {
	if t.stop == nil {
		return nil
	}
	return t.stop(ctx)
}

// Restart stops an agent of this process and starts a fresh one with the
// same settings (cold caches); external targets are returned as they are.
func (t *Target) Restart(ctx context.Context) (*Target, error) {
	if t.restart == nil {
		return t, nil
	}
	return t.restart(ctx)
}

// LocalAgent is an agent to run in this process, wired as `silt agent`
// wires one (internal/agentd) against real Postgres and object storage.
type LocalAgent struct {
	DatabaseURL  string
	ObjectStore  string // bucket URL
	Linger       time.Duration
	SegmentBytes int64
	// Configure, when set, edits the config before the agent starts.
	Configure func(*agentd.Config)
	Logger    *slog.Logger
}

// Config returns the agent configuration a LocalAgent starts with. The
// janitor's background work (retention, merging, compaction, garbage
// collection) is pushed out to once a day: its PUTs and GETs would
// otherwise mix with the ones measured. Leases and heartbeats run as usual.
func (l LocalAgent) Config() agentd.Config {
	cfg := agentd.DefaultConfig()
	var b [4]byte
	_, _ = rand.Read(b[:])
	cfg.AgentID = "bench-" + hex.EncodeToString(b[:])
	cfg.DatabaseURL = l.DatabaseURL
	cfg.ObjectStore = l.ObjectStore
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Kafka.Listen = "127.0.0.1:0" // its address is known once listening
	cfg.ShutdownTimeout = time.Minute
	if l.Linger > 0 {
		cfg.Batcher.Linger = l.Linger
	}
	if l.SegmentBytes > 0 {
		cfg.Batcher.MaxSegmentBytes = int(l.SegmentBytes)
		cfg.Batcher.MaxBufferBytes = max(cfg.Batcher.MaxBufferBytes, 8*l.SegmentBytes)
	}
	j := &cfg.Ownership.Janitor
	day := 24 * time.Hour
	j.RetentionInterval, j.MergeInterval, j.CompactInterval, j.GCInterval, j.OrphanInterval = day, day, day, day, day
	if l.Configure != nil {
		l.Configure(&cfg)
	}
	return cfg
}

// Start starts the agent; Target.Stop stops it.
func (l LocalAgent) Start(ctx context.Context) (*Target, error) {
	cfg := l.Config()
	logger := l.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return nil, fmt.Errorf("bench agent: %w", err)
	}
	cfg.Advertise = ln.Addr().String()
	kln, err := net.Listen("tcp", cfg.Kafka.Listen)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("bench agent: %w", err)
	}
	cfg.Kafka.Listen, cfg.Kafka.AdvertisedAddr = kln.Addr().String(), kln.Addr().String()
	a, err := agentd.Start(ctx, cfg, agentd.Overrides{Listener: ln, KafkaListener: kln}, logger)
	if err != nil {
		ln.Close()
		kln.Close()
		return nil, fmt.Errorf("bench agent: %w", err)
	}
	t := &Target{
		URL:             "http://" + ln.Addr().String(),
		KafkaAddr:       kln.Addr().String(),
		Metrics:         a.Metrics(),
		Linger:          cfg.Batcher.Linger,
		SegmentBytes:    int64(cfg.Batcher.MaxSegmentBytes),
		InflightFlushes: cfg.Batcher.MaxInflightFlushes,
	}
	t.stop = func(ctx context.Context) error { return a.Stop(ctx) }
	t.restart = func(ctx context.Context) (*Target, error) {
		if err := a.Stop(ctx); err != nil {
			return nil, err
		}
		return l.Start(ctx)
	}
	return t, nil
}

// defaultInflightFlushes is the batcher's default, assumed for external
// agents.
var defaultInflightFlushes = batcher.DefaultConfig().MaxInflightFlushes
