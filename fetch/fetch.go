package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strconv"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"silt/metadata"
	"silt/objectstore"
	"silt/segment"
)

// ErrOffsetOutOfRange: the offset is below the partition's log start or
// above its high watermark.
var ErrOffsetOutOfRange = errors.New("fetch: offset out of range")

// ErrBackpressure: the bytes of fetch responses in flight are at
// Config.MaxInflightBytes; retriable.
var ErrBackpressure = errors.New("fetch: too many response bytes in flight")

// ErrStorage: the object store failed a read; retriable. It wraps the
// store's error, so objectstore sentinels still match.
var ErrStorage = errors.New("fetch: object store read failed")

// OutOfRangeError carries the partition's offsets with ErrOffsetOutOfRange.
type OutOfRangeError struct {
	Offset         int64
	LogStartOffset int64
	HighWatermark  int64
}

func (e *OutOfRangeError) Error() string {
	return fmt.Sprintf("fetch: offset %d is out of range [%d, %d]", e.Offset, e.LogStartOffset, e.HighWatermark)
}

// Unwrap makes errors.Is(err, ErrOffsetOutOfRange) hold.
func (e *OutOfRangeError) Unwrap() error { return ErrOffsetOutOfRange }

// Index is what the fetcher needs of the metadata store.
type Index interface {
	LookupBatches(ctx context.Context, topicID int64, partition int32, offset, maxBytes int64, limit int) (metadata.PartitionState, []metadata.BatchRef, error)
	PartitionOffsets(ctx context.Context, topicID int64, partition int32) (metadata.PartitionState, error)
	FirstBatchAtOrAfter(ctx context.Context, topicID int64, partition int32, ts int64) (metadata.BatchRef, bool, error)
}

// Reader reads objects.
type Reader interface {
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
}

// Watcher wakes long-polls; the Notifier implements it.
type Watcher interface {
	Watch(k PartitionKey) <-chan struct{}
}

// Config tunes the fetcher.
type Config struct {
	// CacheBytes bounds the decoded-chunk cache.
	CacheBytes int64
	// BatchCacheBytes bounds the cache of stored batches served as they
	// are (FetchChunks), for chunks read by range; whole objects have
	// their own cache.
	BatchCacheBytes int64
	// ObjectCacheBytes bounds the cache of whole small objects.
	ObjectCacheBytes int64
	// WholeObjectBytes: objects up to this size, committed within
	// RecentWindow, are fetched whole once and shared by all readers.
	WholeObjectBytes int64
	RecentWindow     time.Duration
	// CoalesceGap: ranges of one object closer than this are read together.
	CoalesceGap int64
	// MaxChunksPerFetch bounds the index rows one fetch reads.
	MaxChunksPerFetch int
	// ReadConcurrency bounds parallel object reads of one fetch.
	ReadConcurrency int
	// MaxDecompressedBytes bounds one chunk's decoded size.
	MaxDecompressedBytes int
	// MaxInflightBytes bounds the bytes of the records of responses in
	// flight, from the read until the caller releases the response (once
	// it is written). A fetch takes what is free up to its MaxBytes and is
	// served smaller when less is free; with nothing free it fails with
	// ErrBackpressure.
	MaxInflightBytes int64
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		CacheBytes:           256 << 20,
		BatchCacheBytes:      64 << 20,
		ObjectCacheBytes:     64 << 20,
		WholeObjectBytes:     16 << 20,
		RecentWindow:         2 * time.Minute,
		CoalesceGap:          256 << 10,
		MaxChunksPerFetch:    256,
		ReadConcurrency:      8,
		MaxDecompressedBytes: segment.DefaultMaxDecompressedSize,
		MaxInflightBytes:     256 << 20,
	}
}

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case c.CacheBytes < 0 || c.BatchCacheBytes < 0 || c.ObjectCacheBytes < 0 || c.WholeObjectBytes < 0 || c.CoalesceGap < 0:
		return errors.New("fetch: sizes must not be negative")
	case c.MaxChunksPerFetch < 1:
		return errors.New("fetch: max chunks per fetch must be positive")
	case c.ReadConcurrency < 1:
		return errors.New("fetch: read concurrency must be positive")
	case c.MaxDecompressedBytes < 1:
		return errors.New("fetch: max decompressed bytes must be positive")
	case c.MaxInflightBytes < 1:
		return errors.New("fetch: max in-flight bytes must be positive")
	}
	return nil
}

