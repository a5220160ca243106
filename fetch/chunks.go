package fetch

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
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

// StoredBatch is one stored RecordBatch of a BatchResponse.
type StoredBatch struct {
	BaseOffset   int64
	LastOffset   int64
	Records      int32
	MaxTimestamp int64
	// Bytes is the batch as it is stored, shared with the caches: never
	// change it. Its base offset field may hold 0 (a flush chunk): a
	// reader sends BaseOffset in its place (segment.SetBaseOffset on a
	// copy, or the first 8 bytes written apart).
	Bytes []byte
}

// BatchResponse is the outcome of FetchBatches. Its batches hold a share
// of Config.MaxInflightBytes until Release.
type BatchResponse struct {
	Batches        []StoredBatch
	Size           int64 // the batches' bytes
	NextOffset     int64 // past the last batch; the request's offset when there is none
	HighWatermark  int64
	LogStartOffset int64

	hold
}

// Release gives the response's bytes back to the in-flight budget once
// they are written (or dropped). Release of a nil or released response
// does nothing.
func (r *BatchResponse) Release() {
	if r != nil {
		r.release()
	}
}

// FetchBatches reads stored batches from req.Offset without decoding them:
// the batch holding req.Offset (which may start before it: readers skip
// the records they did not ask for, as Kafka clients do) and those after
// it, up to req.MaxBytes of stored bytes (the first batch is always
// returned whole, however large), MaxChunksPerFetch index rows and, when
// req.MaxRecords > 0, the batches it takes to hold req.MaxRecords records
// from req.Offset. The bytes are shared with the caches, not copied.
//
// The batches hold a share of Config.MaxInflightBytes until Release, taken
// before the read as Fetch takes it: up to MaxBytes of what is free (fewer
// batches when less is free), ErrBackpressure when nothing is.
//
// An offset below the log start, or past the high watermark, fails with
// an OutOfRangeError; at the high watermark, FetchBatches waits up to
// req.Wait for a commit, as Fetch does.
func (f *Fetcher) FetchBatches(ctx context.Context, req Request) (*BatchResponse, error) {
	return f.fetchStored(ctx, req, true)
}

// FetchChunks is FetchBatches for a caller that keeps its own account of
// the bytes in flight (the Kafka listener) and wants them in one piece:
// the batches are copied into Data with their base offsets written, and
// hold nothing of Config.MaxInflightBytes. MaxRecords is ignored.
func (f *Fetcher) FetchChunks(ctx context.Context, req Request) (*ChunkResponse, error) {
	req.MaxRecords = 0
	r, err := f.fetchStored(ctx, req, false)
	if err != nil {
		return nil, err
	}
	defer r.Release() // the spans its batches lie in, once copied
	resp := &ChunkResponse{NextOffset: r.NextOffset, HighWatermark: r.HighWatermark, LogStartOffset: r.LogStartOffset}
	if len(r.Batches) == 0 {
		return resp, nil
	}
	resp.Data = make([]byte, 0, r.Size)
	resp.Chunks = make([]Chunk, len(r.Batches))
	for i, b := range r.Batches {
		start := len(resp.Data)
		resp.Data = append(resp.Data, b.Bytes...)
		segment.SetBaseOffset(resp.Data[start:], b.BaseOffset)
		resp.Chunks[i] = Chunk{BaseOffset: b.BaseOffset, LastOffset: b.LastOffset, Records: b.Records, MaxTimestamp: b.MaxTimestamp, Size: len(b.Bytes)}
	}
	return resp, nil
}

