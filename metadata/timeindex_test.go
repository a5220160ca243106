package metadata_test

import (
	"context"
	"testing"

	"silt/metadata"
	"silt/metadata/metadatatest"
)

// tsChunk is a one-record chunk of partition part with max timestamp ts.
func tsChunk(topic int64, part int32, ts int64) metadata.Chunk {
	return metadata.Chunk{TopicID: topic, Partition: part, ByteLength: 100, Records: 1, MaxTimestamp: ts}
}

// checkTimeIndex compares FirstBatchAtOrAfter with a walk of the
// partition's rows at every timestamp the rows hold, one either side of
// each, and beyond them all; and checks the running maxima's invariants:
// at least the row's own max timestamp, non-decreasing in offset order.
func checkTimeIndex(t *testing.T, s *metadata.Store, topic int64, part int32, stage string) {
	t.Helper()
	ctx := context.Background()
	rows, err := s.ListBatches(ctx, topic, part, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	probes := []int64{-1, 0, 1 << 40}
	for _, r := range rows {
		probes = append(probes, r.MaxTimestamp-1, r.MaxTimestamp, r.MaxTimestamp+1)
	}
	for _, ts := range probes {
		var want *metadata.BatchRef
		for i := range rows {
			if rows[i].MaxTimestamp >= ts {
				want = &rows[i]
				break
			}
		}
		got, found, err := s.FirstBatchAtOrAfter(ctx, topic, part, ts)
		if err != nil {
			t.Fatalf("%s: lookup %d: %v", stage, ts, err)
		}
		switch {
		case want == nil && found:
			t.Errorf("%s: lookup %d found offsets %d-%d (max timestamp %d), want none", stage, ts, got.BaseOffset, got.LastOffset, got.MaxTimestamp)
		case want != nil && !found:
			t.Errorf("%s: lookup %d found none, want offsets %d-%d", stage, ts, want.BaseOffset, want.LastOffset)
		case want != nil && (got.BaseOffset != want.BaseOffset || got.LastOffset != want.LastOffset || got.MaxTimestamp != want.MaxTimestamp):
			t.Errorf("%s: lookup %d found offsets %d-%d (max timestamp %d), want %d-%d (%d)", stage, ts,
				got.BaseOffset, got.LastOffset, got.MaxTimestamp, want.BaseOffset, want.LastOffset, want.MaxTimestamp)
		}
	}
	var bad int
	err = s.Pool().QueryRow(ctx, `
		SELECT count(*) FROM (
			SELECT max_timestamp, running_max_ts, lag(running_max_ts) OVER (ORDER BY last_offset) AS prev
			FROM batches WHERE topic_id = $1 AND partition = $2) x
		WHERE running_max_ts < max_timestamp OR running_max_ts < prev`, topic, part).Scan(&bad)
	if err != nil {
		t.Fatal(err)
	}
	if bad > 0 {
		t.Errorf("%s: %d rows whose running maximum is below their own max timestamp or the previous row's", stage, bad)
	}
}

// runningMaxima returns the partition's running maxima in offset order.
func runningMaxima(t *testing.T, s *metadata.Store, topic int64, part int32) []int64 {
	t.Helper()
	var out []int64
	err := s.Pool().QueryRow(context.Background(), `
		SELECT coalesce(array_agg(running_max_ts ORDER BY last_offset), '{}') FROM batches WHERE topic_id = $1 AND partition = $2`,
		topic, part).Scan(&out)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// The lookup by timestamp over chunks whose timestamps go up and down in
// offset order, through flushes of several chunks of one partition, a
// merge, a compaction that removes the partition's greatest timestamp so
// far, retention, and flushes after them.
func TestFirstBatchAtOrAfterNonMonotonic(t *testing.T) {
	s, ctx := setup(t)
	top := newTopic(t, s, "t", 2)
	commit := func(key string, chunks ...metadata.Chunk) {
		t.Helper()
		res, err := s.CommitFlush(ctx, metadatatest.NewFlush(t, s, key, 1000, chunks...))
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Err != nil {
				t.Fatalf("%s chunk %d: %v", key, i, r.Err)
			}
		}
	}
	// Partition 0, offsets 0..8: 500 100 300 | 200 800 50 | 400 900 150;
	// partition 1's chunks in the same flushes have other timestamps.
	commit("f1", tsChunk(top.ID, 0, 500), tsChunk(top.ID, 1, 9000), tsChunk(top.ID, 0, 100), tsChunk(top.ID, 0, 300))
	commit("f2", tsChunk(top.ID, 0, 200), tsChunk(top.ID, 0, 800), tsChunk(top.ID, 1, 1), tsChunk(top.ID, 0, 50))
	commit("f3", tsChunk(top.ID, 0, 400), tsChunk(top.ID, 0, 900), tsChunk(top.ID, 0, 150))
	if got, want := runningMaxima(t, s, top.ID, 0), []int64{500, 500, 500, 500, 800, 800, 800, 900, 900}; !equalInts(got, want) {
		t.Fatalf("running maxima after the flushes %v, want %v", got, want)
	}
	if got, want := runningMaxima(t, s, top.ID, 1), []int64{9000, 9000}; !equalInts(got, want) {
		t.Fatalf("partition 1's running maxima %v, want %v", got, want)
	}
	checkTimeIndex(t, s, top.ID, 0, "flushes")
	checkTimeIndex(t, s, top.ID, 1, "flushes")

	heartbeat(t, s, "me")
	held, err := syncLeases(ctx, s, "me", leaseCfg)
	if err != nil {
		t.Fatal(err)
	}
	var lease metadata.Lease
	for _, l := range held {
		if l.TopicID == top.ID && l.Partition == 0 {
			lease = l
		}
	}
	if lease.TopicID == 0 {
		t.Fatalf("no lease of partition 0 in %v", held)
	}
	rows, err := s.ListBatches(ctx, top.ID, 0, 0, 100)
	if err != nil || len(rows) != 9 {
		t.Fatalf("rows %v, %v", rows, err)
	}

	// A merge of offsets 1..3 (100 300 200) into one row of max 300: its
	// running maximum is still 500, from offset 0 before it.
	m := metadatatest.NewFlush(t, s, "m1", 300)
	if err := s.SwapBatches(ctx, "me", lease, rows[1:4], m.SegmentID, 300, []metadata.NewChunk{
		{BaseOffset: 1, LastOffset: 3, Records: 3, MaxTimestamp: 300, ByteLength: 300, Batches: 3},
	}); err != nil {
		t.Fatal(err)
	}
	if got, want := runningMaxima(t, s, top.ID, 0), []int64{500, 500, 800, 800, 800, 900, 900}; !equalInts(got, want) {
		t.Fatalf("running maxima after the merge %v, want %v", got, want)
	}
	checkTimeIndex(t, s, top.ID, 0, "merge")

	// Compaction rewrites offset 7 (900, the greatest so far) to 600: its
	// running maximum falls to 800, offset 8's stays 900 (higher than
	// what is left gives), and so does the next flush's (880).
	rows, _ = s.ListBatches(ctx, top.ID, 0, 7, 1)
	c := metadatatest.NewFlush(t, s, "c1", 100)
	if err := s.SwapBatches(ctx, "me", lease, rows, c.SegmentID, 100, []metadata.NewChunk{
		{BaseOffset: 7, LastOffset: 7, Records: 1, MaxTimestamp: 600, ByteLength: 100},
	}); err != nil {
		t.Fatal(err)
	}
	commit("f4", tsChunk(top.ID, 0, 880))
	if got, want := runningMaxima(t, s, top.ID, 0), []int64{500, 500, 800, 800, 800, 800, 900, 900}; !equalInts(got, want) {
		t.Fatalf("running maxima after the compaction %v, want %v", got, want)
	}
	// At 850 the index points at offset 8 (150), the answer is offset 9.
	if ref, found, err := s.FirstBatchAtOrAfter(ctx, top.ID, 0, 850); err != nil || !found || ref.BaseOffset != 9 {
		t.Fatalf("lookup 850 after the compaction: %+v %v %v, want offset 9", ref, found, err)
	}
	checkTimeIndex(t, s, top.ID, 0, "compaction")

	// Retention drops offsets 0..3, the rows left keep their values.
	if _, err := s.AdvanceLogStart(ctx, "me", lease, 4); err != nil {
		t.Fatal(err)
	}
	checkTimeIndex(t, s, top.ID, 0, "retention")
	commit("f5", tsChunk(top.ID, 0, 700), tsChunk(top.ID, 0, 1000), tsChunk(top.ID, 0, 10))
	if got, want := runningMaxima(t, s, top.ID, 0), []int64{800, 800, 800, 800, 900, 900, 900, 1000, 1000}; !equalInts(got, want) {
		t.Fatalf("running maxima after retention and a flush %v, want %v", got, want)
	}
	checkTimeIndex(t, s, top.ID, 0, "retention and flush")

	// A rewrite that carried a greater timestamp than those it replaced
	// (none does) raises the rows after it and the partition's greatest.
	rows, _ = s.ListBatches(ctx, top.ID, 0, 6, 1)
	r := metadatatest.NewFlush(t, s, "r1", 100)
	if err := s.SwapBatches(ctx, "me", lease, rows, r.SegmentID, 100, []metadata.NewChunk{
		{BaseOffset: 6, LastOffset: 6, Records: 1, MaxTimestamp: 1100, ByteLength: 100},
	}); err != nil {
		t.Fatal(err)
	}
	commit("f6", tsChunk(top.ID, 0, 5))
	if got, want := runningMaxima(t, s, top.ID, 0), []int64{800, 800, 1100, 1100, 1100, 1100, 1100, 1100, 1100, 1100}; !equalInts(got, want) {
		t.Fatalf("running maxima after a rewrite raised a timestamp %v, want %v", got, want)
	}
	checkTimeIndex(t, s, top.ID, 0, "raising rewrite")

	// Retention of everything: nothing is that recent any more.
	if _, err := s.AdvanceLogStart(ctx, "me", lease, 14); err != nil {
		t.Fatal(err)
	}
	if _, found, err := s.FirstBatchAtOrAfter(ctx, top.ID, 0, 0); err != nil || found {
		t.Fatalf("lookup on an empty index: found %v, %v", found, err)
	}
}