// Request is one partition read.
type Request struct {
	TopicID    int64
	Partition  int32
	Offset     int64
	MaxRecords int
	MaxBytes   int64
	// Wait is how long to wait for records when none are available.
	Wait time.Duration
}

// Record is a fetched record with its offset.
type Record struct {
	Offset int64
	segment.Record
}

// Response is the outcome of a fetch. Its records hold a share of
// Config.MaxInflightBytes until Release.
type Response struct {
	Records        []Record
	NextOffset     int64
	HighWatermark  int64
	LogStartOffset int64

	hold
}

// Release gives the response's bytes back to the in-flight budget; call
// it once the records are written (or dropped). The records stay valid
// (the budget is an account, not an allocator). Release of a nil or
// released response does nothing.
func (r *Response) Release() {
	if r != nil {
		r.release()
	}
}

// chunkKey names a chunk in the decoded-chunk cache.
type chunkKey struct {
	object string
	offset int64
}

// Fetcher reads partitions.
type Fetcher struct {
	cfg      Config
	index    Index
	objects  Reader
	watch    Watcher
	logger   *slog.Logger
	metrics  *metrics
	chunks   *lru[chunkKey, *segment.Batch]
	raw      *lru[chunkKey, []byte] // stored batches, as they are in their objects
	whole    *lru[string, []byte]
	share    *sharer // whole objects read once for several catch-up readers
	inflight *budget
	flight   singleflight.Group
	decode   segment.DecodeOptions
	done     <-chan struct{}
}

// Deps are the fetcher's collaborators.
type Deps struct {
	Index      Index
	Objects    Reader
	Watcher    Watcher
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Done, when closed, ends long-polls early (agent shutdown).
	Done <-chan struct{}
}

