package metadata_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"silt/metadata"
	"silt/metadata/metadatatest"
)

// groupTopic creates a topic and commits records to its partitions:
// fill[p] records to partition p.
func groupTopic(t *testing.T, s *metadata.Store, name string, parts int32, fill ...int32) metadata.Topic {
	t.Helper()
	ctx := context.Background()
	top, err := s.CreateTopic(ctx, name, parts, metadata.DefaultTopicConfig())
	if err != nil {
		t.Fatal(err)
	}
	var chunks []metadata.Chunk
	for p, n := range fill {
		if n > 0 {
			chunks = append(chunks, metadata.Chunk{TopicID: top.ID, Partition: int32(p), ByteLength: 10 * n, Records: n, LastOffsetDelta: n - 1, MaxTimestamp: 1})
		}
	}
	if len(chunks) > 0 {
		if _, err := s.CommitFlush(ctx, metadatatest.NewFlush(t, s, "seg/"+name, 1000, chunks...)); err != nil {
			t.Fatal(err)
		}
	}
	return top
}

func TestInGroupCreatesLocksAndRollsBack(t *testing.T) {
	s, ctx := setup(t)
	// Without create, a missing group is not found.
	err := s.InGroup(ctx, "g", false, func(context.Context, *metadata.GroupTx) error { return nil })
	if !errors.Is(err, metadata.ErrGroupNotFound) {
		t.Fatalf("missing group: %v, want ErrGroupNotFound", err)
	}
	top := groupTopic(t, s, "orders", 3)
	var before time.Time
	err = s.InGroup(ctx, "g", true, func(ctx context.Context, g *metadata.GroupTx) error {
		if !g.Created() || g.Group().Name != "g" || g.Group().Generation != 0 || len(g.Members()) != 0 || len(g.Group().Topics) != 0 {
			t.Errorf("new group: %+v, members %v", g.Group(), g.Members())
		}
		before = g.Now()
		if err := g.SetGeneration(ctx, 1, map[string]metadata.GroupTopic{"orders": {ID: top.ID, Partitions: 3}}); err != nil {
			return err
		}
		for _, id := range []string{"b", "a"} {
			if err := g.PutMember(ctx, metadata.GroupMember{ID: id, Topics: []string{"orders"}, SessionTimeout: 10 * time.Second,
				AutoOffsetReset: "earliest", Generation: 1, AssignmentGeneration: 1}); err != nil {
				return err
			}
		}
		return g.SetAssignments(ctx, 1, map[string][]metadata.GroupPartition{
			"a": {{Topic: "orders", TopicID: top.ID, Partition: 0}},
			"b": {{Topic: "orders", TopicID: top.ID, Partition: 1}, {Topic: "orders", TopicID: top.ID, Partition: 2}},
		})
	})
	if err != nil {
		t.Fatal(err)
	}

	// A callback's error rolls everything back and comes out unchanged.
	boom := errors.New("boom")
	err = s.InGroup(ctx, "g", false, func(ctx context.Context, g *metadata.GroupTx) error {
		if err := g.RemoveMembers(ctx, "a", "b"); err != nil {
			return err
		}
		if err := g.SetGeneration(ctx, 99, nil); err != nil {
			return err
		}
		return boom
	})
	if err != boom {
		t.Fatalf("callback error came back as %v", err)
	}

	err = s.InGroup(ctx, "g", true, func(ctx context.Context, g *metadata.GroupTx) error {
		gr := g.Group()
		if g.Created() {
			t.Error("an existing group reported as created")
		}
		if gr.Generation != 1 || gr.Topics["orders"] != (metadata.GroupTopic{ID: top.ID, Partitions: 3}) {
			t.Errorf("group after rollback: %+v", gr)
		}
		if !g.Now().After(before) {
			t.Errorf("now %v is not after %v", g.Now(), before)
		}
		ms := g.Members()
		if len(ms) != 2 || ms[0].ID != "a" || ms[1].ID != "b" {
			t.Fatalf("members %+v, want a and b in id order", ms)
		}
		if len(ms[1].Assignment) != 2 || ms[1].Assignment[1].Partition != 2 || ms[1].AssignmentGeneration != 1 ||
			ms[0].SessionTimeout != 10*time.Second || ms[0].AutoOffsetReset != "earliest" || ms[0].Topics[0] != "orders" {
			t.Errorf("member rows %+v", ms)
		}
		if got := g.SubscribedTopics(); len(got) != 1 || got["orders"].ID != top.ID {
			t.Errorf("subscribed topics %+v", got)
		}
		return g.Touch(ctx, "a")
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.InGroup(ctx, "g", false, func(ctx context.Context, g *metadata.GroupTx) error {
		ms := g.Members()
		if !ms[0].HeartbeatAt.After(ms[1].HeartbeatAt) {
			t.Errorf("touched member's heartbeat %v is not after %v", ms[0].HeartbeatAt, ms[1].HeartbeatAt)
		}
		return g.RemoveMembers(ctx, "a")
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.InGroup(ctx, "g", false, func(ctx context.Context, g *metadata.GroupTx) error {
		if ms := g.Members(); len(ms) != 1 || ms[0].ID != "b" {
			t.Errorf("after remove: %+v", ms)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The row lock serializes read-modify-write cycles across connections:
// no increment is lost.
func TestInGroupSerializes(t *testing.T) {
	s, ctx := setup(t)
	const workers, rounds = 6, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				err := s.InGroup(ctx, "counter", true, func(ctx context.Context, g *metadata.GroupTx) error {
					return g.SetGeneration(ctx, g.Group().Generation+1, nil)
				})
				if err != nil {
					errs <- err
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
	err := s.InGroup(ctx, "counter", false, func(ctx context.Context, g *metadata.GroupTx) error {
		if g.Group().Generation != workers*rounds {
			t.Errorf("generation %d, want %d", g.Group().Generation, workers*rounds)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestGroupCommitAndOffsets(t *testing.T) {
	s, ctx := setup(t)
	top := groupTopic(t, s, "orders", 2, 10, 4)
	other := groupTopic(t, s, "other", 1, 3)
	err := s.InGroup(ctx, "g", true, func(ctx context.Context, g *metadata.GroupTx) error {
		topics, err := g.Topics(ctx, []string{"orders", "nope"})
		if err != nil {
			return err
		}
		if len(topics) != 1 || topics["orders"] != (metadata.GroupTopic{ID: top.ID, Partitions: 2}) {
			t.Errorf("topics %+v", topics)
		}
		if err := g.Commit(ctx, []metadata.GroupCommit{{TopicID: top.ID, Partition: 0, Offset: 7, Metadata: "m"}}); err != nil {
			return err
		}
		// Upsert.
		if err := g.Commit(ctx, []metadata.GroupCommit{{TopicID: top.ID, Partition: 0, Offset: 8, Metadata: "n"}}); err != nil {
			return err
		}
		p0 := metadata.TopicPartition{TopicID: top.ID, Partition: 0}
		p1 := metadata.TopicPartition{TopicID: top.ID, Partition: 1}
		offs, err := g.Offsets(ctx, []metadata.TopicPartition{p0, p1, {TopicID: top.ID, Partition: 7}})
		if err != nil {
			return err
		}
		if len(offs) != 2 || offs[p0].Committed == nil || *offs[p0].Committed != 8 || offs[p0].Metadata != "n" ||
			offs[p0].HighWatermark != 10 || offs[p1].Committed != nil || offs[p1].HighWatermark != 4 {
			t.Errorf("offsets %+v", offs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.InGroup(ctx, "g", false, func(ctx context.Context, g *metadata.GroupTx) error {
		return g.Commit(ctx, []metadata.GroupCommit{{TopicID: top.ID, Partition: 5, Offset: 1}})
	})
	if !errors.Is(err, metadata.ErrPartitionNotFound) {
		t.Fatalf("commit to a missing partition: %v", err)
	}
	err = s.InGroup(ctx, "g", false, func(ctx context.Context, g *metadata.GroupTx) error {
		return g.Commit(ctx, []metadata.GroupCommit{{TopicID: top.ID, Partition: 1, Offset: -1}})
	})
	if !errors.Is(err, metadata.ErrInvalidArgument) {
		t.Fatalf("negative commit: %v", err)
	}

	// The offsets view covers committed topics and subscribed ones.
	err = s.InGroup(ctx, "g", false, func(ctx context.Context, g *metadata.GroupTx) error {
		return g.PutMember(ctx, metadata.GroupMember{ID: "m", Topics: []string{"other", "gone"}, SessionTimeout: time.Minute, AutoOffsetReset: "latest"})
	})
	if err != nil {
		t.Fatal(err)
	}
	view, err := s.GroupOffsets(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"orders/0 c=8 hw=10", "orders/1 c=- hw=4", "other/0 c=- hw=3"}
	if len(view) != len(want) {
		t.Fatalf("view %+v", view)
	}
	for i, v := range view {
		c := "-"
		if v.Committed != nil {
			c = fmt.Sprint(*v.Committed)
		}
		if got := fmt.Sprintf("%s/%d c=%s hw=%d", v.Topic, v.Partition, c, v.HighWatermark); got != want[i] {
			t.Errorf("view[%d] = %s, want %s", i, got, want[i])
		}
	}
	if _, err := s.GroupOffsets(ctx, "nope"); !errors.Is(err, metadata.ErrGroupNotFound) {
		t.Fatalf("offsets of a missing group: %v", err)
	}

	// Lags, bounded.
	err = s.InGroup(ctx, "h", true, func(ctx context.Context, g *metadata.GroupTx) error {
		return g.Commit(ctx, []metadata.GroupCommit{{TopicID: top.ID, Partition: 1, Offset: 1}, {TopicID: other.ID, Partition: 0, Offset: 3}})
	})
	if err != nil {
		t.Fatal(err)
	}
	lags, truncated, err := s.GroupLags(ctx, 10)
	if err != nil || truncated {
		t.Fatalf("lags: %v, truncated %v", err, truncated)
	}
	wantLags := []metadata.GroupLag{{Group: "g", Topic: "orders", Partition: 0, Lag: 2}, {Group: "h", Topic: "orders", Partition: 1, Lag: 3},
		{Group: "h", Topic: "other", Partition: 0, Lag: 0}}
	if fmt.Sprint(lags) != fmt.Sprint(wantLags) {
		t.Fatalf("lags %+v, want %+v", lags, wantLags)
	}
	lags, truncated, err = s.GroupLags(ctx, 2)
	if err != nil || !truncated || len(lags) != 2 {
		t.Fatalf("bounded lags: %+v, truncated %v, %v", lags, truncated, err)
	}

	// Deleting the topic takes its offsets along.
	if err := s.DeleteTopic(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	if lags, _, _ := s.GroupLags(ctx, 10); len(lags) != 2 {
		t.Fatalf("lags after topic deletion: %+v", lags)
	}
}

func TestListAndDeleteGroups(t *testing.T) {
	s, ctx := setup(t)
	top := groupTopic(t, s, "t", 1, 5)
	put := func(group string, gen int64, members ...metadata.GroupMember) {
		t.Helper()
		err := s.InGroup(ctx, group, true, func(ctx context.Context, g *metadata.GroupTx) error {
			if err := g.SetGeneration(ctx, gen, nil); err != nil {
				return err
			}
			for _, m := range members {
				if err := g.PutMember(ctx, m); err != nil {
					return err
				}
			}
			return g.Commit(ctx, []metadata.GroupCommit{{TopicID: top.ID, Partition: 0, Offset: 1}})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	live := func(id string, gen int64) metadata.GroupMember {
		return metadata.GroupMember{ID: id, Topics: []string{"t"}, SessionTimeout: time.Hour, AutoOffsetReset: "latest", Generation: gen}
	}
	expired := metadata.GroupMember{ID: "x", Topics: []string{"t"}, SessionTimeout: time.Millisecond, AutoOffsetReset: "latest", Generation: 3}
	put("b-empty", 0)
	put("a-stable", 2, live("m1", 2), live("m2", 2))
	put("c-behind", 3, live("m1", 3), live("m2", 2), expired)
	// Wait for the expired member's session to pass on the database clock.
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		list, err := s.ListGroups(ctx, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		got := fmt.Sprintf("%+v", list)
		h := "Protocol:http KafkaState:empty ProtocolType:"
		want := "[{Name:a-stable Generation:2 " + h + " Members:2 Live:2 Behind:0} {Name:b-empty Generation:0 " + h +
			" Members:0 Live:0 Behind:0} {Name:c-behind Generation:3 " + h + " Members:3 Live:2 Behind:1}]"
		if got == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("list %s\nwant %s", got, want)
		}
		<-tick.C
	}
	err := s.InGroup(ctx, "c-behind", false, func(ctx context.Context, g *metadata.GroupTx) error { return g.Delete(ctx) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GroupOffsets(ctx, "c-behind"); !errors.Is(err, metadata.ErrGroupNotFound) {
		t.Fatalf("deleted group's offsets: %v", err)
	}
	if lags, _, _ := s.GroupLags(ctx, 10); len(lags) != 2 {
		t.Fatalf("lags after group deletion: %+v", lags)
	}
}

// lockWaiters waits until n sessions of the test's database wait for a
// lock.
func lockWaiters(t *testing.T, ctx context.Context, s *metadata.Store, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var waiting int
		if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions wait for a lock, want %d", waiting, n)
		}
		<-tick.C
	}
}

// Transactions under InGroupShared (offset commits) do not wait for each
// other; a change of the group's state under InGroup waits for them, and
// they for it, and see what it committed.
func TestInGroupSharedSideBySide(t *testing.T) {
	s, ctx := setup(t)
	top := groupTopic(t, s, "orders", 2, 5, 5)
	topics := map[string]metadata.GroupTopic{"orders": {ID: top.ID, Partitions: 2}}
	err := s.InGroup(ctx, "g", true, func(ctx context.Context, g *metadata.GroupTx) error {
		return g.SetGeneration(ctx, 1, topics)
	})
	if err != nil {
		t.Fatal(err)
	}
	shared := func(fn func(ctx context.Context, g *metadata.GroupTx) error) error {
		return s.InGroupShared(ctx, "g", fn)
	}
	commit := func(part int32, off int64) func(ctx context.Context, g *metadata.GroupTx) error {
		return func(ctx context.Context, g *metadata.GroupTx) error {
			return g.Commit(ctx, []metadata.GroupCommit{{TopicID: top.ID, Partition: part, Offset: off}})
		}
	}

	// One commit holds its transaction open; another completes beside it.
	held, release, first := metadatatest.HoldGroupTx(t, shared, commit(0, 1))
	<-held
	second := make(chan error, 1)
	go func() { second <- shared(commit(1, 2)) }()
	select {
	case err := <-second:
		if err != nil {
			t.Fatalf("second commit: %v", err)
		}
	case err := <-first:
		t.Fatalf("the held commit ended first: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the second commit waits for the first")
	}

	// A change of the group's state waits for the held commit.
	changed := make(chan error, 1)
	go func() {
		changed <- s.InGroup(ctx, "g", false, func(ctx context.Context, g *metadata.GroupTx) error {
			return g.SetGeneration(ctx, g.Group().Generation+1, topics)
		})
	}()
	lockWaiters(t, ctx, s, 1)
	select {
	case err := <-changed:
		t.Fatalf("the group changed under a shared lock: %v", err)
	default:
	}
	release()
	if err := <-first; err != nil {
		t.Fatalf("held commit: %v", err)
	}
	if err := <-changed; err != nil {
		t.Fatalf("change: %v", err)
	}

	// A shared transaction waits for a change in flight and sees it.
	held, release, change := metadatatest.HoldGroupTx(t, func(fn func(ctx context.Context, g *metadata.GroupTx) error) error {
		return s.InGroup(ctx, "g", false, fn)
	}, func(ctx context.Context, g *metadata.GroupTx) error {
		return g.SetGeneration(ctx, g.Group().Generation+1, topics)
	})
	<-held
	seen := make(chan int64, 1)
	go func() {
		var gen int64 = -1
		err := shared(func(ctx context.Context, g *metadata.GroupTx) error {
			gen = g.Group().Generation
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		seen <- gen
	}()
	lockWaiters(t, ctx, s, 1)
	select {
	case gen := <-seen:
		t.Fatalf("a shared read answered (generation %d) during a change", gen)
	default:
	}
	release()
	if err := <-change; err != nil {
		t.Fatal(err)
	}
	if gen := <-seen; gen != 3 {
		t.Fatalf("shared read after the change saw generation %d, want 3", gen)
	}
	offs, err := s.CommittedOffsets(ctx, "g")
	if err != nil || len(offs) != 2 || offs[0].Offset != 1 || offs[1].Offset != 2 {
		t.Fatalf("committed offsets %+v, %v; want 1 and 2", offs, err)
	}
	err = s.InGroupShared(ctx, "nope", func(context.Context, *metadata.GroupTx) error { return nil })
	if !errors.Is(err, metadata.ErrGroupNotFound) {
		t.Fatalf("shared on a missing group: %v, want ErrGroupNotFound", err)
	}
}

// groupLockQueue returns, by mode (ExclusiveLock, ShareLock), how many
// requests for group name's advisory lock wait.
func groupLockQueue(t *testing.T, ctx context.Context, s *metadata.Store, name string) map[string]int {
	t.Helper()
	rows, err := s.Pool().Query(ctx, `
		SELECT l.mode, count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
		WHERE d.datname = current_database() AND l.locktype = 'advisory' AND NOT l.granted
		  AND l.classid::bigint = $1 AND l.objid::bigint = hashtext($2)::bigint & 4294967295 AND l.objsubid = 2
		GROUP BY l.mode`, metadata.GroupLockClass, name)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for rows.Next() {
		var mode string
		var n int
		if err := rows.Scan(&mode, &n); err != nil {
			t.Fatal(err)
		}
		out[mode] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// A change of the group's state that waits for a shared holder (an offset
// commit) is not overtaken by shared requests that arrive after it: they
// queue behind it, so a stream of overlapping commits cannot keep a
// membership change out until its session times out. With the row locked
// FOR SHARE alone, the later shared request is granted at once.
func TestInGroupSharedQueuesBehindWaitingChange(t *testing.T) {
	s, ctx := setup(t)
	err := s.InGroup(ctx, "g", true, func(ctx context.Context, g *metadata.GroupTx) error {
		return g.SetGeneration(ctx, 1, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	shared := func(fn func(ctx context.Context, g *metadata.GroupTx) error) error {
		return s.InGroupShared(ctx, "g", fn)
	}
	var mu sync.Mutex
	var order []string
	note := func(what string) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, what)
	}

	// A commit holds the lock shared; a change waits for it.
	held, release, first := metadatatest.HoldGroupTx(t, shared, func(context.Context, *metadata.GroupTx) error { return nil })
	<-held
	changed := make(chan error, 1)
	go func() {
		changed <- s.InGroup(ctx, "g", false, func(ctx context.Context, g *metadata.GroupTx) error {
			note("exclusive")
			return g.SetGeneration(ctx, g.Group().Generation+1, nil)
		})
	}()
	lockWaiters(t, ctx, s, 1)

	// A second shared request, arriving while the change waits, queues
	// behind it rather than joining the holder.
	seen := make(chan int64, 1)
	go func() {
		var gen int64 = -1
		err := shared(func(ctx context.Context, g *metadata.GroupTx) error {
			note("shared")
			gen = g.Group().Generation
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		seen <- gen
	}()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		q := groupLockQueue(t, ctx, s, "g")
		if q["ExclusiveLock"] == 1 && q["ShareLock"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting requests for the group's lock: %v; want one exclusive and one shared", q)
		}
		select {
		case gen := <-seen:
			t.Fatalf("a shared request overtook the waiting change (it read generation %d)", gen)
		case err := <-changed:
			t.Fatalf("the change ended under a shared holder: %v", err)
		case <-tick.C:
		}
	}

	// The holder ends: the change is granted first, then the second
	// shared request, which sees it.
	release()
	if err := <-first; err != nil {
		t.Fatalf("held commit: %v", err)
	}
	if err := <-changed; err != nil {
		t.Fatalf("change: %v", err)
	}
	if gen := <-seen; gen != 2 {
		t.Fatalf("the second shared request read generation %d, want 2 (after the change)", gen)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(order) != 2 || order[0] != "exclusive" || order[1] != "shared" {
		t.Fatalf("order of grants %v, want [exclusive shared]", order)
	}
}

// Expiry skips a group whose lock is held (an offset commit in flight)
// and expires it once the lock is free.
func TestExpireGroupsSkipsLockedGroup(t *testing.T) {
	s, ctx := setup(t)
	if _, err := s.Pool().Exec(ctx, `INSERT INTO groups (name, updated_at) VALUES ('old', now() - interval '8 days')`); err != nil {
		t.Fatal(err)
	}
	held, release, done := metadatatest.HoldGroupTx(t, func(fn func(ctx context.Context, g *metadata.GroupTx) error) error {
		return s.InGroupShared(ctx, "old", fn)
	}, func(context.Context, *metadata.GroupTx) error { return nil })
	<-held
	if n, err := s.ExpireGroups(ctx, 7*24*time.Hour, 10); err != nil || n != 0 {
		t.Fatalf("expired %d groups (%v) while one's lock is held, want 0", n, err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n, err := s.ExpireGroups(ctx, 7*24*time.Hour, 10); err != nil || n != 1 {
		t.Fatalf("expired %d groups (%v), want 1", n, err)
	}
	err := s.InGroupShared(ctx, "old", func(context.Context, *metadata.GroupTx) error { return nil })
	if !errors.Is(err, metadata.ErrGroupNotFound) {
		t.Fatalf("the expired group: %v, want ErrGroupNotFound", err)
	}
}
