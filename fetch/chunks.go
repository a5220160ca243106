package fetch

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sync/errgroup"

	"silt/metadata"
	"silt/objectstore"
	"silt/segment"
)

// Chunk describes one stored batch of a ChunkResponse.
type Chunk struct {
	BaseOffset   int64
	LastOffset   int64
	Records      int32
	MaxTimestamp int64
	Size         int // its bytes in ChunkResponse.Data
}

// ChunkResponse is the outcome of FetchChunks.
type ChunkResponse struct {
	// Data is the chunks' RecordBatches one after the other, exactly as
	// they are stored but for each batch's base offset, which holds its
	// real offset. It is the caller's own copy.
	Data           []byte
	Chunks         []Chunk
	NextOffset     int64 // past the last chunk; req.Offset when there is none
	HighWatermark  int64
	LogStartOffset int64
}

// FetchChunks reads stored batches from req.Offset without decoding them:
// the chunk holding req.Offset (which may start before it: readers skip
// the records they did not ask for, as Kafka clients do) and those after
// it, up to req.MaxBytes (the first chunk is always returned whole, however
// large) and MaxChunksPerFetch. It shares the index lookup, the read
// planning (whole fresh objects for tails, coalesced ranges otherwise) and
// the object cache with Fetch; chunks read by range are kept in their own
// cache. MaxRecords is ignored.
//
// An offset below the log start, or past the high watermark, fails with
// an OutOfRangeError; at the high watermark, FetchChunks waits up to
// req.Wait for a commit, as Fetch does.
func (f *Fetcher) FetchChunks(ctx context.Context, req Request) (*ChunkResponse, error) {
	if req.MaxBytes < 1 {
		req.MaxBytes = 1
	}
	var resp *ChunkResponse
	err := f.poll(ctx, req, func() (bool, error) {
		r, err := f.chunksOnce(ctx, req)
		if err != nil {
			return false, err
		}
		resp = r
		return len(r.Chunks) > 0, nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func (f *Fetcher) chunksOnce(ctx context.Context, req Request) (*ChunkResponse, error) {
	st, refs, err := f.index.LookupBatches(ctx, req.TopicID, req.Partition, req.Offset, req.MaxBytes, f.cfg.MaxChunksPerFetch)
	if err != nil {
		return nil, err
	}
	if req.Offset < st.LogStartOffset || req.Offset > st.HighWatermark {
		return nil, &OutOfRangeError{Offset: req.Offset, LogStartOffset: st.LogStartOffset, HighWatermark: st.HighWatermark}
	}
	resp := &ChunkResponse{NextOffset: req.Offset, HighWatermark: st.HighWatermark, LogStartOffset: st.LogStartOffset}
	if len(refs) == 0 {
		return resp, nil
	}
	head := refs[len(refs)-1].LastOffset+1 >= st.HighWatermark
	raws, err := f.rawChunks(ctx, refs, head)
	if errors.Is(err, objectstore.ErrNotExist) {
		if now, lerr := f.index.PartitionOffsets(ctx, req.TopicID, req.Partition); lerr == nil && req.Offset < now.LogStartOffset {
			return nil, &OutOfRangeError{Offset: req.Offset, LogStartOffset: now.LogStartOffset, HighWatermark: now.HighWatermark}
		}
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	total := 0
	for _, r := range raws {
		total += len(r)
	}
	resp.Data = make([]byte, 0, total)
	resp.Chunks = make([]Chunk, 0, len(refs))
	var records int64
	for i, r := range refs {
		if r.Batches > 1 {
			// A merged run: batches back to back, each with its own base
			// offset; one chunk each.
			for rest := raws[i]; len(rest) > 0; {
				h, b, next, err := segment.NextBatch(rest)
				if err != nil {
					return nil, fmt.Errorf("read %s@%d: %w", r.SegmentKey, r.ByteOffset, err)
				}
				resp.Data = append(resp.Data, b...)
				resp.Chunks = append(resp.Chunks, Chunk{BaseOffset: h.BaseOffset, LastOffset: h.LastOffset(), Records: h.RecordCount, MaxTimestamp: h.MaxTimestamp, Size: len(b)})
				rest = next
			}
		} else {
			start := len(resp.Data)
			resp.Data = append(resp.Data, raws[i]...)
			segment.SetBaseOffset(resp.Data[start:], r.BaseOffset)
			resp.Chunks = append(resp.Chunks, Chunk{BaseOffset: r.BaseOffset, LastOffset: r.LastOffset, Records: r.Records, MaxTimestamp: r.MaxTimestamp, Size: len(raws[i])})
		}
		resp.NextOffset = r.LastOffset + 1
		records += int64(r.Records)
	}
	f.metrics.records.Add(float64(records))
	f.metrics.batchBytes.Add(float64(len(resp.Data)))
	return resp, nil
}

// rawChunks returns the stored bytes of refs, in order, from the batch
// cache, the object cache or the object store. The slices are shared:
// callers copy before changing them.
func (f *Fetcher) rawChunks(ctx context.Context, refs []metadata.BatchRef, head bool) ([][]byte, error) {
	out := make([][]byte, len(refs))
	var missing []int
	for i, r := range refs {
		if b, ok := f.raw.get(chunkKey{r.SegmentKey, r.ByteOffset}); ok {
			f.metrics.batchHits.Inc()
			out[i] = b
			continue
		}
		f.metrics.batchMisses.Inc()
		missing = append(missing, i)
	}
	if len(missing) == 0 {
		return out, nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(f.cfg.ReadConcurrency)
	for _, run := range f.plan(refs, missing, head) {
		g.Go(func() error { return f.readRaw(gctx, refs, run, out) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// readRaw performs one plan and slices its chunks into out, checking each
// chunk's header against its index row. Chunks of a range read go to the
// batch cache (whole objects are in the object cache already); they are
// copied out of the read first when it also spans other partitions' data.
func (f *Fetcher) readRaw(ctx context.Context, refs []metadata.BatchRef, p *readPlan, out [][]byte) error {
	data, base, err := f.readData(ctx, p)
	if err != nil {
		return err
	}
	var used int64
	for _, i := range p.idx {
		used += int64(refs[i].ByteLength)
	}
	shared := int64(len(data)) > used
	for _, i := range p.idx {
		r := refs[i]
		chunk, err := chunkBytes(p.key, r, data, base)
		if err != nil {
			return err
		}
		h, err := segment.ParseBatchHeader(chunk)
		if err != nil {
			return fmt.Errorf("read %s@%d: %w", p.key, r.ByteOffset, err)
		}
		if r.Batches <= 1 && (h.Size() != len(chunk) || int64(h.LastOffsetDelta) != r.LastOffset-r.BaseOffset) ||
			r.Batches > 1 && h.BaseOffset != r.BaseOffset {
			return fmt.Errorf("read %s@%d: batch header disagrees with the index: %w", p.key, r.ByteOffset, segment.ErrCorrupt)
		}
		if !p.whole {
			if shared {
				chunk = append([]byte(nil), chunk...)
			}
			f.raw.add(chunkKey{p.key, r.ByteOffset}, chunk, int64(len(chunk)))
		}
		out[i] = chunk
	}
	return nil
}

// RecordForTimestamp returns the offset and timestamp of the first record
// whose timestamp is at least ts (Kafka's ListOffsets); found is false when
// there is none.
func (f *Fetcher) RecordForTimestamp(ctx context.Context, topicID int64, partition int32, ts int64) (offset, timestamp int64, found bool, err error) {
	for attempt := 0; ; attempt++ {
		ref, ok, err := f.index.FirstBatchAtOrAfter(ctx, topicID, partition, ts)
		if err != nil || !ok {
			return 0, 0, false, err
		}
		bs, err := f.batches(ctx, []metadata.BatchRef{ref}, true)
		if errors.Is(err, objectstore.ErrNotExist) && attempt < 2 {
			continue
		}
		if err != nil {
			return 0, 0, false, err
		}
		for _, r := range bs[0].Records {
			if r.Timestamp >= ts {
				return ref.BaseOffset + int64(r.OffsetDelta), r.Timestamp, true, nil
			}
		}
		return 0, 0, false, fmt.Errorf("fetch: chunk at %d has max timestamp %d but no record at or after %d", ref.BaseOffset, ref.MaxTimestamp, ts)
	}
}
