// Package metadatatest gives tests a metadata.Store on a fresh, migrated
// database of the real test Postgres that `make test` starts.
package metadatatest

import (
	"context"
	"testing"
	"time"

	"silt/internal/testenv"
	"silt/metadata"
	"silt/migrations"
)

// URL returns the URL of a fresh database with every migration applied.
func URL(t testing.TB) string {
	t.Helper()
	url := testenv.PostgresURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := open(t, ctx, url)
	defer s.Close()
	if _, err := migrations.Apply(ctx, s.Pool()); err != nil {
		t.Fatalf("metadatatest: migrate: %v", err)
	}
	return url
}

// New returns a Store on a fresh, migrated database, closed at cleanup.
func New(t testing.TB) *metadata.Store {
	t.Helper()
	url := URL(t)
	s := open(t, context.Background(), url)
	t.Cleanup(s.Close)
	return s
}

func open(t testing.TB, ctx context.Context, url string) *metadata.Store {
	t.Helper()
	cfg := metadata.DefaultConfig()
	cfg.URL = url
	s, err := metadata.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("metadatatest: open: %v", err)
	}
	return s
}
