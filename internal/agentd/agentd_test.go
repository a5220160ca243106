package agentd

import (
	"context"
	"log/slog"
	"strings"
	"testing"

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
