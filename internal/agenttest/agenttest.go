// Package agenttest runs real Silt agents in-process for tests: real
// Postgres (a fresh migrated database per test) and a real or in-memory
// object store, wired exactly as `silt agent` wires them.
package agenttest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"silt/agent"
	"silt/internal/agentd"
	"silt/internal/testenv"
	"silt/metadata/metadatatest"
	"silt/objectstore"
	"silt/objectstore/mem"
	"silt/objectstore/s3"
)

// Options configure Start.
type Options struct {
	// DatabaseURL shares a database between agents; empty creates one.
	DatabaseURL string
	// Bucket shares an object store between agents; nil uses a fresh
	// in-memory bucket.
	Bucket objectstore.Bucket
	// Kafka turns the Kafka listener on, on a free loopback port.
	Kafka bool
	// Configure edits the agent's config before it starts.
	Configure func(*agentd.Config)
}

// Agent is a running in-process agent.
type Agent struct {
	*agentd.Agent
	URL         string // http://127.0.0.1:port (https with TLS)
	KafkaAddr   string // 127.0.0.1:port when Options.Kafka is set
	DatabaseURL string
	Raw         objectstore.Bucket // the bucket as passed in, before instrumentation
	stopped     atomic.Bool
}

var seq atomic.Int64

// Start runs an agent until the test ends.
func Start(t testing.TB, opts Options) *Agent {
	t.Helper()
	if opts.DatabaseURL == "" {
		opts.DatabaseURL = metadatatest.URL(t)
	}
	if opts.Bucket == nil {
		b, err := mem.New(context.Background(), mem.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		opts.Bucket = b
	}
	cfg := agentd.DefaultConfig()
	cfg.AgentID = fmt.Sprintf("test-agent-%d", seq.Add(1))
	cfg.DatabaseURL = opts.DatabaseURL
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Batcher.Linger = 5 * time.Millisecond
	cfg.ShutdownTimeout = 20 * time.Second
	cfg.Ownership.HeartbeatInterval = 100 * time.Millisecond
	cfg.Ownership.AgentTTL = 2 * time.Second
	cfg.Ownership.LeaseTTL = 2 * time.Second
	cfg.Ownership.LeaseInterval = 200 * time.Millisecond
	// Tests that are not about security run anonymously; those that are
	// set AuthRequired (and a bootstrap key) in Configure.
	cfg.HTTP.Auth = agent.AuthNone
	var kln net.Listener
	if opts.Kafka {
		var err error
		if kln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		cfg.Kafka.Listen = kln.Addr().String()
		cfg.Kafka.AdvertisedAddr = kln.Addr().String()
		cfg.Kafka.MaxWait = 5 * time.Second
	}
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Advertise == "" {
		cfg.Advertise = ln.Addr().String()
	}
	level := slog.LevelWarn
	if os.Getenv("SILT_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	a, err := agentd.Start(context.Background(), cfg, agentd.Overrides{Bucket: opts.Bucket, Listener: ln, KafkaListener: kln}, logger)
	if err != nil {
		ln.Close()
		if kln != nil {
			kln.Close()
		}
		t.Fatalf("agenttest: start agent: %v", err)
	}
	scheme := "http://"
	if cfg.TLS.Enabled() {
		scheme = "https://"
	}
	ag := &Agent{Agent: a, URL: scheme + ln.Addr().String(), DatabaseURL: opts.DatabaseURL, Raw: opts.Bucket}
	if kln != nil {
		ag.KafkaAddr = kln.Addr().String()
	}
	t.Cleanup(func() { ag.Stop(t) })
	return ag
}

// Stop shuts the agent down (once), failing the test on error.
func (a *Agent) Stop(t testing.TB) {
	t.Helper()
	if a.stopped.Swap(true) {
		return
	}
	if err := a.Agent.Stop(context.Background()); err != nil {
		t.Errorf("agenttest: stop: %v", err)
	}
}

// MinIOBucket returns an s3 bucket on the test MinIO, fresh for this test.
func MinIOBucket(t testing.TB) objectstore.Bucket {
	t.Helper()
	srv, name := testenv.MinIOBucket(t)
	cfg := s3.DefaultConfig()
	cfg.Bucket = name
	cfg.Endpoint = srv.Endpoint
	cfg.Region = srv.Region
	cfg.PathStyle = true
	cfg.AccessKey = srv.AccessKey
	cfg.SecretKey = srv.SecretKey
	b, err := s3.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("agenttest: s3 bucket: %v", err)
	}
	return b
}
