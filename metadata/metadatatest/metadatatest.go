// Package metadatatest gives tests a metadata.Store on a fresh, migrated
// database of the real test Postgres that `make test` starts.
package metadatatest

import (
	"context"
	"sync"
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
	return Open(t, URL(t), nil)
}

// Open returns a Store on url, configured by edit (when not nil), closed
// at cleanup.
func Open(t testing.TB, url string, edit func(*metadata.Config)) *metadata.Store {
	t.Helper()
	s := open(t, context.Background(), url, edit)
	t.Cleanup(s.Close)
	return s
}

func open(t testing.TB, ctx context.Context, url string, edit ...func(*metadata.Config)) *metadata.Store {
	t.Helper()
	cfg := metadata.DefaultConfig()
	cfg.URL = url
	for _, e := range edit {
		if e != nil {
			e(&cfg)
		}
	}
	s, err := metadata.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("metadatatest: open: %v", err)
	}
	return s
}

// NewFlush registers a pending segment under key and returns a Flush of
// chunks ready for CommitFlush. It must run on the test's goroutine.
func NewFlush(t testing.TB, s *metadata.Store, key string, size int64, chunks ...metadata.Chunk) metadata.Flush {
	t.Helper()
	id, err := s.RegisterSegment(context.Background(), key, size, metadata.KindFlush, time.Minute)
	if err != nil {
		t.Fatalf("metadatatest: register segment %s: %v", key, err)
	}
	return metadata.Flush{SegmentID: id, SegmentSize: size, Chunks: chunks}
}

// GroupFn is a function run in a group transaction.
type GroupFn = func(ctx context.Context, g *metadata.GroupTx) error

// HoldGroupTx runs fn, in a goroutine, in the group transaction that in
// runs (Store.InGroup or InGroupShared, say), and keeps the transaction
// open after fn until release is called (at the latest when the test
// ends); held is closed once fn ran, done receives the transaction's
// error.
func HoldGroupTx(t testing.TB, in func(GroupFn) error, fn GroupFn) (held chan struct{}, release func(), done chan error) {
	held, done = make(chan struct{}), make(chan error, 1)
	rel := make(chan struct{})
	var once sync.Once
	go func() {
		done <- in(func(ctx context.Context, g *metadata.GroupTx) error {
			err := fn(ctx, g)
			close(held)
			if err != nil {
				return err
			}
			<-rel
			return nil
		})
	}()
	release = func() { once.Do(func() { close(rel) }) }
	t.Cleanup(release)
	return held, release, done
}
