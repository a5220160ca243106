package metadata_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"silt/metadata"
	"silt/metadata/metadatatest"
)

var leaseCfg = metadata.LeaseConfig{AgentTTL: 10 * time.Second, LeaseTTL: 10 * time.Second}

func heartbeat(t *testing.T, s *metadata.Store, id string) {
	t.Helper()
	if err := s.Heartbeat(context.Background(), metadata.AgentInfo{ID: id, StartedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

func TestLeasesFairShareAndEpochs(t *testing.T) {
	s, ctx := setup(t)
	newTopic(t, s, "a", 7)
	newTopic(t, s, "b", 3)
	heartbeat(t, s, "x")
	heldX, err := syncLeases(ctx, s, "x", leaseCfg)
	if err != nil || len(heldX) != 10 {
		t.Fatalf("alone, x holds %d (%v), want all 10", len(heldX), err)
	}
	for _, l := range heldX {
		if l.Epoch != 1 {
			t.Fatalf("first claim epoch %d, want 1", l.Epoch)
		}
	}
	heartbeat(t, s, "y")
	// y's share is 5 but nothing is free until x releases above its share.
	if held, _ := syncLeases(ctx, s, "y", leaseCfg); len(held) != 0 {
		t.Fatalf("y claimed %d owned partitions", len(held))
	}
	if heldX, _ = syncLeases(ctx, s, "x", leaseCfg); len(heldX) != 5 {
		t.Fatalf("x kept %d, want its share 5", len(heldX))
	}
	heldY, _ := syncLeases(ctx, s, "y", leaseCfg)
	if len(heldY) != 5 {
		t.Fatalf("y holds %d, want 5", len(heldY))
	}
	seen := map[[2]int64]bool{}
	for _, l := range append(heldX, heldY...) {
		k := [2]int64{l.TopicID, int64(l.Partition)}
		if seen[k] {
			t.Fatalf("partition %v held twice", k)
		}
		seen[k] = true
	}
	for _, l := range heldY {
		if l.Epoch != 2 {
			t.Fatalf("moved partition has epoch %d, want 2", l.Epoch)
		}
	}
	owners, _ := s.Owners(ctx, "", -1, 0)
	if len(owners) != 10 {
		t.Fatalf("%d owned partitions, want 10", len(owners))
	}
	// A clean release hands everything to the survivor.
	if err := s.ReleaseLeases(ctx, "y"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveAgent(ctx, "y"); err != nil {
		t.Fatal(err)
	}
	if heldX, _ = syncLeases(ctx, s, "x", leaseCfg); len(heldX) != 10 {
		t.Fatalf("after y left, x holds %d", len(heldX))
	}
}

// A stale owner's writes are rejected: after its lease expired and another
// agent claimed the partition, its fenced writes fail with ErrFenced.
func TestStaleOwnerIsFenced(t *testing.T) {
	s, ctx := setup(t)
	top := newTopic(t, s, "t", 1)
	if _, err := s.CommitFlush(ctx, metadatatest.NewFlush(t, s, "k1", 1, chunk(top.ID, 0, 5))); err != nil {
		t.Fatal(err)
	}
	short := metadata.LeaseConfig{AgentTTL: time.Hour, LeaseTTL: 50 * time.Millisecond}
	heartbeat(t, s, "old")
	old, err := syncLeases(ctx, s, "old", short)
	if err != nil || len(old) != 1 {
		t.Fatalf("old: %v %v", old, err)
	}
	// The old owner pauses past its lease; a new owner claims.
	waitFor(t, func() bool {
		heartbeat(t, s, "new")
		held, err := syncLeases(ctx, s, "new", leaseCfg)
		return err == nil && len(held) == 1
	})
	if _, err := s.AdvanceLogStart(ctx, "old", old[0], 3); !errors.Is(err, metadata.ErrFenced) {
		t.Fatalf("stale owner's retention: %v, want ErrFenced", err)
	}
	refs, _ := s.ListBatches(ctx, top.ID, 0, 0, 10)
	m := metadatatest.NewFlush(t, s, "m", 1)
	if err := s.SwapBatches(ctx, "old", old[0], refs, m.SegmentID, 1, nil); !errors.Is(err, metadata.ErrFenced) {
		t.Fatalf("stale owner's swap: %v, want ErrFenced", err)
	}
	// The same write with the new owner's lease goes through.
	held, _ := syncLeases(ctx, s, "new", leaseCfg)
	if held[0].Epoch != old[0].Epoch+1 {
		t.Fatalf("epoch %d after a claim from %d", held[0].Epoch, old[0].Epoch)
	}
	freed, err := s.AdvanceLogStart(ctx, "new", held[0], 5)
	if err != nil || freed != 500 {
		t.Fatalf("new owner's retention: freed %d, %v", freed, err)
	}
	st, _ := s.PartitionOffsets(ctx, top.ID, 0)
	if st.LogStartOffset != 5 || st.HighWatermark != 5 {
		t.Fatalf("offsets %+v", st)
	}
}

func TestSwapBatchesDetectsConcurrentChange(t *testing.T) {
	s, ctx := setup(t)
	top := newTopic(t, s, "t", 1)
	for _, k := range []string{"k1", "k2"} {
		if _, err := s.CommitFlush(ctx, metadatatest.NewFlush(t, s, k, 1, chunk(top.ID, 0, 2))); err != nil {
			t.Fatal(err)
		}
	}
	heartbeat(t, s, "me")
	held, _ := syncLeases(ctx, s, "me", leaseCfg)
	refs, _ := s.ListBatches(ctx, top.ID, 0, 0, 10)
	// Retention removes the first chunk before the swap lands.
	if _, err := s.AdvanceLogStart(ctx, "me", held[0], 2); err != nil {
		t.Fatal(err)
	}
	news := []metadata.NewChunk{{BaseOffset: 0, LastOffset: 1, Records: 2, ByteLength: 200}, {BaseOffset: 2, LastOffset: 3, Records: 2, ByteOffset: 200, ByteLength: 200}}
	m := metadatatest.NewFlush(t, s, "m", 400)
	if err := s.SwapBatches(ctx, "me", held[0], refs, m.SegmentID, 400, news); !errors.Is(err, metadata.ErrFenced) {
		t.Fatalf("swap over a changed index: %v", err)
	}
	// Retention left k1 without index rows: it is unreferenced, and
	// claimed for deletion after the grace period; the refused swap's
	// object is still pending.
	doomed, err := s.ClaimDoomed(ctx, 0, time.Minute, 100)
	if err != nil || len(doomed) != 1 || doomed[0].Key != "k1" {
		t.Fatalf("claimed %v (%v), want k1", doomed, err)
	}
	if err := s.AbandonSegment(ctx, m.SegmentID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		d, err := s.ClaimDoomed(ctx, 0, time.Minute, 100)
		return err == nil && len(d) == 1 && d[0].Key == "m"
	})
	if err := s.ForgetSegments(ctx, []int64{doomed[0].ID}); err != nil {
		t.Fatal(err)
	}
	// Adoption gives a row to keys that have none, only.
	n, err := s.AdoptOrphans(ctx, []string{"k1", "k2", "zz"}, time.Hour)
	if err != nil || n != 2 {
		t.Fatalf("adopted %d (%v), want 2: k1 (forgotten) and zz", n, err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatal("condition not met within 30s")
		case <-tick.C:
		}
	}
}

// A third agent gets partitions even when the others hold exactly the
// ceil share (4 partitions: 2 + 2, then a newcomer).
func TestLeasesNewcomerIsNotStarved(t *testing.T) {
	s, ctx := setup(t)
	newTopic(t, s, "t", 4)
	for _, id := range []string{"a", "b"} {
		heartbeat(t, s, id)
	}
	for round := 0; round < 3; round++ {
		for _, id := range []string{"a", "b"} {
			if _, err := syncLeases(ctx, s, id, leaseCfg); err != nil {
				t.Fatal(err)
			}
		}
	}
	heartbeat(t, s, "c")
	held := map[string]int{}
	for round := 0; round < 4; round++ {
		for _, id := range []string{"c", "a", "b"} {
			l, err := syncLeases(ctx, s, id, leaseCfg)
			if err != nil {
				t.Fatal(err)
			}
			held[id] = len(l)
		}
	}
	if held["a"]+held["b"]+held["c"] != 4 || held["c"] == 0 || held["a"] == 0 || held["b"] == 0 {
		t.Fatalf("after rounds: %v", held)
	}
}

// Producer sequences wrap past the largest int32 to 0, as in Kafka.
func TestSequenceWraps(t *testing.T) {
	s, ctx := setup(t)
	top := newTopic(t, s, "t", 1)
	pid, _ := s.NewProducerID(ctx)
	commit := func(key string, seq, n int32) metadata.ChunkResult {
		t.Helper()
		c := chunk(top.ID, 0, n)
		c.ProducerID, c.BaseSequence = pid, seq
		res, err := s.CommitFlush(ctx, metadatatest.NewFlush(t, s, key, 1, c))
		if err != nil {
			t.Fatal(err)
		}
		return res[0]
	}
	if r := commit("a", 0, 1); r.Err != nil {
		t.Fatal(r.Err)
	}
	// Jump close to the top by rewriting the state, as a long-lived producer would reach it.
	if _, err := s.Pool().Exec(ctx, `UPDATE producer_state SET last_sequence = 2147483645`); err != nil {
		t.Fatal(err)
	}
	if r := commit("b", 2147483646, 3); r.Err != nil { // 2147483646, 2147483647, 0
		t.Fatalf("across the wrap: %v", r.Err)
	}
	if r := commit("c", 1, 1); r.Err != nil {
		t.Fatalf("after the wrap: %v", r.Err)
	}
	if r := commit("d", 2147483646, 3); !r.Duplicate {
		t.Fatalf("retry across the wrap not seen as a duplicate: %+v", r)
	}
}

// syncLeases runs a lease round of agent id (incarnation 1) asking for the
// full list, and returns the leases held.
func syncLeases(ctx context.Context, s *metadata.Store, id string, cfg metadata.LeaseConfig) ([]metadata.Lease, error) {
	r, err := s.SyncLeases(ctx, id, 1, cfg, true)
	return r.All, err
}

// A renewal writes one row however many partitions the agent holds, and
// a restarted agent (a new incarnation) takes its partitions back under
// new epochs.
func TestLeaseRenewalCostAndIncarnations(t *testing.T) {
	s, ctx := setup(t)
	newTopic(t, s, "big", 5000)
	heartbeat(t, s, "x")
	r, err := s.SyncLeases(ctx, "x", 1, leaseCfg, false)
	if err != nil || len(r.Claimed) != 5000 || r.Held != 5000 || !r.Full || len(r.All) != 5000 {
		t.Fatalf("first round: %d claimed, %d held, full %v (%v)", len(r.Claimed), r.Held, r.Full, err)
	}
	xmins := func() map[string]bool {
		rows, err := s.Pool().Query(ctx, `SELECT xmin::text FROM leases`)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for rows.Next() {
			var x string
			if err := rows.Scan(&x); err != nil {
				t.Fatal(err)
			}
			out[x] = true
		}
		return out
	}
	before := xmins()
	r, err = s.SyncLeases(ctx, "x", 1, leaseCfg, false)
	if err != nil || len(r.Claimed)+len(r.Released) != 0 || r.Held != 5000 || r.Full {
		t.Fatalf("renewal: %d claimed, %d released, %d held, full %v (%v)", len(r.Claimed), len(r.Released), r.Held, r.Full, err)
	}
	after := xmins()
	for x := range after {
		if !before[x] {
			t.Fatal("a renewal rewrote lease rows")
		}
	}
	// The agent restarts: its old leases are given up and claimed anew.
	r, err = s.SyncLeases(ctx, "x", 2, leaseCfg, false)
	if err != nil || len(r.Claimed) != 5000 || !r.Full || len(r.All) != 5000 || r.All[0].Epoch != 2 {
		t.Fatalf("after a restart: %d claimed, full %v, %+v (%v)", len(r.Claimed), r.Full, r.All[:1], err)
	}
	owners, err := s.Owners(ctx, "", -1, 0)
	if err != nil || len(owners) != 5000 {
		t.Fatalf("owners %d (%v)", len(owners), err)
	}
}
