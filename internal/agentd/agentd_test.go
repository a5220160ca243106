package agentd

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"silt/metadata/metadatatest"
	"silt/objectstore/mem"
	"silt/objectstore/objectstoretest"
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

// The orphan sweep must not take a flush's object for an orphan while its
// commit may still come.
func TestValidateOrphanAgeCoversFlushTimeout(t *testing.T) {
	cfg := DefaultConfig()
	cfg.AgentID, cfg.DatabaseURL = "v", "postgres://x@127.0.0.1/x"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	cfg.Ownership.Janitor.OrphanAge = cfg.Batcher.FlushTimeout
	if err := cfg.Validate(); err == nil {
		t.Fatal("an orphan age of one flush timeout was accepted")
	}
}
