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
	// ObjectCacheBytes bounds the object-span cache: whole small fresh
	// objects read once for the tail readers of many partitions, and
	// spans of objects (whole flush objects, mostly) read once for the
	// readers catching up on them, or read ahead of them.
	ObjectCacheBytes int64
	// WholeObjectBytes: objects up to this size, committed within
	// RecentWindow, are fetched whole once and shared by all tail
	// readers; it bounds a catch-up span (and so the objects read whole
	// for readers behind) too.
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
	spans    *spanCache             // whole objects and spans of them, read once for many fetches
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
	f.spans = newSpanCache(cfg.ObjectCacheBytes, cfg.WholeObjectBytes, f.readObject)
	m, err := newMetrics(deps.Registerer, f)
	if err != nil {
		return nil, err
	}
	f.metrics = m
	f.spans.hits, f.spans.refused, f.spans.evictions = m.spanHits.Inc, m.spanRefused.Inc, m.spanEvictions.Inc
	f.chunks = newLRU[chunkKey, *segment.Batch](cfg.CacheBytes, func(n int64) { m.evictions.Add(float64(n)) })
	f.raw = newLRU[chunkKey, []byte](cfg.BatchCacheBytes, nil)
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
	st, refs, ahead, err := f.lookup(ctx, req)
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
	all := refs
	refs = trimRefs(refs, grant)
	ahead = append(all[len(refs):len(all):len(all)], ahead...)
	// A fetch that reaches the high watermark is a tail read: it may share
	// whole fresh objects with the other partitions' tails. One that stops
	// short of it is reading history: it reads spans that its readers
	// want, or its own ranges (see plan).
	head := refs[len(refs)-1].LastOffset+1 >= st.HighWatermark
	got, err := f.batches(ctx, PartitionKey{req.TopicID, req.Partition}, refs, ahead, head)
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
	// Decoded records never alias a span (decodeChunk copies what would).
	defer got.unpin()
	var size, held int64
	for i, b := range got.out {
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

// lookup looks req up in the index. It looks ahead past the bytes it
// reads (twice them, at least readAheadLookup): the rows past them say
// which objects the reader will read next, for the object-span cache
// (spans.go). It returns the rows within req.MaxBytes, and those past
// them.
func (f *Fetcher) lookup(ctx context.Context, req Request) (st metadata.PartitionState, refs, ahead []metadata.BatchRef, err error) {
	st, refs, err = f.index.LookupBatches(ctx, req.TopicID, req.Partition, req.Offset, max(2*req.MaxBytes, readAheadLookup), f.cfg.MaxChunksPerFetch)
	if err != nil || len(refs) == 0 {
		return st, refs, nil, err
	}
	f.spans.want(PartitionKey{req.TopicID, req.Partition}, refs)
	mine := trimRefs(refs, req.MaxBytes)
	return st, mine, refs[len(mine):], nil
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
// the object store, for partition k; ahead are the rows the lookup found
// past refs, and head says the read reaches the high watermark (see
// plan). It may return the chunks of fewer rows than refs (a prefix).
func (f *Fetcher) batches(ctx context.Context, k PartitionKey, refs, ahead []metadata.BatchRef, head bool) (gathered[*segment.Batch], error) {
	return gather(ctx, f, k, refs, ahead, head, nil, f.chunks.get, f.metrics.hits, f.metrics.misses, f.read)
}

// readPlan is one object read serving the refs at idx.
type readPlan struct {
	key        string
	span       *span // pinned: the refs are read from it (read once for many fetches)
	start, end int64 // byte range when span is nil
	idx        []int
}

// served tells the object-span cache that partition k read the objects
// of refs.
func (f *Fetcher) served(k PartitionKey, refs []metadata.BatchRef) {
	for i, r := range refs {
		if i == 0 || r.SegmentKey != refs[i-1].SegmentKey {
			f.spans.served(k, r.SegmentKey)
		}
	}
}

// readAhead starts reading, for partition k, the objects its next
// fetches will read first (rest are the rows past those it just read), up
// to readAheadObjects of them, each if it is wanted enough (see spans.go)
// and the bound has room; no one waits for them. More than one object
// ahead keeps several reads in flight while readers that are behind
// together wait on the same object.
func (f *Fetcher) readAhead(ctx context.Context, k PartitionKey, rest []metadata.BatchRef) {
	for n := 0; len(rest) > 0 && n < readAheadObjects; n++ {
		key := rest[0].SegmentKey
		lo, hi := rest[0].ByteOffset, rest[0].ByteOffset+int64(rest[0].ByteLength)
		i := 1
		for ; i < len(rest) && rest[i].SegmentKey == key; i++ {
			lo, hi = min(lo, rest[i].ByteOffset), max(hi, rest[i].ByteOffset+int64(rest[i].ByteLength))
		}
		if !f.spans.has(key) {
			mode := modeAhead
			if n > 0 {
				mode = modeAheadWhole
			}
			s, refused := f.spans.acquire(ctx, k, key, rest[0].SegmentSize, lo, hi, mode)
			if s != nil {
				f.spans.release(s)
			}
			if refused {
				return // no room: the objects past it even less
			}
		}
		rest = rest[i:]
	}
}

// maxWholeObjectsPerFetch: a fetch spanning more objects than this is not
// at the tail, even if it ends there (a catch-up's last page).
const maxWholeObjectsPerFetch = 4

// plan groups the missing chunks of partition k's refs into object
// reads: spans of the object-span cache, or coalesced ranges. A span held
// (or being read) that covers an object's chunks serves them. Otherwise a
// tail read (head: it reaches the high watermark, spanning a few objects)
// reads a small recent object whole: the tails of many partitions want
// the same fresh object, and one GET serves them all. A catch-up read
// reads the span of an object that its readers want (spans.go), or its
// own coalesced ranges. When a catch-up read finds no room for a span, the
// fetch ends before that object if it has rows before it: n is how many of
// refs the plans serve (a prefix). tail reports a tail read.
func (f *Fetcher) plan(ctx context.Context, k PartitionKey, refs []metadata.BatchRef, missing []int, head bool) (plans []*readPlan, n int, tail bool) {
	byKey := map[string][]int{}
	var keys []string
	for _, i := range missing {
		key := refs[i].SegmentKey
		if _, ok := byKey[key]; !ok {
			keys = append(keys, key)
		}
		byKey[key] = append(byKey[key], i)
	}
	n = len(refs)
	tail = tailRead(refs, head)
	for _, key := range keys {
		idx := byKey[key]
		r0 := refs[idx[0]]
		lo, hi := int64(math.MaxInt64), int64(0)
		for _, i := range idx {
			lo, hi = min(lo, refs[i].ByteOffset), max(hi, refs[i].ByteOffset+int64(refs[i].ByteLength))
		}
		mode := modeCatchUp // also at the end of a catch-up: a tail read of an old object
		if tail && r0.SegmentSize <= f.cfg.WholeObjectBytes && time.Since(r0.SegmentAt) <= f.cfg.RecentWindow {
			mode = modeTail
		}
		s, refused := f.spans.acquire(ctx, k, key, r0.SegmentSize, lo, hi, mode)
		if refused && mode == modeCatchUp && slices.Min(idx) == 0 {
			// Nothing before this object to serve: wait a little for the
			// readers behind to let go of an object held, rather than
			// read a sliver of this one alone.
			s, refused = f.spans.acquireWait(ctx, k, key, r0.SegmentSize, lo, hi, spanWait)
		}
		if s != nil {
			plans = append(plans, &readPlan{key: key, span: s, idx: idx})
			continue
		}
		if refused && mode == modeCatchUp && slices.Min(idx) > 0 {
			n = slices.Min(idx)
			break
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
			cur = &readPlan{key: key, start: r.ByteOffset, end: end, idx: []int{i}}
			plans = append(plans, cur)
		}
	}
	return f.cut(plans, n), n, tail
}

// cut keeps of plans only the rows before n, letting go of the spans of
// plans left with none (an object's rows are contiguous: a plan keeps
// all its rows, or none).
func (f *Fetcher) cut(plans []*readPlan, n int) []*readPlan {
	kept := plans[:0]
	for _, p := range plans {
		p.idx = slices.DeleteFunc(p.idx, func(i int) bool { return i >= n })
		switch {
		case len(p.idx) > 0:
			kept = append(kept, p)
		case p.span != nil:
			f.spans.release(p.span)
		}
	}
	return kept
}

// readData performs one plan: the bytes read and the object offset they
// start at.
func (f *Fetcher) readData(ctx context.Context, p *readPlan) (data []byte, base int64, err error) {
	if p.span != nil {
		return f.spans.wait(ctx, p.span)
	}
	data, err = f.readObject(ctx, p.key, p.start, p.end, -1, kindRange)
	return data, p.start, err
}

// readObject reads [lo, hi) of object key, counted as kind: the whole
// object when that is all of it (size bytes; -1: not known). It performs
// the spans of the object-span cache and a fetch's own ranges.
func (f *Fetcher) readObject(ctx context.Context, key string, lo, hi, size int64, kind string) ([]byte, error) {
	f.metrics.gets.WithLabelValues(kind).Inc()
	var rc io.ReadCloser
	var err error
	if lo == 0 && hi == size {
		rc, err = f.objects.Get(ctx, key)
	} else {
		rc, err = f.objects.GetRange(ctx, key, lo, hi-lo)
	}
	if err != nil {
		return nil, storageError(fmt.Sprintf("read %s [%d,%d)", key, lo, hi), err)
	}
	data, err := readAll(rc, hi-lo)
	if err != nil {
		return nil, storageError("read "+key, err)
	}
	f.metrics.readBytes.WithLabelValues(kind).Add(float64(len(data)))
	return data, nil
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
	data, base, err := f.readData(ctx, p)
	if err != nil {
		return err
	}
	for _, i := range p.idx {
		r := refs[i]
		chunk, err := chunkBytes(p.key, r, data, base)
		if err != nil {
			return err
		}
		b, err := f.decodeChunk(p.key, r, chunk, p.span != nil || len(chunk) < len(data))
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
// segment, before its commit) in the object-span cache, when it is small
// enough to be read whole and the cache has room: the tails of its
// partitions ask for it as soon as the commit's NOTIFY wakes them, and are
// served from memory instead of a GET. Agents behind one load balancer
// each seed their own flushes; a tail reader on another agent reads the
// object as before.
func (f *Fetcher) Seed(key string, obj []byte) {
	if f.spans.seed(key, obj) {
		f.metrics.seeded.Inc()
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
