package metadata_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"silt/metadata"
	"silt/metadata/metadatatest"
)

func newTopic(t *testing.T, s *metadata.Store, name string, parts int32) metadata.Topic {
	t.Helper()
	top, err := s.CreateTopic(context.Background(), name, parts, metadata.DefaultTopicConfig())
	if err != nil {
		t.Fatal(err)
	}
	return top
}

func chunk(topic int64, part int32, n int32) metadata.Chunk {
	return metadata.Chunk{TopicID: topic, Partition: part, ByteLength: 100 * n, Records: n, LastOffsetDelta: n - 1, MaxTimestamp: 1}
}

func TestCommitFlushAssignsContiguousOffsets(t *testing.T) {
	s, ctx := setup(t)
	top := newTopic(t, s, "t", 2)
	res, err := s.CommitFlush(ctx, metadatatest.NewFlush(t, s, "seg/1", 1000,
		chunk(top.ID, 0, 3), chunk(top.ID, 1, 2), chunk(top.ID, 0, 4)))
	if err != nil {
		t.Fatal(err)
	}
	want := []int64{0, 0, 3}
	for i, r := range res {
		if r.Err != nil || r.BaseOffset != want[i] {
			t.Fatalf("chunk %d: %+v, want base %d", i, r, want[i])
		}
	}
	parts, _ := s.Partitions(ctx, top.ID, 0, 0)
	if parts[0].HighWatermark != 7 || parts[1].HighWatermark != 2 || parts[0].TotalBytes != 700 {
		t.Fatalf("partitions after commit: %+v", parts)
	}
	// A chunk for a partition that does not exist fails alone.
	res, err = s.CommitFlush(ctx, metadatatest.NewFlush(t, s, "seg/2", 10, chunk(top.ID, 9, 1), chunk(top.ID, 1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, metadata.ErrPartitionNotFound) || res[1].Err != nil || res[1].BaseOffset != 2 {
		t.Fatalf("mixed flush: %+v", res)
	}
	// A segment key is registered once; a second commit of one segment
	// writes nothing.
	if _, err := s.RegisterSegment(ctx, "seg/2", 10, metadata.KindFlush, time.Minute); !errors.Is(err, metadata.ErrInvalidArgument) {
		t.Fatalf("registering a key twice: %v", err)
	}
	f := metadatatest.NewFlush(t, s, "seg/3", 10, chunk(top.ID, 0, 1))
	if _, err := s.CommitFlush(ctx, f); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CommitFlush(ctx, f); !errors.Is(err, metadata.ErrSegmentExpired) {
		t.Fatalf("second commit of one segment: %v", err)
	}
	parts, _ = s.Partitions(ctx, top.ID, 0, 0)
	if parts[0].HighWatermark != 8 {
		t.Fatalf("failed commit moved the watermark: %+v", parts[0])
	}
}

func TestCommitFlushIdempotence(t *testing.T) {
	s, ctx := setup(t)
	top := newTopic(t, s, "t", 1)
	pid, err := s.NewProducerID(ctx)
	if err != nil || pid <= 0 {
		t.Fatalf("producer id %d, %v", pid, err)
	}
	idem := func(seq, n int32) metadata.Chunk {
		c := chunk(top.ID, 0, n)
		c.ProducerID, c.BaseSequence = pid, seq
		return c
	}
	commit := func(key string, cs ...metadata.Chunk) []metadata.ChunkResult {
		t.Helper()
		res, err := s.CommitFlush(ctx, metadatatest.NewFlush(t, s, key, 1, cs...))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if r := commit("a", idem(1, 2)); !errors.Is(r[0].Err, metadata.ErrOutOfOrderSequence) {
		t.Fatalf("first sequence 1: %+v", r)
	}
	r := commit("b", idem(0, 2), chunk(top.ID, 0, 5), idem(2, 3))
	if r[0].BaseOffset != 0 || r[1].BaseOffset != 2 || r[2].BaseOffset != 7 {
		t.Fatalf("accepted: %+v", r)
	}
	// Retries of both recent batches return their original offsets.
	r = commit("c", idem(0, 2), idem(2, 3))
	if !r[0].Duplicate || r[0].BaseOffset != 0 || !r[1].Duplicate || r[1].BaseOffset != 7 {
		t.Fatalf("retries: %+v", r)
	}
	// A gap is rejected; the next in sequence is accepted.
	if r := commit("d", idem(6, 1)); !errors.Is(r[0].Err, metadata.ErrOutOfOrderSequence) {
		t.Fatalf("gap: %+v", r)
	}
	if r := commit("e", idem(5, 1)); r[0].Err != nil || r[0].Duplicate || r[0].BaseOffset != 10 {
		t.Fatalf("next: %+v", r)
	}
	parts, _ := s.Partitions(ctx, top.ID, 0, 0)
	if parts[0].HighWatermark != 11 {
		t.Fatalf("high watermark %d, want 11", parts[0].HighWatermark)
	}
	// Only five recent batches are remembered.
	for i := int32(0); i < 5; i++ {
		commit(fmt.Sprint("f", i), idem(6+i, 1))
	}
	if r := commit("g", idem(0, 2)); r[0].Duplicate || !errors.Is(r[0].Err, metadata.ErrOutOfOrderSequence) {
		t.Fatalf("old retry beyond the window: %+v", r)
	}
}

// Concurrent flushes over overlapping partitions neither deadlock nor
// overlap: every partition's batches tile its offsets without gaps.
func TestCommitFlushConcurrent(t *testing.T) {
	s, ctx := setup(t)
	top := newTopic(t, s, "t", 8)
	const workers, flushes = 8, 25
	var mu sync.Mutex
	got := map[int32][][2]int64{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for f := 0; f < flushes; f++ {
				var cs []metadata.Chunk
				for _, p := range rng.Perm(8)[:1+rng.IntN(8)] {
					cs = append(cs, chunk(top.ID, int32(p), int32(1+rng.IntN(5))))
				}
				id, err := s.RegisterSegment(ctx, fmt.Sprintf("w%d/f%d", w, f), 1, metadata.KindFlush, time.Minute)
				if err != nil {
					errs <- err
					return
				}
				res, err := s.CommitFlush(ctx, metadata.Flush{SegmentID: id, SegmentSize: 1, Chunks: cs})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for i, r := range res {
					got[cs[i].Partition] = append(got[cs[i].Partition], [2]int64{r.BaseOffset, r.BaseOffset + int64(cs[i].Records)})
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	parts, _ := s.Partitions(ctx, top.ID, 0, 0)
	for p, ranges := range got {
		sort.Slice(ranges, func(i, j int) bool { return ranges[i][0] < ranges[j][0] })
		next := int64(0)
		for _, r := range ranges {
			if r[0] != next {
				t.Fatalf("partition %d: range %v after %d", p, r, next)
			}
			next = r[1]
		}
		if parts[p].HighWatermark != next {
			t.Fatalf("partition %d: watermark %d, ranges end at %d", p, parts[p].HighWatermark, next)
		}
	}
}

// A lookup reads the index a page at a time and returns what one query of
// limit rows returned: the rows from the one holding the offset, while the
// bytes before a row are under max bytes (the first row always), at most
// limit of them, none past the high watermark.
func TestLookupBatchesPages(t *testing.T) {
	s, ctx := setup(t)
	top := newTopic(t, s, "pages", 1)
	const n = 300 // chunks of 2 records, 200 bytes each
	chunks := make([]metadata.Chunk, n)
	for i := range chunks {
		chunks[i] = chunk(top.ID, 0, 2)
	}
	if _, err := s.CommitFlush(ctx, metadatatest.NewFlush(t, s, "seg/pages", n*200, chunks...)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		offset, maxBytes int64
		limit            int
		want             int   // rows
		first            int64 // base offset of the first row
	}{
		{0, 1 << 30, 1000, n, 0},     // every row, over pages of 16, 64, 256
		{7, 1 << 30, 1000, n - 3, 6}, // from the row holding offset 7
		{11, 1 << 30, 100, 100, 10},  // the limit, across pages
		{0, 5000, 1000, 25, 0},       // bytes before the 25th row: 4800 < 5000
		{0, 5001, 1000, 26, 0},       // 5000 < 5001: one more
		{100, 1, 1000, 1, 100},       // the first row whatever the bytes
		{598, 1 << 30, 1000, 1, 598}, // the last row
		{600, 1 << 30, 1000, 0, 0},   // at the high watermark: none
		{40, 3200, 16, 16, 40},       // exactly one full page
		{40, 3201, 17, 17, 40},       // one row into the second page
	} {
		st, refs, err := s.LookupBatches(ctx, top.ID, 0, tc.offset, tc.maxBytes, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if st.HighWatermark != 2*n || len(refs) != tc.want {
			t.Fatalf("lookup %+v: high watermark %d, %d rows", tc, st.HighWatermark, len(refs))
		}
		for i, r := range refs {
			if r.BaseOffset != tc.first+int64(2*i) || r.LastOffset != r.BaseOffset+1 {
				t.Fatalf("lookup %+v: row %d is %d-%d", tc, i, r.BaseOffset, r.LastOffset)
			}
		}
	}
}

// A commit announces every partition it moved, with its new high
// watermark, after it committed, in payloads of at most 150 partitions
// (under NOTIFY's 8,000 bytes).
func TestCommitFlushNotifiesEveryPartition(t *testing.T) {
	s, ctx := setup(t)
	const parts = 400
	top := newTopic(t, s, "wide", parts)
	conn, err := s.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+metadata.NotifyChannel); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = conn.Exec(context.Background(), "UNLISTEN *") }()
	chunks := make([]metadata.Chunk, 0, parts+1)
	for p := int32(0); p < parts; p++ {
		chunks = append(chunks, chunk(top.ID, p, p%3+1))
	}
	chunks = append(chunks, chunk(top.ID, 7, 2)) // partition 7 twice: 2 + 2 records
	if _, err := s.CommitFlush(ctx, metadatatest.NewFlush(t, s, "seg/wide", 1000, chunks...)); err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	for p := int32(0); p < parts; p++ {
		want[p] = int64(p%3 + 1)
	}
	want[7] += 2
	got := map[int32]int64{}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for len(got) < parts {
		n, err := conn.Conn().WaitForNotification(wctx)
		if err != nil {
			t.Fatalf("%d of %d partitions announced: %v", len(got), parts, err)
		}
		if len(n.Payload) >= 8000 {
			t.Errorf("payload of %d bytes", len(n.Payload))
		}
		entries := strings.Fields(n.Payload)
		if len(entries) > 150 {
			t.Errorf("payload of %d partitions, want at most 150", len(entries))
		}
		for _, e := range entries {
			var tid, next int64
			var p int32
			if _, err := fmt.Sscanf(e, "%d:%d:%d", &tid, &p, &next); err != nil {
				t.Fatalf("entry %q: %v", e, err)
			}
			if tid != top.ID {
				continue // another test's commit
			}
			if _, dup := got[p]; dup {
				t.Errorf("partition %d announced twice", p)
			}
			got[p] = next
		}
	}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("partition %d announced at %d, want %d", p, got[p], w)
		}
	}
}
