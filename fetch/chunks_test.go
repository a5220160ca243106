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
