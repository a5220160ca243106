package metadata_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"silt/metadata"
	"silt/metadata/metadatatest"
)

// lockPartition holds partition 0 of topic row-locked in a transaction of
// its own connection until the returned release runs.
func lockPartition(t *testing.T, url string, topicID int64) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM partitions WHERE topic_id = $1 AND partition = 0 FOR UPDATE`, topicID); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			_ = tx.Rollback(ctx)
			_ = conn.Close(ctx)
		})
	}
	t.Cleanup(release)
	return release
}

// waitLockWaiter waits until a statement calling fn waits on a lock.
func waitLockWaiter(t *testing.T, s *metadata.Store, fn string) {
	t.Helper()
	waitFor(t, func() bool {
		var n int
		err := s.Pool().QueryRow(context.Background(), `
			SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`, fn).Scan(&n)
		return err == nil && n > 0
	})
}

// waitPastDeadline waits until Postgres's clock is past the segment's deadline.
func waitPastDeadline(t *testing.T, s *metadata.Store, id int64) {
	t.Helper()
	waitFor(t, func() bool {
		var past bool
		err := s.Pool().QueryRow(context.Background(), `SELECT deadline < now() FROM segments WHERE id = $1`, id).Scan(&past)
		return err == nil && past
	})
}

// noLockTimeout opens a store on url that waits for locks without bound,
// as a session of an agent frozen mid-call would.
func noLockTimeout(t *testing.T, url string) *metadata.Store {
	t.Helper()
	return metadatatest.Open(t, url, func(c *metadata.Config) {
		c.Session.LockTimeout = 0
		c.Session.StatementTimeout = 0
	})
}

// A commit that finishes after its segment's deadline writes nothing,
// however long it waited for its locks: the janitor may already have
// deleted the object, so indexing it would lose the records.
func TestCommitAfterDeadlineWritesNothing(t *testing.T) {
	t.Parallel()
	url := metadatatest.URL(t)
	s := noLockTimeout(t, url)
	ctx := context.Background()
	top := newTopic(t, s, "t", 1)
	id, err := s.RegisterSegment(ctx, "late", 100, metadata.KindFlush, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	release := lockPartition(t, url, top.ID)
	done := make(chan error, 1)
	go func() {
		_, err := s.CommitFlush(ctx, metadata.Flush{SegmentID: id, SegmentSize: 100, Chunks: []metadata.Chunk{chunk(top.ID, 0, 3)}})
		done <- err
	}()
	waitLockWaiter(t, s, "silt_commit_flush")
	waitPastDeadline(t, s, id)
	release()
	if err := <-done; !errors.Is(err, metadata.ErrSegmentExpired) {
		t.Fatalf("late commit: %v, want ErrSegmentExpired", err)
	}
	st, _ := s.PartitionOffsets(ctx, top.ID, 0)
	refs, _ := s.ListBatches(ctx, top.ID, 0, 0, 10)
	if st.HighWatermark != 0 || len(refs) != 0 {
		t.Fatalf("late commit wrote: %+v, %d rows", st, len(refs))
	}
	doomed, err := s.ClaimDoomed(ctx, time.Hour, time.Minute, 10)
	if err != nil || len(doomed) != 1 || doomed[0].ID != id {
		t.Fatalf("claimed %v (%v), want the late segment", doomed, err)
	}
}

// Once the sweeper claimed an expired pending segment, its commit fails
// even if it never waited.
func TestCommitAfterClaimWritesNothing(t *testing.T) {
	s, ctx := setup(t)
	top := newTopic(t, s, "t", 1)
	id, err := s.RegisterSegment(ctx, "swept", 100, metadata.KindFlush, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	waitPastDeadline(t, s, id)
	if d, err := s.ClaimDoomed(ctx, time.Hour, time.Minute, 10); err != nil || len(d) != 1 {
		t.Fatalf("claimed %v, %v", d, err)
	}
	if _, err := s.CommitFlush(ctx, metadata.Flush{SegmentID: id, SegmentSize: 100, Chunks: []metadata.Chunk{chunk(top.ID, 0, 1)}}); !errors.Is(err, metadata.ErrSegmentExpired) {
		t.Fatalf("commit of a claimed segment: %v", err)
	}
}

// A swap that finishes after its segment's deadline leaves the index as
// it was.
func TestSwapAfterDeadlineWritesNothing(t *testing.T) {
	t.Parallel()
	url := metadatatest.URL(t)
	s := noLockTimeout(t, url)
	ctx := context.Background()
	top := newTopic(t, s, "t", 1)
	for _, k := range []string{"a", "b"} {
		if _, err := s.CommitFlush(ctx, metadatatest.NewFlush(t, s, k, 200, chunk(top.ID, 0, 2))); err != nil {
			t.Fatal(err)
		}
	}
	heartbeat(t, s, "me")
	held, err := syncLeases(ctx, s, "me", leaseCfg)
	if err != nil || len(held) != 1 {
		t.Fatalf("leases %v, %v", held, err)
	}
	refs, _ := s.ListBatches(ctx, top.ID, 0, 0, 10)
	id, err := s.RegisterSegment(ctx, "merged", 400, metadata.KindMerged, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	release := lockPartition(t, url, top.ID)
	done := make(chan error, 1)
	go func() {
		done <- s.SwapBatches(ctx, "me", held[0], refs, id, 400, []metadata.NewChunk{
			{BaseOffset: 0, LastOffset: 1, Records: 2, ByteLength: 200},
			{BaseOffset: 2, LastOffset: 3, Records: 2, ByteOffset: 200, ByteLength: 200},
		})
	}()
	waitLockWaiter(t, s, "silt_swap_batches")
	waitPastDeadline(t, s, id)
	release()
	if err := <-done; !errors.Is(err, metadata.ErrSegmentExpired) {
		t.Fatalf("late swap: %v, want ErrSegmentExpired", err)
	}
	after, _ := s.ListBatches(ctx, top.ID, 0, 0, 10)
	if len(after) != 2 || after[0].SegmentKey != "a" || after[1].SegmentKey != "b" {
		t.Fatalf("index after the late swap: %+v", after)
	}
}

// With the default session bounds, a commit waiting on a lock that a
// stalled session holds fails retriably instead of waiting, and the
// timeout is counted.
func TestCommitLockTimeout(t *testing.T) {
	t.Parallel()
	url := metadatatest.URL(t)
	reg := prometheus.NewRegistry()
	s := metadatatest.Open(t, url, func(c *metadata.Config) {
		c.Session.LockTimeout = 200 * time.Millisecond
		c.Registerer = reg
	})
	ctx := context.Background()
	top := newTopic(t, s, "t", 1)
	lockPartition(t, url, top.ID)
	f := metadatatest.NewFlush(t, s, "k", 1, chunk(top.ID, 0, 1))
	if _, err := s.CommitFlush(ctx, f); !errors.Is(err, metadata.ErrUnavailable) {
		t.Fatalf("commit behind a held lock: %v, want ErrUnavailable", err)
	}
	if n := counterValue(t, reg, "silt_metadata_timeouts_total", "lock"); n != 1 {
		t.Fatalf("lock timeouts counted: %v", n)
	}
}

// silt_metadata_commit_lock_wait_seconds observes how long a commit waited
// for its partition locks: uncontended, well under the wait it sees when
// another session holds the row for a while (measured on Postgres's clock
// from when the commit began to wait).
func TestCommitLockWaitObserved(t *testing.T) {
	t.Parallel()
	url := metadatatest.URL(t)
	reg := prometheus.NewRegistry()
	s := metadatatest.Open(t, url, func(c *metadata.Config) {
		c.Session.LockTimeout, c.Session.StatementTimeout = 0, 0
		c.Registerer = reg
	})
	ctx := context.Background()
	top := newTopic(t, s, "t", 1)
	if _, err := s.CommitFlush(ctx, metadatatest.NewFlush(t, s, "free", 1, chunk(top.ID, 0, 1))); err != nil {
		t.Fatal(err)
	}
	count, sum := histogram(t, reg, "silt_metadata_commit_lock_wait_seconds")
	if count != 1 || sum >= 0.3 {
		t.Fatalf("uncontended commit: %d observations, %v s in all", count, sum)
	}

	const held = 300 * time.Millisecond
	release := lockPartition(t, url, top.ID)
	done := make(chan error, 1)
	go func() {
		_, err := s.CommitFlush(ctx, metadatatest.NewFlush(t, s, "held", 1, chunk(top.ID, 0, 1)))
		done <- err
	}()
	waitLockWaiter(t, s, "silt_commit_flush")
	waitFor(t, func() bool {
		var long bool
		err := s.Pool().QueryRow(ctx, `
			SELECT coalesce(bool_or(clock_timestamp() - l.waitstart > $1::interval), false)
			FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE NOT l.granted AND a.datname = current_database() AND a.query LIKE '%silt_commit_flush%'`, held.String()).Scan(&long)
		return err == nil && long
	})
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	count, total := histogram(t, reg, "silt_metadata_commit_lock_wait_seconds")
	if count != 2 || total-sum < held.Seconds() {
		t.Fatalf("after a commit that waited over %v: %d observations, the last %v s", held, count, total-sum)
	}
}

// histogram returns a histogram's observation count and sum.
func histogram(t *testing.T, reg *prometheus.Registry, name string) (uint64, float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	t.Fatalf("no histogram %s", name)
	return 0, 0
}

// counterValue returns the value of counter name{kind}.
func counterValue(t *testing.T, reg *prometheus.Registry, name, kind string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{kind=%q}", name, kind)
	return 0
}

// Two retention passes that remove the last index rows of one object at
// the same time leave it unreferenced, whichever finishes first.
func TestConcurrentRemovalMarksUnreferenced(t *testing.T) {
	s, ctx := setup(t)
	const rounds = 10
	top := newTopic(t, s, "t", 2)
	heartbeat(t, s, "me")
	held, err := syncLeases(ctx, s, "me", leaseCfg)
	if err != nil || len(held) != 2 {
		t.Fatalf("leases %v, %v", held, err)
	}
	for r := 0; r < rounds; r++ {
		f := metadatatest.NewFlush(t, s, fmt.Sprint("shared-", r), 200, chunk(top.ID, 0, 1), chunk(top.ID, 1, 1))
		if _, err := s.CommitFlush(ctx, f); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, l := range held {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = s.AdvanceLogStart(ctx, "me", l, int64(r+1))
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		var state string
		if err := s.Pool().QueryRow(ctx, `SELECT state FROM segments WHERE id = $1`, f.SegmentID).Scan(&state); err != nil {
			t.Fatal(err)
		}
		if state != "unreferenced" {
			t.Fatalf("round %d: segment %s after both partitions dropped it", r, state)
		}
	}
}

// Conditional appends commit only at the expected next offset.
func TestCommitExpectedOffset(t *testing.T) {
	s, ctx := setup(t)
	top := newTopic(t, s, "t", 1)
	at := func(key string, expected int64) metadata.ChunkResult {
		t.Helper()
		c := chunk(top.ID, 0, 2)
		c.CheckOffset, c.ExpectedOffset = true, expected
		res, err := s.CommitFlush(ctx, metadatatest.NewFlush(t, s, key, 1, c))
		if err != nil {
			t.Fatal(err)
		}
		return res[0]
	}
	if r := at("a", 0); r.Err != nil || r.BaseOffset != 0 {
		t.Fatalf("at 0: %+v", r)
	}
	r := at("b", 0)
	var mm *metadata.OffsetMismatchError
	if !errors.As(r.Err, &mm) || mm.NextOffset != 2 || mm.Expected != 0 {
		t.Fatalf("stale expectation: %+v", r)
	}
	if r := at("c", 2); r.Err != nil || r.BaseOffset != 2 {
		t.Fatalf("at 2: %+v", r)
	}
}

// Only issued producer ids are accepted, at their current epoch; a new
// epoch starts its sequences at 0.
func TestCommitProducerChecks(t *testing.T) {
	s, ctx := setup(t)
	top := newTopic(t, s, "t", 1)
	commit := func(key string, pid int64, epoch int16, seq int32) metadata.ChunkResult {
		t.Helper()
		c := chunk(top.ID, 0, 1)
		c.ProducerID, c.ProducerEpoch, c.BaseSequence = pid, epoch, seq
		res, err := s.CommitFlush(ctx, metadatatest.NewFlush(t, s, key, 1, c))
		if err != nil {
			t.Fatal(err)
		}
		return res[0]
	}
	if r := commit("a", 12345, 0, 0); !errors.Is(r.Err, metadata.ErrUnknownProducer) {
		t.Fatalf("never issued: %+v", r)
	}
	pid, err := s.NewProducerID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r := commit("b", pid, 0, 0); r.Err != nil {
		t.Fatal(r.Err)
	}
	if _, err := s.Pool().Exec(ctx, `UPDATE producers SET epoch = 1 WHERE id = $1`, pid); err != nil {
		t.Fatal(err)
	}
	if r := commit("c", pid, 0, 1); !errors.Is(r.Err, metadata.ErrProducerFenced) {
		t.Fatalf("old epoch: %+v", r)
	}
	if r := commit("d", pid, 1, 0); r.Err != nil || r.BaseOffset != 1 {
		t.Fatalf("new epoch from sequence 0: %+v", r)
	}
}

// Producer state idle past the expiry goes, then the producer id with no
// state left; empty groups go after the retention.
func TestExpiry(t *testing.T) {
	s, ctx := setup(t)
	top := newTopic(t, s, "t", 1)
	idle, err := s.NewProducerID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	busy, err := s.NewProducerID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, pid := range []int64{idle, busy} {
		c := chunk(top.ID, 0, 1)
		c.ProducerID = pid
		if _, err := s.CommitFlush(ctx, metadatatest.NewFlush(t, s, fmt.Sprint("p", i), 1, c)); err != nil {
			t.Fatal(err)
		}
	}
	unused, err := s.NewProducerID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := s.Pool().Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`UPDATE producers SET issued_at = now() - interval '2 days'`)
	exec(`UPDATE producer_state SET updated_at = now() - interval '2 days' WHERE producer_id = $1`, idle)
	states, producers, err := s.ExpireProducers(ctx, 24*time.Hour, 100)
	if err != nil || states != 1 || producers != 2 {
		t.Fatalf("expired %d states and %d producers (%v); want 1 and 2 (idle, unused)", states, producers, err)
	}
	c := chunk(top.ID, 0, 1)
	c.ProducerID, c.BaseSequence = busy, 1
	if res, err := s.CommitFlush(ctx, metadatatest.NewFlush(t, s, "busy", 1, c)); err != nil || res[0].Err != nil {
		t.Fatalf("the busy producer after expiry: %v %+v", err, res)
	}
	for _, pid := range []int64{idle, unused} {
		c.ProducerID, c.BaseSequence = pid, 0
		if res, err := s.CommitFlush(ctx, metadatatest.NewFlush(t, s, fmt.Sprint("gone", pid), 1, c)); err != nil || !errors.Is(res[0].Err, metadata.ErrUnknownProducer) {
			t.Fatalf("an expired producer wrote: %v %+v", err, res)
		}
	}

	exec(`INSERT INTO groups (name, updated_at) VALUES ('old', now() - interval '8 days'), ('recent', now() - interval '8 days'), ('new', now())`)
	exec(`INSERT INTO group_offsets (group_id, topic_id, partition, committed_offset, committed_at)
		SELECT id, $1, 0, 1, CASE name WHEN 'recent' THEN now() ELSE now() - interval '8 days' END FROM groups`, top.ID)
	n, err := s.ExpireGroups(ctx, 7*24*time.Hour, 100)
	if err != nil || n != 1 {
		t.Fatalf("expired %d groups (%v), want 1", n, err)
	}
	var left []string
	rows, _ := s.Pool().Query(ctx, `SELECT name FROM groups ORDER BY name`)
	left, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(left) != 2 || left[0] != "new" || left[1] != "recent" {
		t.Fatalf("groups left: %v (%v)", left, err)
	}
}