// New returns a Fetcher.
func New(cfg Config, deps Deps) (*Fetcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Index == nil || deps.Objects == nil || deps.Watcher == nil {
		return nil, errors.New("fetch: index, objects and watcher are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Registerer == nil {
		deps.Registerer = prometheus.NewRegistry()
	}
	f := &Fetcher{cfg: cfg, index: deps.Index, objects: deps.Objects, watch: deps.Watcher, logger: deps.Logger,
		decode: segment.DecodeOptions{MaxDecompressedSize: cfg.MaxDecompressedBytes}, done: deps.Done,
		inflight: &budget{max: cfg.MaxInflightBytes}}
	m, err := newMetrics(deps.Registerer, f)
	if err != nil {
		return nil, err
	}
	f.metrics = m
	f.chunks = newLRU[chunkKey, *segment.Batch](cfg.CacheBytes, func(n int64) { m.evictions.Add(float64(n)) })
	f.raw = newLRU[chunkKey, []byte](cfg.BatchCacheBytes, nil)
	f.whole = newLRU[string, []byte](cfg.ObjectCacheBytes, nil)
	f.share = newSharer(f.inflight, cfg.WholeObjectBytes)
	return f, nil
}

// Fetch reads records from req.Offset; see the package contract.
func (f *Fetcher) Fetch(ctx context.Context, req Request) (*Response, error) {
	if req.MaxRecords < 1 {
		req.MaxRecords = 1
	}
	if req.MaxBytes < 1 {
		req.MaxBytes = 1
	}
	var resp *Response
	err := f.poll(ctx, req, func() (bool, error) {
		r, err := f.fetchOnce(ctx, req)
		if err != nil {
			return false, err
		}
		resp = r
		return len(r.Records) > 0, nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// poll calls once until it finds data, or until req.Wait passes without a
// commit to the partition (then once's last answer stands), the fetcher
// stops, or ctx ends. It looks up again when an object vanished under a
// read (retention or a merge swapped it).
func (f *Fetcher) poll(ctx context.Context, req Request, once func() (found bool, err error)) error {
	var deadline <-chan time.Time
	if req.Wait > 0 {
		t := time.NewTimer(req.Wait)
		defer t.Stop()
		deadline = t.C
	}
	k := PartitionKey{req.TopicID, req.Partition}
	for retries := 0; ; {
		var wake <-chan struct{}
		if req.Wait > 0 {
			wake = f.watch.Watch(k) // before the lookup: no lost wake-ups
		}
		found, err := once()
		if errors.Is(err, objectstore.ErrNotExist) && retries < 2 {
			retries++
			continue
		}
		if err != nil || found || req.Wait <= 0 {
			return err
		}
		f.metrics.waits.Inc()
		select {
		case <-wake:
		case <-deadline:
			return nil
		case <-f.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *Fetcher) fetchOnce(ctx context.Context, req Request) (*Response, error) {
	st, refs, err := f.lookup(ctx, req)
	if err != nil {
		return nil, err
	}
	resp := &Response{NextOffset: req.Offset, HighWatermark: st.HighWatermark, LogStartOffset: st.LogStartOffset}
	if req.Offset < st.LogStartOffset || req.Offset > st.HighWatermark {
		return nil, &OutOfRangeError{Offset: req.Offset, LogStartOffset: st.LogStartOffset, HighWatermark: st.HighWatermark}
	}
	if len(refs) == 0 {
		return resp, nil
	}
	// Take the response's share of the in-flight budget before reading:
	// up to MaxBytes, or the stored bytes of the chunks found when fewer
	// (a tail read finds little: it must not hold its whole max_bytes
	// while it reads), or what is free (the fetch is then served smaller,
	// reading fewer chunks); nothing free fails the fetch with 429.
	var stored int64
	for _, r := range refs {
		stored += int64(r.ByteLength)
	}
	grant := f.inflight.upTo(min(req.MaxBytes, stored))
	if grant == 0 {
		f.metrics.backpressure.Inc()
		return nil, ErrBackpressure
	}
	refs = trimRefs(refs, grant)
	// A fetch that reaches the high watermark is a tail read: it may share
	// whole fresh objects with the other partitions' tails. One that stops
	// short of it is reading history and reads its own ranges.
	head := refs[len(refs)-1].LastOffset+1 >= st.HighWatermark
	batches, err := f.batches(ctx, PartitionKey{req.TopicID, req.Partition}, refs, head)
	if err != nil {
		f.inflight.give(grant)
	}
	if errors.Is(err, objectstore.ErrNotExist) {
		// Gone under us: if retention moved the log start past the
		// offset, say so; otherwise let Fetch look up again.
		if now, lerr := f.index.PartitionOffsets(ctx, req.TopicID, req.Partition); lerr == nil && req.Offset < now.LogStartOffset {
			return nil, &OutOfRangeError{Offset: req.Offset, LogStartOffset: now.LogStartOffset, HighWatermark: now.HighWatermark}
		}
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	var size, held int64
	for i, b := range batches {
		base := refs[i].BaseOffset
		full := true // every record of the chunk was returned or skipped
		for j := range b.Records {
			r := &b.Records[j]
			off := base + int64(r.OffsetDelta)
			if off < req.Offset {
				continue
			}
			rs, rm := recordSize(r), recordMemory(r)
			if off >= st.HighWatermark || len(resp.Records) > 0 && (size+rs > req.MaxBytes || len(resp.Records) >= req.MaxRecords) {
				full = false
				break
			}
			if held+rm > grant {
				// Past what was taken ahead (records cost more in memory
				// than their bytes): take more, or stop here. The first
				// record is returned whole if the budget has room for it.
				if f.inflight.take(held + rm - grant) {
					grant = held + rm
				} else if len(resp.Records) > 0 {
					full = false
					break
				} else {
					f.inflight.give(grant)
					f.metrics.backpressure.Inc()
					return nil, ErrBackpressure
				}
			}
			size += rs
			held += rm
			resp.Records = append(resp.Records, Record{Offset: off, Record: *r})
			resp.NextOffset = off + 1
		}
		if !full {
			break
		}
		// Offsets a compaction left empty at the chunk's end are passed too.
		resp.NextOffset = max(resp.NextOffset, refs[i].LastOffset+1)
	}
	f.inflight.give(grant - held)
	if held > 0 {
		resp.budget, resp.held = f.inflight, held
	}
	f.metrics.records.Add(float64(len(resp.Records)))
	f.metrics.bytes.Add(float64(size))
	return resp, nil
}

// lookup looks req up in the index. It looks up twice the bytes it reads:
// the rows past them say which objects the reader will read next, for the
// sharer. It returns the rows within req.MaxBytes.
func (f *Fetcher) lookup(ctx context.Context, req Request) (metadata.PartitionState, []metadata.BatchRef, error) {
	st, refs, err := f.index.LookupBatches(ctx, req.TopicID, req.Partition, req.Offset, 2*req.MaxBytes, f.cfg.MaxChunksPerFetch)
	if err != nil || len(refs) == 0 {
		return st, refs, err
	}
	f.share.want(PartitionKey{req.TopicID, req.Partition}, refs)
	return st, trimRefs(refs, req.MaxBytes), nil
}

// tailRead reports a read at the tail: it reaches the high watermark
// (head) within a few objects. Tail reads share whole fresh objects
// through the object cache.
func tailRead(refs []metadata.BatchRef, head bool) bool {
	if !head {
		return false
	}
	var keys []string
	for _, r := range refs {
		if !slices.Contains(keys, r.SegmentKey) {
			if keys = append(keys, r.SegmentKey); len(keys) > maxWholeObjectsPerFetch {
				return false
			}
		}
	}
	return true
}

// trimRefs keeps the chunks whose stored bytes fit in n, at least one:
// a fetch served smaller reads less.
func trimRefs(refs []metadata.BatchRef, n int64) []metadata.BatchRef {
	var sum int64
	for i, r := range refs {
		sum += int64(r.ByteLength)
		if i > 0 && sum > n {
			return refs[:i]
		}
	}
	return refs
}

// recordMemory is what a fetched record holds in memory: what the record
// holds decoded and its offset.
func recordMemory(r *segment.Record) int64 {
	return segment.RecordMemory(r) + int64(unsafe.Sizeof(Record{})-unsafe.Sizeof(segment.Record{}))
}

// recordSize prices a record for max_bytes: its encoded size, as Kafka
// prices fetch.max.bytes.
func recordSize(r *segment.Record) int64 { return segment.RecordSize(r) }

// Offsets returns a partition's log start offset and high watermark.
func (f *Fetcher) Offsets(ctx context.Context, topicID int64, partition int32) (metadata.PartitionState, error) {
	return f.index.PartitionOffsets(ctx, topicID, partition)
}

// OffsetForTimestamp returns the first offset whose record timestamp is at
// least ts; found is false when there is none.
func (f *Fetcher) OffsetForTimestamp(ctx context.Context, topicID int64, partition int32, ts int64) (offset int64, found bool, err error) {
	offset, _, found, err = f.RecordForTimestamp(ctx, topicID, partition, ts)
	return offset, found, err
}

// batches returns the decoded chunks of refs, in order, from the cache or
// the object store, for partition k; head says the read reaches the high
// watermark (see plan).
func (f *Fetcher) batches(ctx context.Context, k PartitionKey, refs []metadata.BatchRef, head bool) ([]*segment.Batch, error) {
	return gather(ctx, f, k, refs, head, f.chunks.get, f.metrics.hits, f.metrics.misses, f.read)
}

// readPlan is one object read serving the refs at idx.
type readPlan struct {
	key        string
	whole      bool
	shared     bool  // start, end read through the sharer, with other partitions' chunks
	size       int64 // the object's size
	start, end int64 // byte range when not whole
	idx        []int
}

// served tells the sharer that partition k read the objects of refs.
func (f *Fetcher) served(k PartitionKey, refs []metadata.BatchRef) {
	for i, r := range refs {
		if i == 0 || r.SegmentKey != refs[i-1].SegmentKey {
			f.share.served(k, r.SegmentKey)
		}
	}
}

// maxWholeObjectsPerFetch: a fetch spanning more objects than this is not
// at the tail, even if it ends there (a catch-up's last page).
const maxWholeObjectsPerFetch = 4

// plan groups the missing chunks into object reads: whole objects, or
// coalesced ranges. An object is read whole when it is in the object cache
// already, or when it is small and recent and the fetch is a tail read
// (head: it reaches the high watermark, spanning a few objects): the
// tails of many partitions want the same fresh object, and one GET serves
// them all. A reader that is behind wants a sliver of each of many objects;
// reading them whole would multiply the bytes read by the partition count.
func (f *Fetcher) plan(refs []metadata.BatchRef, missing []int, head bool) []*readPlan {
	byKey := map[string][]int{}
	var keys []string
	for _, i := range missing {
		k := refs[i].SegmentKey
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], i)
	}
	var plans []*readPlan
	tail := tailRead(refs, head)
	for _, k := range keys {
		idx := byKey[k]
		r0 := refs[idx[0]]
		fresh := r0.SegmentSize <= f.cfg.WholeObjectBytes && time.Since(r0.SegmentAt) <= f.cfg.RecentWindow
		if f.whole.has(k) || (tail && fresh) {
			plans = append(plans, &readPlan{key: k, whole: true, size: r0.SegmentSize, idx: idx})
			continue
		}
		lo, hi := int64(math.MaxInt64), int64(0)
		for _, i := range idx {
			lo, hi = min(lo, refs[i].ByteOffset), max(hi, refs[i].ByteOffset+int64(refs[i].ByteLength))
		}
		if f.share.claim(k, lo, hi) {
			plans = append(plans, &readPlan{key: k, shared: true, size: r0.SegmentSize, start: lo, end: hi, idx: idx})
			continue
		}
		sort.Slice(idx, func(a, b int) bool { return refs[idx[a]].ByteOffset < refs[idx[b]].ByteOffset })
		var cur *readPlan
		for _, i := range idx {
			r := refs[i]
			end := r.ByteOffset + int64(r.ByteLength)
			if cur != nil && r.ByteOffset-cur.end <= f.cfg.CoalesceGap {
				cur.end = max(cur.end, end)
				cur.idx = append(cur.idx, i)
				continue
			}
			cur = &readPlan{key: k, start: r.ByteOffset, end: end, idx: []int{i}}
			plans = append(plans, cur)
		}
	}
	return plans
}

// readData performs one plan: the bytes read and the object offset they
// start at (0 for a whole object).
func (f *Fetcher) readData(ctx context.Context, refs []metadata.BatchRef, p *readPlan) (data []byte, base int64, err error) {
	if p.shared {
		span, lo, err := f.share.get(ctx, p.key, func(rctx context.Context, lo, hi int64) ([]byte, error) {
			f.metrics.gets.WithLabelValues("shared").Inc()
			rc, err := f.objects.GetRange(rctx, p.key, lo, hi-lo)
			if err != nil {
				return nil, storageError(fmt.Sprintf("read %s [%d,%d)", p.key, lo, hi), err)
			}
			b, err := readAll(rc, hi-lo)
			if err != nil {
				return nil, storageError("read "+p.key, err)
			}
			return b, nil
		})
		if !errors.Is(err, errNotShared) {
			return span, lo, err
		}
		p.shared = false // let go before this reader came: its own range, then
	}
	if p.whole {
		obj, err := f.wholeObject(ctx, p.key, p.size)
		if err != nil {
			return nil, 0, err
		}
		return obj, 0, nil
	}
	f.metrics.gets.WithLabelValues("range").Inc()
	rc, err := f.objects.GetRange(ctx, p.key, p.start, p.end-p.start)
	if err != nil {
		return nil, 0, storageError(fmt.Sprintf("read %s [%d,%d)", p.key, p.start, p.end), err)
	}
	data, err = readAll(rc, p.end-p.start)
	if err != nil {
		return nil, 0, storageError("read "+p.key, err)
	}
	return data, p.start, nil
}

// chunkBytes slices chunk r out of data, read from object offset base.
func chunkBytes(key string, r metadata.BatchRef, data []byte, base int64) ([]byte, error) {
	lo, hi := r.ByteOffset-base, r.ByteOffset-base+int64(r.ByteLength)
	if lo < 0 || hi > int64(len(data)) {
		return nil, fmt.Errorf("read %s: chunk [%d,%d) outside the %d bytes read: %w", key, r.ByteOffset, r.ByteOffset+int64(r.ByteLength), len(data), segment.ErrCorrupt)
	}
	return data[lo:hi:hi], nil
}

// read performs one plan and decodes its chunks into out.
func (f *Fetcher) read(ctx context.Context, refs []metadata.BatchRef, p *readPlan, out []*segment.Batch) error {
	data, base, err := f.readData(ctx, refs, p)
	if err != nil {
		return err
	}
	for _, i := range p.idx {
		r := refs[i]
		chunk, err := chunkBytes(p.key, r, data, base)
		if err != nil {
			return err
		}
		b, err := f.decodeChunk(p.key, r, chunk, p.shared || len(chunk) < len(data))
		if err != nil {
			return err
		}
		out[i] = b
	}
	return nil
}

// decodeChunk decodes the chunk of r and caches it. Concurrent readers of
// the same chunk share one decode (and its memory). shared says the chunk
// is a slice of a larger read (a whole object, or a range of several
// chunks): the records of an uncompressed batch alias the bytes they are
// decoded from, and chunks are cached and evicted one by one, so such a
// chunk is copied first, lest a cached chunk charged for its own size keep
// the whole read alive.
func (f *Fetcher) decodeChunk(key string, r metadata.BatchRef, chunk []byte, shared bool) (*segment.Batch, error) {
	k := chunkKey{key, r.ByteOffset}
	v, err, _ := f.flight.Do("chunk:"+key+"@"+strconv.FormatInt(r.ByteOffset, 10), func() (any, error) {
		if b, ok := f.chunks.get(k); ok {
			return b, nil
		}
		if shared && aliasing(chunk, r) {
			chunk = bytes.Clone(chunk)
		}
		b, err := decodeRange(chunk, r, f.decode)
		if err != nil {
			return nil, fmt.Errorf("decode %s@%d: %w", key, r.ByteOffset, err)
		}
		f.chunks.add(k, b, decodedSize(b, int64(len(chunk))))
		return b, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*segment.Batch), nil
}

// aliasing reports whether records decoded from chunk would alias it: an
// uncompressed batch, or a merged run (whose batches may be either).
func aliasing(chunk []byte, r metadata.BatchRef) bool {
	if r.Batches > 1 {
		return true
	}
	h, err := segment.ParseBatchHeader(chunk)
	return err != nil || h.Compression() == segment.CompressionNone
}

// decodeRange decodes the byte range of index row r as one batch whose
// record offset deltas are relative to r.BaseOffset: the flush chunk it
// is, or the batches of a merged run (each with its own base offset)
// joined into one.
func decodeRange(data []byte, r metadata.BatchRef, opts segment.DecodeOptions) (*segment.Batch, error) {
	span := r.LastOffset - r.BaseOffset
	if r.Batches <= 1 {
		b, err := segment.DecodeBatch(data, opts)
		if err != nil {
			return nil, err
		}
		if int64(b.LastOffsetDelta) != span {
			return nil, fmt.Errorf("chunk spans %d offsets, index says %d: %w", b.LastOffsetDelta+1, span+1, segment.ErrCorrupt)
		}
		return b, nil
	}
	if span > math.MaxInt32 {
		return nil, fmt.Errorf("a run of %d offsets: %w", span+1, segment.ErrCorrupt)
	}
	out := &segment.Batch{}
	n := int32(0)
	for rest := data; len(rest) > 0; n++ {
		h, chunk, next, err := segment.NextBatch(rest)
		if err != nil {
			return nil, err
		}
		b, err := segment.DecodeBatch(chunk, opts)
		if err != nil {
			return nil, err
		}
		shift := h.BaseOffset - r.BaseOffset
		if shift < 0 || shift+int64(h.LastOffsetDelta) > span {
			return nil, fmt.Errorf("batch at offset %d outside the run [%d, %d]: %w", h.BaseOffset, r.BaseOffset, r.LastOffset, segment.ErrCorrupt)
		}
		if n == 0 {
			out.BatchHeader = b.BatchHeader
		}
		for i := range b.Records {
			rec := b.Records[i] // aliases b's buffers, which only this run holds
			rec.OffsetDelta += int32(shift)
			out.Records = append(out.Records, rec)
		}
		rest = next
	}
	if n != r.Batches {
		return nil, fmt.Errorf("%d batches in the range, index says %d: %w", n, r.Batches, segment.ErrCorrupt)
	}
	out.BaseOffset, out.LastOffsetDelta, out.RecordCount = r.BaseOffset, int32(span), int32(len(out.Records))
	out.MaxTimestamp = r.MaxTimestamp
	return out, nil
}

// Seed keeps a copy of an object this agent has just stored (a flush
// segment, before its commit) in the whole-object cache, when it is small
// enough to be read whole: the tails of its partitions ask for it as soon
// as the commit's NOTIFY wakes them, and are served from memory instead of
// a GET. Agents behind one load balancer each seed their own flushes; a
// tail reader on another agent reads the object as before.
func (f *Fetcher) Seed(key string, obj []byte) {
	n := int64(len(obj))
	if n == 0 || n > f.cfg.WholeObjectBytes || n > f.cfg.ObjectCacheBytes {
		return
	}
	f.whole.add(key, bytes.Clone(obj), n)
	f.metrics.seeded.Inc()
}

// wholeObject returns a whole object, reading it once for all concurrent
// callers and keeping it in the object cache.
func (f *Fetcher) wholeObject(ctx context.Context, key string, size int64) ([]byte, error) {
	if b, ok := f.whole.get(key); ok {
		return b, nil
	}
	ch := f.flight.DoChan("object:"+key, func() (any, error) {
		if b, ok := f.whole.get(key); ok {
			return b, nil
		}
		f.metrics.gets.WithLabelValues("whole").Inc()
		// Detached from one caller's cancellation: others share the read.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		rc, err := f.objects.Get(rctx, key)
		if err != nil {
			return nil, storageError("read "+key, err)
		}
		b, err := readAll(rc, size)
		if err != nil {
			return nil, storageError("read "+key, err)
		}
		f.whole.add(key, b, int64(len(b)))
		return b, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.([]byte), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// storageError wraps a failed read with ErrStorage, keeping the store's
// error (and its sentinels) in the chain; cancellation stays as it is.
func storageError(what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %w: %w", what, ErrStorage, err)
}

// readAll reads exactly size bytes, the object or range asked for; a
// shorter or longer body is an error (a body cut off in transit must never
// be decoded or cached). size < 0 means unknown.
func readAll(rc io.ReadCloser, size int64) ([]byte, error) {
	defer rc.Close()
	if size < 0 {
		return io.ReadAll(rc)
	}
	buf := make([]byte, size)
	if n, err := io.ReadFull(rc, buf); err != nil {
		return nil, fmt.Errorf("read %d of %d bytes: %w", n, size, err)
	}
	if n, _ := rc.Read(make([]byte, 1)); n > 0 {
		return nil, fmt.Errorf("body longer than the %d bytes expected", size)
	}
	return buf, nil
}

// decodedSize is a decoded chunk's memory: what its records hold
// (segment.RecordMemory, the measure of every memory bound), or the
// chunk's size if larger.
func decodedSize(b *segment.Batch, chunk int64) int64 {
	var n int64
	for i := range b.Records {
		n += segment.RecordMemory(&b.Records[i])
	}
	return max(n, chunk)
}
