package metadata_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"silt/internal/testenv"
	"silt/metadata"
	"silt/metadata/metadatatest"
)

// partitionQuotaLock is the advisory lock under which topic creations
// check the cluster's partition quota (topics.go).
const partitionQuotaLock int64 = 0x73696c7471756f

// setupPooler returns the direct URL of a fresh, migrated database and a
// URL that reaches it through pgbouncer in transaction mode with two
// server sessions, so that consecutive statements of one client land on
// different sessions.
func setupPooler(t *testing.T) (direct, pooled string) {
	t.Helper()
	t.Parallel()
	direct = metadatatest.URL(t)
	return direct, testenv.PgBouncer(t, direct, 2)
}

// A pooler in transaction mode refuses the session bounds in the startup
// message: a store that sends them cannot connect.
func TestPoolerRefusesStartupBounds(t *testing.T) {
	_, pooled := setupPooler(t)
	s := metadatatest.Open(t, pooled, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := s.Ping(ctx)
	if err == nil || !strings.Contains(err.Error(), "unsupported startup parameter") {
		t.Fatalf("ping through the pooler with startup bounds: %v, want a refusal of a startup parameter", err)
	}
}

// Behind a pooler in transaction mode, the store works from many
// connections at once (no named prepared statement is expected to live
// on a server session), and each of its transactions carries the session
// bounds: a wait for a lock ends at the lock timeout, and the bound does
// not stay on the server session afterwards.
func TestTransactionPooler(t *testing.T) {
	direct, pooled := setupPooler(t)
	s := metadatatest.Open(t, pooled, func(c *metadata.Config) {
		c.TransactionPooler = true
		c.MaxConns = 8
		c.Session.LockTimeout = 200 * time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	top, err := s.CreateTopic(ctx, "t", 4, metadata.DefaultTopicConfig())
	if err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				p := int32((w + i) % 4)
				id, err := s.RegisterSegment(ctx, fmt.Sprintf("w%d-%d", w, i), 100, metadata.KindFlush, time.Minute)
				if err != nil {
					errs <- fmt.Errorf("register: %w", err)
					return
				}
				if _, err := s.CommitFlush(ctx, metadata.Flush{SegmentID: id, SegmentSize: 100, Chunks: []metadata.Chunk{chunk(top.ID, p, 2)}}); err != nil {
					errs <- fmt.Errorf("commit: %w", err)
					return
				}
				if _, err := s.PartitionOffsets(ctx, top.ID, p); err != nil {
					errs <- fmt.Errorf("offsets: %w", err)
					return
				}
				if _, err := s.ListBatches(ctx, top.ID, p, 0, 10); err != nil {
					errs <- fmt.Errorf("lookup: %w", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var hw int64
	for p := range int32(4) {
		st, err := s.PartitionOffsets(ctx, top.ID, p)
		if err != nil {
			t.Fatal(err)
		}
		hw += st.HighWatermark
	}
	if hw != 8*10*2 {
		t.Fatalf("high watermarks sum to %d, want %d", hw, 8*10*2)
	}

	// Hold the quota lock on a direct session: a topic creation through
	// the pooler waits for it, and must give up at the lock timeout.
	hold, err := pgx.Connect(ctx, direct)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close(context.WithoutCancel(ctx))
	tx, err := hold.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, partitionQuotaLock); err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateTopic(ctx, "u", 1, metadata.DefaultTopicConfig())
	if !errors.Is(err, metadata.ErrUnavailable) || !strings.Contains(err.Error(), "lock timeout") {
		t.Fatalf("create while the quota lock is held: %v, want ErrUnavailable at the lock timeout", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	// The bound was local to the transaction: the server sessions behind
	// the pooler keep the server's setting.
	for range 4 {
		var v string
		if err := s.Pool().QueryRow(ctx, `SELECT current_setting('lock_timeout')`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		if v != "0" {
			t.Fatalf("lock_timeout outside a transaction = %q, want the server's 0", v)
		}
	}
	if _, err := s.CreateTopic(ctx, "u", 1, metadata.DefaultTopicConfig()); err != nil {
		t.Fatalf("create after the lock was released: %v", err)
	}
}