func (f *Fetcher) fetchStored(ctx context.Context, req Request, hold bool) (*BatchResponse, error) {
	if req.MaxBytes < 1 {
		req.MaxBytes = 1
	}
	var resp *BatchResponse
	err := f.poll(ctx, req, func() (bool, error) {
		r, err := f.storedOnce(ctx, req, hold)
		if err != nil {
			return false, err
		}
		resp = r
		// Offsets a compaction emptied count as progress too.
		return len(r.Batches) > 0 || r.NextOffset > req.Offset, nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func (f *Fetcher) storedOnce(ctx context.Context, req Request, hold bool) (*BatchResponse, error) {
	st, refs, ahead, err := f.lookup(ctx, req)
	if err != nil {
		return nil, err
	}
	if req.Offset < st.LogStartOffset || req.Offset > st.HighWatermark {
		return nil, &OutOfRangeError{Offset: req.Offset, LogStartOffset: st.LogStartOffset, HighWatermark: st.HighWatermark}
	}
	resp := &BatchResponse{NextOffset: req.Offset, HighWatermark: st.HighWatermark, LogStartOffset: st.LogStartOffset}
	if len(refs) == 0 {
		return resp, nil
	}
	limit := req.MaxBytes
	all := refs
	refs = trimRefs(refs, limit)
	if req.MaxRecords > 0 {
		refs = trimRefsToRecords(refs, req.Offset, req.MaxRecords)
	}
	var admit admitFunc
	if hold {
		// As Fetch: take the response's share before reading (once the
		// reads are planned: rows in spans need none), and read fewer
		// chunks when less is free.
		admit = func(spanned []bool) (int, error) {
			var need int64
			for i, sp := range spanned {
				if !sp {
					need += int64(refs[i].ByteLength)
				}
			}
			if need == 0 {
				return len(spanned), nil
			}
			grant := f.inflight.upTo(need)
			resp.budget, resp.held = f.inflight, grant
			var sum int64
			for i, sp := range spanned {
				if sp {
					continue
				}
				if sum += int64(refs[i].ByteLength); sum > grant && (i > 0 || grant == 0) {
					if i == 0 {
						f.metrics.backpressure.Inc()
						return 0, ErrBackpressure
					}
					return i, nil
				}
			}
			return len(spanned), nil
		}
	}
	ahead = append(all[len(refs):len(all):len(all)], ahead...)
	head := refs[len(refs)-1].LastOffset+1 >= st.HighWatermark
	got, err := f.rawChunks(ctx, PartitionKey{req.TopicID, req.Partition}, refs, ahead, head, admit)
	if err != nil {
		resp.Release()
	}
	if errors.Is(err, objectstore.ErrNotExist) {
		if now, lerr := f.index.PartitionOffsets(ctx, req.TopicID, req.Partition); lerr == nil && req.Offset < now.LogStartOffset {
			return nil, &OutOfRangeError{Offset: req.Offset, LogStartOffset: now.LogStartOffset, HighWatermark: now.HighWatermark}
		}
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	// The batches' bytes may lie in spans: the response pins them until
	// its Release.
	resp.pins = got.pinSet
	refs = refs[:len(got.out)]
	spanBytes, err := f.collect(resp, req, refs, got.out, got.spanned, limit)
	if err != nil {
		resp.Release()
		return nil, err
	}
	if len(resp.Batches) == 0 {
		resp.pins.unpin()
	}
	if hold {
		// Hold what the batches take: give back what they leave of the
		// grant, or take what a first batch larger than it needs (that
		// batch is served whole, if the budget has room for it). Batches
		// in spans take nothing more: the spans they pin count against
		// the object-span cache's bound until the response's Release.
		need := resp.Size - spanBytes
		resp.budget = f.inflight
		switch {
		case need < resp.held:
			f.inflight.give(resp.held - need)
			resp.held = need
		case need > resp.held:
			if !f.inflight.take(need - resp.held) {
				resp.Release()
				f.metrics.backpressure.Inc()
				return nil, ErrBackpressure
			}
			resp.held = need
		}
		if resp.held == 0 {
			resp.budget = nil
		}
	}
	var records int64
	for _, b := range resp.Batches {
		records += int64(b.Records)
	}
	f.metrics.records.Add(float64(records))
	f.metrics.batchBytes.Add(float64(resp.Size))
	return resp, nil
}

// collect fills resp with the batches of refs (whose stored bytes are
// raws) from req.Offset on: a merged row's batches one by one, skipping
// those wholly before req.Offset; it stops before a batch that would take
// the bytes past limit, or the records past req.MaxRecords (the first
// batch is always taken). It returns the bytes of the batches of rows
// spanned (read from a span).
func (f *Fetcher) collect(resp *BatchResponse, req Request, refs []metadata.BatchRef, raws [][]byte, spanned []bool, limit int64) (spanBytes int64, err error) {
	var records int64 // from req.Offset on
	full := func(size int) bool {
		if len(resp.Batches) == 0 {
			return false
		}
		return resp.Size+int64(size) > limit || req.MaxRecords > 0 && records >= int64(req.MaxRecords)
	}
	add := func(b StoredBatch) {
		resp.Batches = append(resp.Batches, b)
		resp.Size += int64(len(b.Bytes))
		records += b.LastOffset + 1 - max(b.BaseOffset, req.Offset)
		resp.NextOffset = b.LastOffset + 1
	}
	resp.Batches = make([]StoredBatch, 0, len(refs))
	for i, r := range refs {
		if r.Batches <= 1 {
			if full(len(raws[i])) {
				return spanBytes, nil
			}
			if spanned[i] {
				spanBytes += int64(len(raws[i]))
			}
			add(StoredBatch{BaseOffset: r.BaseOffset, LastOffset: r.LastOffset, Records: r.Records, MaxTimestamp: r.MaxTimestamp, Bytes: raws[i]})
			continue
		}
		// A merged run: batches back to back, each with its own base
		// offset.
		for rest := raws[i]; len(rest) > 0; {
			h, b, next, err := segment.NextBatch(rest)
			if err != nil {
				return 0, fmt.Errorf("read %s@%d: %w", r.SegmentKey, r.ByteOffset, err)
			}
			rest = next
			if h.LastOffset() < req.Offset {
				continue
			}
			if full(len(b)) {
				return spanBytes, nil
			}
			if spanned[i] {
				spanBytes += int64(len(b))
			}
			add(StoredBatch{BaseOffset: h.BaseOffset, LastOffset: h.LastOffset(), Records: h.RecordCount, MaxTimestamp: h.MaxTimestamp, Bytes: b})
		}
		// Offsets a compaction left empty at the run's end are passed too.
		resp.NextOffset = r.LastOffset + 1
	}
	return spanBytes, nil
}

// trimRefsToRecords keeps the rows it takes to reach n records from
// offset on, at least one.
func trimRefsToRecords(refs []metadata.BatchRef, offset int64, n int) []metadata.BatchRef {
	var sum int64
	for i, r := range refs {
		if i > 0 && sum >= int64(n) {
			return refs[:i]
		}
		sum += r.LastOffset + 1 - max(r.BaseOffset, offset)
	}
	return refs
}

// rawChunks returns the stored bytes of refs, in order, from the batch
// cache, the object-span cache or the object store; ahead are the rows
// the lookup found past refs. It may return fewer than refs (a prefix).
// The slices are shared: callers copy before changing them, and unpin the
// spans once done with them.
func (f *Fetcher) rawChunks(ctx context.Context, k PartitionKey, refs, ahead []metadata.BatchRef, head bool, admit admitFunc) (gathered[[]byte], error) {
	return gather(ctx, f, k, refs, ahead, head, admit, f.raw.get, f.metrics.batchHits, f.metrics.batchMisses, f.readRaw)
}

// gathered is what gather read: the chunks of a prefix of its refs, and
// the spans their bytes lie in.
type gathered[T any] struct {
	out     []T
	spanned []bool // out[i] lies in a span (of pinSet)
	pinSet
}

// admitFunc is told, once the reads are planned and before they are
// made, which of the first n rows will lie in spans; it returns how many
// of them to read (it may take what the others need of a budget), or an
// error.
type admitFunc func(spanned []bool) (int, error)

// gather returns what refs hold, in order, for partition k: from cached
// where it has them (counted as hits and misses), the rest by the read
// plans, at most ReadConcurrency at once, each performed by read. It
// returns a prefix of refs when the plans (see plan) or admit, when not
// nil, cut the fetch short; after a catch-up read, it reads ahead the
// object that the rows past those (in refs, then ahead) start in.
func gather[T any](ctx context.Context, f *Fetcher, k PartitionKey, refs, ahead []metadata.BatchRef, head bool, admit admitFunc,
	cached func(chunkKey) (T, bool), hits, misses prometheus.Counter,
	read func(context.Context, []metadata.BatchRef, *readPlan, []T) error) (gathered[T], error) {
	res := gathered[T]{pinSet: pinSet{cache: f.spans}}
	out := make([]T, len(refs))
	var missing []int
	for i, r := range refs {
		if b, ok := cached(chunkKey{r.SegmentKey, r.ByteOffset}); ok {
			hits.Inc()
			out[i] = b
			continue
		}
		misses.Inc()
		missing = append(missing, i)
	}
	plans, n, tail := f.plan(ctx, k, refs, missing, head)
	spanned := make([]bool, n)
	for _, p := range plans {
		for _, i := range p.idx {
			spanned[i] = p.span != nil
		}
	}
	if admit != nil {
		m, err := admit(spanned)
		if err != nil {
			f.cut(plans, 0)
			return res, err
		}
		if m < n {
			plans, n, spanned = f.cut(plans, m), m, spanned[:m]
		}
	}
	for _, p := range plans {
		if p.span != nil {
			res.spans = append(res.spans, p.span)
		}
	}
	if len(plans) > 0 {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(f.cfg.ReadConcurrency)
		for _, run := range plans {
			g.Go(func() error { return read(gctx, refs, run, out) })
		}
		if err := g.Wait(); err != nil {
			res.unpin()
			return res, err
		}
	}
	res.out, res.spanned = out[:n], spanned
	f.served(k, refs[:n])
	if !tail && n == len(refs) {
		f.readAhead(ctx, k, append(refs[n:len(refs):len(refs)], ahead...))
	}
	return res, nil
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
		if p.span == nil {
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
		got, err := f.batches(ctx, PartitionKey{topicID, partition}, []metadata.BatchRef{ref}, nil, true)
		if errors.Is(err, objectstore.ErrNotExist) && attempt < 2 {
			continue
		}
		if err != nil {
			return 0, 0, false, err
		}
		got.unpin() // decoded records never alias a span
		for _, r := range got.out[0].Records {
			if r.Timestamp >= ts {
				return ref.BaseOffset + int64(r.OffsetDelta), r.Timestamp, true, nil
			}
		}
		return 0, 0, false, fmt.Errorf("fetch: chunk at %d has max timestamp %d but no record at or after %d", ref.BaseOffset, ref.MaxTimestamp, ts)
	}
}
