package fetch

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"silt/segment"
)

// chunkRecords decodes a ChunkResponse's data back into offset-tagged
// values, checking that it is exactly its chunks' batches.
func chunkRecords(t *testing.T, resp *ChunkResponse) map[int64]string {
	t.Helper()
	out := map[int64]string{}
	data := resp.Data
	for i, c := range resp.Chunks {
		h, err := segment.ParseBatchHeader(data)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if h.Size() != c.Size || h.BaseOffset != c.BaseOffset || h.LastOffset() != c.LastOffset {
			t.Fatalf("chunk %d: header %+v, chunk %+v", i, h, c)
		}
		b, err := segment.DecodeBatch(data[:c.Size], segment.DecodeOptions{})
		if err != nil {
			t.Fatalf("chunk %d: %v (base offset patched without breaking the CRC?)", i, err)
		}
		for _, r := range b.Records {
			out[b.BaseOffset+int64(r.OffsetDelta)] = string(r.Value)
		}
		data = data[c.Size:]
	}
	if len(data) != 0 {
		t.Fatalf("%d bytes after the last chunk", len(data))
	}
	return out
}

func TestFetchChunksServesStoredBatches(t *testing.T) {
	w := newWorld(t, 3, 10)
	f := setup(t, w, nil)
	ctx := context.Background()
	resp, err := f.FetchChunks(ctx, Request{TopicID: 1, Offset: 0, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Chunks) != 3 || resp.NextOffset != 30 || resp.HighWatermark != 30 {
		t.Fatalf("%d chunks, next %d, hwm %d", len(resp.Chunks), resp.NextOffset, resp.HighWatermark)
	}
	got := chunkRecords(t, resp)
	if len(got) != 30 || got[0] != "c0-r0" || got[29] != "c2-r9" {
		t.Fatalf("records %v", got)
	}
	// Byte for byte the stored chunks but for the base offsets.
	for i, r := range w.refs {
		stored := w.obj[r.ByteOffset : r.ByteOffset+int64(r.ByteLength)]
		served := resp.Data[i*int(r.ByteLength):][:r.ByteLength] // equal sizes in this world
		if !bytes.Equal(stored[8:], served[8:]) {
			t.Fatalf("chunk %d differs past its base offset", i)
		}
	}
	// The data is the caller's: changing it changes nothing cached.
	for i := range resp.Data {
		resp.Data[i] = 0
	}
	again, err := f.FetchChunks(ctx, Request{TopicID: 1, Offset: 0, MaxBytes: 1 << 20})
	if err != nil || len(chunkRecords(t, again)) != 30 {
		t.Fatalf("second fetch: %v", err)
	}

	// An offset inside a chunk returns that whole chunk and what follows.
	mid, err := f.FetchChunks(ctx, Request{TopicID: 1, Offset: 15, MaxBytes: 1 << 20})
	if err != nil || len(mid.Chunks) != 2 || mid.Chunks[0].BaseOffset != 10 || mid.NextOffset != 30 {
		t.Fatalf("from 15: %+v %v", mid, err)
	}
	// At the high watermark: nothing, no error; past it: out of range.
	tail, err := f.FetchChunks(ctx, Request{TopicID: 1, Offset: 30, MaxBytes: 1 << 20})
	if err != nil || len(tail.Chunks) != 0 || tail.NextOffset != 30 || tail.Data != nil {
		t.Fatalf("at the hwm: %+v %v", tail, err)
	}
	var oor *OutOfRangeError
	if _, err := f.FetchChunks(ctx, Request{TopicID: 1, Offset: 31, MaxBytes: 1}); !errors.As(err, &oor) || oor.HighWatermark != 30 {
		t.Fatalf("past the hwm: %v", err)
	}
}

// A reader behind the tail reads ranges once; the batch cache serves the
// next read of the same chunks.
func TestFetchChunksCachesRanges(t *testing.T) {
	w := newWorld(t, 4, 5)
	for i := range w.refs {
		w.refs[i].SegmentAt = time.Now().Add(-time.Hour) // not fresh: no whole-object read
	}
	f := setup(t, w, nil)
	ctx := context.Background()
	for range 2 {
		resp, err := f.FetchChunks(ctx, Request{TopicID: 1, Offset: 0, MaxBytes: 1 << 20})
		if err != nil || len(chunkRecords(t, resp)) != 20 {
			t.Fatalf("fetch: %v", err)
		}
	}
	if w.gets != 0 || w.ranges != 1 {
		t.Fatalf("%d whole reads and %d range reads, want 0 and 1", w.gets, w.ranges)
	}
	// Decoded-record fetches keep their own cache and still work.
	rec, err := f.Fetch(ctx, Request{TopicID: 1, Offset: 3, MaxRecords: 100, MaxBytes: 1 << 20})
	if err != nil || len(rec.Records) != 17 || rec.Records[0].Offset != 3 {
		t.Fatalf("record fetch: %v", err)
	}
}

// batchOffsets lists each batch's first and last offset, checking the
// header of its bytes against them (a stored flush chunk holds base
// offset 0, which the reader replaces).
func batchOffsets(t *testing.T, resp *BatchResponse) [][2]int64 {
	t.Helper()
	var out [][2]int64
	var size int64
	for i, b := range resp.Batches {
		h, err := segment.VerifyBatch(b.Bytes)
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if h.BaseOffset != 0 && h.BaseOffset != b.BaseOffset || b.LastOffset-b.BaseOffset != int64(h.LastOffsetDelta) || h.RecordCount != b.Records {
			t.Fatalf("batch %d: %+v, header %+v", i, b, h)
		}
		out = append(out, [2]int64{b.BaseOffset, b.LastOffset})
		size += int64(len(b.Bytes))
	}
	if size != resp.Size {
		t.Fatalf("Size %d, batches hold %d bytes", resp.Size, size)
	}
	return out
}

// FetchBatches serves the batch holding the offset and those after it,
// within max bytes and max records, skipping a merged row's batches that
// end before the offset; its bytes are the cached ones, not copies.
func TestFetchBatchesLimits(t *testing.T) {
	w := newWorld(t, 9, 10)
	w.mergeRows(4) // rows of 4, 4 and 1 batches
	f := setup(t, w, nil)
	ctx := context.Background()
	size := int64(w.refs[0].ByteLength / 4) // every batch is this large
	for _, tc := range []struct {
		name       string
		req        Request
		first, n   int64 // first batch's base offset, batches
		nextOffset int64
	}{
		{"all", Request{Offset: 0, MaxBytes: 1 << 20}, 0, 9, 90},
		{"mid-batch, mid-row", Request{Offset: 25, MaxBytes: 1 << 20}, 20, 7, 90},
		{"max bytes", Request{Offset: 0, MaxBytes: 3 * size}, 0, 3, 30},
		{"max bytes below one batch", Request{Offset: 13, MaxBytes: 1}, 10, 1, 20},
		{"max records", Request{Offset: 15, MaxRecords: 6, MaxBytes: 1 << 20}, 10, 2, 30},
		{"max records within the first batch", Request{Offset: 15, MaxRecords: 1, MaxBytes: 1 << 20}, 10, 1, 20},
		{"last row", Request{Offset: 85, MaxBytes: 1 << 20}, 80, 1, 90},
	} {
		tc.req.TopicID = 1
		resp, err := f.FetchBatches(ctx, tc.req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := batchOffsets(t, resp)
		if int64(len(got)) != tc.n || got[0][0] != tc.first || resp.NextOffset != tc.nextOffset || resp.HighWatermark != 90 {
			t.Errorf("%s: batches %v, next %d, hwm %d; want %d from %d, next %d", tc.name, got, resp.NextOffset, resp.HighWatermark, tc.n, tc.first, tc.nextOffset)
		}
		for i := 1; i < len(got); i++ {
			if got[i][0] != got[i-1][1]+1 {
				t.Errorf("%s: batches %v are not contiguous", tc.name, got)
			}
		}
		resp.Release()
	}
	if n := f.inflight.inUse(); n != 0 {
		t.Fatalf("%d bytes still held after every Release", n)
	}
	// The bytes are shared with the cache: a second fetch hands out the
	// same memory.
	a, _ := f.FetchBatches(ctx, Request{TopicID: 1, MaxBytes: 1 << 20})
	b, _ := f.FetchBatches(ctx, Request{TopicID: 1, MaxBytes: 1 << 20})
	if &a.Batches[0].Bytes[0] != &b.Batches[0].Bytes[0] {
		t.Error("two fetches of the same batch got two copies")
	}
	a.Release()
	b.Release()
}

// FetchBatches holds its bytes in the in-flight budget until Release:
// served smaller when less is free, refused when nothing is, and a first
// batch larger than what is free is served only if the budget has room.
func TestFetchBatchesHoldsTheBudget(t *testing.T) {
	w := newWorld(t, 4, 10)
	size := int64(w.refs[0].ByteLength)
	// No object-span cache: the batches are read by range, into memory
	// of the response's own (batches in spans hold the spans instead; see
	// TestSpannedBatchesHoldTheirSpans).
	f := setup(t, w, func(c *Config) { c.MaxInflightBytes = 2*size + size/2; c.ObjectCacheBytes = 0 })
	ctx := context.Background()
	first, err := f.FetchBatches(ctx, Request{TopicID: 1, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Batches) != 2 || f.inflight.inUse() != 2*size {
		t.Fatalf("%d batches, %d bytes held; want 2 and %d", len(first.Batches), f.inflight.inUse(), 2*size)
	}
	// Half a batch is free: the one batch asked for does not fit.
	if _, err := f.FetchBatches(ctx, Request{TopicID: 1, Offset: 20, MaxBytes: 1 << 20}); !errors.Is(err, ErrBackpressure) {
		t.Fatalf("with half a batch free: %v, want ErrBackpressure", err)
	}
	if f.inflight.inUse() != 2*size {
		t.Fatalf("a refused fetch kept %d bytes", f.inflight.inUse()-2*size)
	}
	first.Release()
	first.Release() // twice is harmless
	if n := f.inflight.inUse(); n != 0 {
		t.Fatalf("%d bytes held after Release", n)
	}
	// Kafka's FetchChunks keeps its own account: it holds nothing here.
	if _, err := f.FetchChunks(ctx, Request{TopicID: 1, MaxBytes: 1 << 20}); err != nil || f.inflight.inUse() != 0 {
		t.Fatalf("FetchChunks: %v, %d bytes held", err, f.inflight.inUse())
	}
}

// Batches that lie in a span of the object-span cache hold that span
// (counted against the cache's bound, even once evicted) until the
// response's Release, and nothing of the in-flight budget.
func TestSpannedBatchesHoldTheirSpans(t *testing.T) {
	w := newWorld(t, 4, 10) // one fresh object: a tail read reads it whole
	f := setup(t, w, nil)
	ctx := context.Background()
	resp, err := f.FetchBatches(ctx, Request{TopicID: 1, MaxBytes: 1 << 20})
	if err != nil || len(resp.Batches) != 4 {
		t.Fatalf("%v, %v", resp, err)
	}
	obj := int64(len(w.obj))
	if f.inflight.inUse() != 0 || f.spans.pinned() != obj {
		t.Fatalf("%d bytes in flight, %d of spans pinned; want 0 and the object's %d", f.inflight.inUse(), f.spans.pinned(), obj)
	}
	resp.Release()
	if f.spans.pinned() != 0 || f.spans.bytes() != obj {
		t.Fatalf("after Release: %d bytes of spans pinned, %d held; want 0 and %d (cached)", f.spans.pinned(), f.spans.bytes(), obj)
	}
	// Kafka's FetchChunks copies the batches out and lets go at once.
	if _, err := f.FetchChunks(ctx, Request{TopicID: 1, MaxBytes: 1 << 20}); err != nil || f.spans.pinned() != 0 || w.gets != 1 {
		t.Fatalf("FetchChunks: %v, %d bytes of spans pinned, %d whole reads", err, f.spans.pinned(), w.gets)
	}
}
