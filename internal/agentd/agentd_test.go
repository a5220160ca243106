package agentd

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"silt/metadata/metadatatest"
	"silt/objectstore/mem"
	"silt/objectstore/objectstoretest"
	"silt/ownership"
)

// A start that fails after some parts are running stops them again
// rather than panicking.
func TestStartFailureCleansUp(t *testing.T) {
	url := metadatatest.URL(t)
	b, err := mem.New(context.Background(), mem.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.AgentID = "cleanup"
	cfg.DatabaseURL = url
	cfg.HTTP.Listen = "256.0.0.1:1" // fails after the store, batcher, notifier and owner started
	_, err = Start(context.Background(), cfg, Overrides{Bucket: objectstoretest.NewFaulty(b)}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("Start with a bad listen address: %v", err)
	}
}

// An orphan age under the minimum is refused; any at or above it is fine,
// whatever the flush timeout: no commit can index an object the orphan
// sweep adopted.
func TestValidateOrphanAge(t *testing.T) {
	cfg := DefaultConfig()
	cfg.AgentID, cfg.DatabaseURL = "v", "postgres://x@127.0.0.1/x"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	cfg.Ownership.Janitor.OrphanAge = ownership.MinOrphanAge / 2
	if err := cfg.Validate(); err == nil {
		t.Fatal("an orphan age under the minimum was accepted")
	}
	cfg.Ownership.Janitor.OrphanAge = ownership.MinOrphanAge
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the minimum orphan age: %v", err)
	}
}

// Postgres session bounds at or above the flush timeout are refused, each
// named by its flag; below it, or 0 (the server's setting), they pass.
func TestValidateSessionBoundsBelowFlushTimeout(t *testing.T) {
	base := DefaultConfig()
	base.AgentID, base.DatabaseURL = "v", "postgres://x@127.0.0.1/x"
	base.Batcher.FlushTimeout = 4 * time.Second
	base.DBSession.LockTimeout, base.DBSession.StatementTimeout, base.DBSession.IdleInTransactionTimeout = time.Second, 3*time.Second, 2*time.Second
	if err := base.Validate(); err != nil {
		t.Fatalf("bounds below the flush timeout: %v", err)
	}
	bounds := map[string]func(*Config) *time.Duration{
		"--db-lock-timeout":                func(c *Config) *time.Duration { return &c.DBSession.LockTimeout },
		"--db-statement-timeout":           func(c *Config) *time.Duration { return &c.DBSession.StatementTimeout },
		"--db-idle-in-transaction-timeout": func(c *Config) *time.Duration { return &c.DBSession.IdleInTransactionTimeout },
	}
	for flag, field := range bounds {
		for _, d := range []time.Duration{4 * time.Second, time.Minute} {
			cfg := base
			*field(&cfg) = d
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), flag) || !strings.Contains(err.Error(), "--flush-timeout") {
				t.Errorf("%s %v with --flush-timeout 4s: %v, want a refusal naming both flags", flag, d, err)
			}
		}
		cfg := base
		*field(&cfg) = 0
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s 0 (the server's): %v", flag, err)
		}
	}
	// The defaults hold together.
	def := DefaultConfig()
	def.AgentID, def.DatabaseURL = "v", "postgres://x@127.0.0.1/x"
	if err := def.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	def.Batcher.FlushTimeout = def.DBSession.StatementTimeout
	if err := def.Validate(); err == nil {
		t.Fatal("the default statement timeout equal to the flush timeout was accepted")
	}
}
