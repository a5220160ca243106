package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"
	"unsafe"

	"silt/metadata"
	"silt/objectstore"
	"silt/segment"
)

// world is one partition in one in-memory object, behind fake index and
// reader.
type world struct {
	obj  []byte
	refs []metadata.BatchRef
	hwm  int64

	mu       sync.Mutex
	gets     int
	ranges   int
	truncate int // cut the next n whole-object reads in half
}

func newWorld(t *testing.T, chunks, perChunk int) *world {
	t.Helper()
	return newWorldOf(t, chunks, perChunk, segment.CompressionZstd)
}

// newWorldOf is newWorld with chunks of compression c.
func newWorldOf(t *testing.T, chunks, perChunk int, comp segment.Compression) *world {
	t.Helper()
	b := segment.NewBuilder(segment.NewEncoder())
	w := &world{}
	off := int64(0)
	for c := 0; c < chunks; c++ {
		recs := make([]segment.Record, perChunk)
		for i := range recs {
			recs[i] = segment.Record{OffsetDelta: int32(i), Timestamp: int64(1000 + c), Value: []byte(fmt.Sprintf("c%d-r%d", c, i))}
		}
		ref, err := b.Add(segment.ChunkKey{TopicID: 1}, recs, segment.BatchOptions{Compression: comp})
		if err != nil {
			t.Fatal(err)
		}
		w.refs = append(w.refs, metadata.BatchRef{BaseOffset: off, LastOffset: off + int64(perChunk) - 1, Records: int32(perChunk),
			MaxTimestamp: int64(1000 + c), SegmentKey: "seg", SegmentKind: "flush", SegmentAt: time.Now(),
			ByteOffset: ref.Offset, ByteLength: int32(ref.Length)})
		off += int64(perChunk)
	}
	obj, _, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	w.obj = append([]byte(nil), obj...)
	for i := range w.refs {
		w.refs[i].SegmentSize = int64(len(w.obj))
	}
	w.hwm = off
	return w
}

func (w *world) LookupBatches(_ context.Context, _ int64, _ int32, offset, _ int64, limit int) (metadata.PartitionState, []metadata.BatchRef, error) {
	var out []metadata.BatchRef
	for _, r := range w.refs {
		if r.LastOffset >= offset && len(out) < limit {
			out = append(out, r)
		}
	}
	return metadata.PartitionState{HighWatermark: w.hwm}, out, nil
}

func (w *world) PartitionOffsets(context.Context, int64, int32) (metadata.PartitionState, error) {
	return metadata.PartitionState{HighWatermark: w.hwm}, nil
}

func (w *world) FirstBatchAtOrAfter(context.Context, int64, int32, int64) (metadata.BatchRef, bool, error) {
	return metadata.BatchRef{}, false, nil
}

func (w *world) Get(_ context.Context, key string) (io.ReadCloser, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gets++
	if w.truncate > 0 {
		w.truncate--
		// A body cut off in transit: half the bytes, then an error.
		return io.NopCloser(io.MultiReader(bytes.NewReader(w.obj[:len(w.obj)/2]), errReader{io.ErrUnexpectedEOF})), nil
	}
	return io.NopCloser(bytes.NewReader(w.obj)), nil
}

func (w *world) GetRange(_ context.Context, key string, off, n int64) (io.ReadCloser, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ranges++
	if off+n > int64(len(w.obj)) {
		return nil, objectstore.ErrInvalidRange
	}
	return io.NopCloser(bytes.NewReader(w.obj[off : off+n])), nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

type noWatch struct{}

func (noWatch) Watch(PartitionKey) <-chan struct{} { return make(chan struct{}) }

func setup(t *testing.T, w *world, mutate func(*Config)) *Fetcher {
	t.Helper()
	cfg := DefaultConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	f, err := New(cfg, Deps{Index: w, Objects: w, Watcher: noWatch{}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A whole-object read cut off in transit fails the fetch as a storage
// error and is not cached: the next fetch reads the object again.
func TestTruncatedWholeReadIsNotCached(t *testing.T) {
	w := newWorld(t, 3, 10)
	w.truncate = 1
	f := setup(t, w, nil)
	req := Request{TopicID: 1, Offset: 0, MaxRecords: 1000, MaxBytes: 1 << 20}
	if _, err := f.Fetch(context.Background(), req); !errors.Is(err, ErrStorage) {
		t.Fatalf("cut-off read: %v, want ErrStorage", err)
	}
	resp, err := f.Fetch(context.Background(), req)
	if err != nil || len(resp.Records) != 30 {
		t.Fatalf("second fetch: %d records, %v", len(resp.Records), err)
	}
	if w.gets != 2 {
		t.Fatalf("%d whole reads, want 2 (the short one was not kept)", w.gets)
	}
	for i, r := range resp.Records {
		if r.Offset != int64(i) || string(r.Value) != fmt.Sprintf("c%d-r%d", i/10, i%10) {
			t.Fatalf("record %d: offset %d value %q", i, r.Offset, r.Value)
		}
	}
}

// A reader that is behind reads ranges, and neighbouring chunks of one
// object are read with one range request.
func TestBehindReaderCoalescesRanges(t *testing.T) {
	w := newWorld(t, 4, 10)
	w.hwm += 100 // the fetch stops before the head: a catch-up read
	f := setup(t, w, nil)
	resp, err := f.Fetch(context.Background(), Request{TopicID: 1, Offset: 0, MaxRecords: 1000, MaxBytes: 1 << 20})
	if err != nil || len(resp.Records) != 40 {
		t.Fatalf("%d records, %v", len(resp.Records), err)
	}
	if w.gets != 0 || w.ranges != 1 {
		t.Fatalf("%d whole reads and %d range reads, want 0 and 1", w.gets, w.ranges)
	}
	// Decoded chunks are cached: reading again costs no request.
	if _, err := f.Fetch(context.Background(), Request{TopicID: 1, Offset: 5, MaxRecords: 1000, MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if w.ranges != 1 {
		t.Fatalf("%d range reads after a cached fetch", w.ranges)
	}
}

// Records of an uncompressed chunk alias the bytes they are decoded from:
// a chunk read as part of a whole object or of a wider range is copied
// before it is decoded and cached, so a cached chunk, charged for its own
// size, never keeps the whole read alive.
func TestCachedChunksDoNotPinWiderReads(t *testing.T) {
	for _, tc := range []struct {
		name   string
		behind bool
	}{{"whole object at the tail", false}, {"coalesced range behind", true}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorldOf(t, 4, 10, segment.CompressionNone)
			if tc.behind {
				w.hwm += 100
			}
			var reads [][]byte
			f := setup(t, w, nil)
			f.objects = recordingReader{w, &reads}
			resp, err := f.Fetch(context.Background(), Request{TopicID: 1, Offset: 0, MaxRecords: 1000, MaxBytes: 1 << 20})
			if err != nil || len(resp.Records) != 40 {
				t.Fatalf("%d records, %v", len(resp.Records), err)
			}
			if len(reads) != 1 {
				t.Fatalf("%d reads, want 1", len(reads))
			}
			for i, r := range resp.Records {
				if string(r.Value) != fmt.Sprintf("c%d-r%d", i/10, i%10) {
					t.Fatalf("record %d: value %q", i, r.Value)
				}
				if within(r.Value, reads[0]) {
					t.Fatalf("record %d aliases the %d bytes read", i, len(reads[0]))
				}
			}
		})
	}
}

// recordingReader keeps the buffers readAll fills: it hands out readers
// that note the buffer each Read writes into.
type recordingReader struct {
	w     *world
	reads *[][]byte
}

func (r recordingReader) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := r.w.Get(ctx, key)
	return noting{rc, r.reads}, err
}

func (r recordingReader) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	rc, err := r.w.GetRange(ctx, key, off, n)
	return noting{rc, r.reads}, err
}

type noting struct {
	io.ReadCloser
	reads *[][]byte
}

func (n noting) Read(p []byte) (int, error) {
	if len(p) > 1 { // not readAll's one-byte probe past the end
		*n.reads = append(*n.reads, p)
	}
	return n.ReadCloser.Read(p)
}

// within reports whether b's bytes lie inside buf.
func within(b, buf []byte) bool {
	if len(b) == 0 || len(buf) == 0 {
		return false
	}
	p, lo := uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	return p >= lo && p < lo+uintptr(len(buf))
}

func TestLRUBoundsBytes(t *testing.T) {
	var evicted int64
	c := newLRU[int, string](100, func(n int64) { evicted += n })
	for i := 0; i < 10; i++ {
		c.add(i, "v", 30)
	}
	if c.bytes() > 100 || evicted != 7 {
		t.Fatalf("bytes %d, evicted %d", c.bytes(), evicted)
	}
	if _, ok := c.get(9); !ok {
		t.Fatal("newest entry evicted")
	}
	if _, ok := c.get(0); ok {
		t.Fatal("oldest entry kept")
	}
	c.add(99, "too big", 101)
	if _, ok := c.get(99); ok {
		t.Fatal("an entry larger than the cache was kept")
	}
}

// mergeRows turns the world's chunks into index rows of rowChunks chunks
// each, with every batch's base offset written in, as the janitor's merge
// writes them.
func (w *world) mergeRows(rowChunks int) {
	var rows []metadata.BatchRef
	for i, r := range w.refs {
		segment.SetBaseOffset(w.obj[r.ByteOffset:], r.BaseOffset)
		if i%rowChunks == 0 {
			r.Batches, r.SegmentKind = 1, "merged"
			rows = append(rows, r)
			continue
		}
		row := &rows[len(rows)-1]
		row.LastOffset, row.Records, row.ByteLength, row.Batches = r.LastOffset, row.Records+r.Records, row.ByteLength+r.ByteLength, row.Batches+1
		row.MaxTimestamp = max(row.MaxTimestamp, r.MaxTimestamp)
	}
	w.refs = rows
}

// An index row may cover several batches (a merged run): fetches read
// every record at its offset from any offset, and stored-batch fetches
// get one chunk per batch with its offsets.
func TestRowsOfSeveralBatches(t *testing.T) {
	w := newWorld(t, 9, 10)
	w.mergeRows(4) // rows of 4, 4 and 1 chunks
	f := setup(t, w, nil)
	ctx := context.Background()
	for _, from := range []int64{0, 13, 40, 85} {
		resp, err := f.Fetch(ctx, Request{TopicID: 1, Offset: from, MaxRecords: 1000, MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Records) != int(90-from) || resp.NextOffset != 90 {
			t.Fatalf("from %d: %d records, next %d", from, len(resp.Records), resp.NextOffset)
		}
		for i, r := range resp.Records {
			off := from + int64(i)
			if want := fmt.Sprintf("c%d-r%d", off/10, off%10); r.Offset != off || string(r.Value) != want {
				t.Fatalf("from %d: record %d is %q at %d, want %q at %d", from, i, r.Value, r.Offset, want, off)
			}
		}
	}
	cr, err := f.FetchChunks(ctx, Request{TopicID: 1, Offset: 0, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(cr.Chunks) != 9 || cr.NextOffset != 90 {
		t.Fatalf("%d chunks, next %d; want 9 and 90", len(cr.Chunks), cr.NextOffset)
	}
	data := cr.Data
	for i, c := range cr.Chunks {
		h, err := segment.VerifyBatch(data[:c.Size])
		if err != nil || h.BaseOffset != int64(10*i) || c.BaseOffset != int64(10*i) || c.LastOffset != int64(10*i+9) {
			t.Fatalf("chunk %d: %+v, header %+v (%v)", i, c, h, err)
		}
		data = data[c.Size:]
	}
}

// A fetch holds, while it reads, the in-flight budget for the bytes of the
// chunks it found, not its whole max_bytes: many tails asking for much
// and finding little do not exhaust the budget.
func TestFetchReservesWhatItReads(t *testing.T) {
	w := newWorld(t, 3, 10)
	var stored int64
	for _, r := range w.refs {
		stored += int64(r.ByteLength)
	}
	f := setup(t, w, func(c *Config) { c.MaxInflightBytes = 1 << 20 })
	entered, release := make(chan struct{}, 1), make(chan struct{})
	f.objects = blockingReader{w, entered, release}
	type result struct {
		resp *Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := f.Fetch(context.Background(), Request{TopicID: 1, MaxRecords: 1000, MaxBytes: 64 << 20})
		done <- result{resp, err}
	}()
	<-entered
	if used := f.inflight.inUse(); used > stored {
		t.Errorf("a fetch of max_bytes 64 MiB holds %d bytes of the budget while reading %d", used, stored)
	}
	close(release)
	r := <-done
	if r.err != nil || len(r.resp.Records) != 30 {
		t.Fatalf("%v, %v", r.resp, r.err)
	}
	r.resp.Release()
	if used := f.inflight.inUse(); used != 0 {
		t.Fatalf("%d bytes held after release", used)
	}
}

// blockingReader reads from w once release is closed, telling entered
// (once) that a read waits.
type blockingReader struct {
	w       *world
	entered chan struct{}
	release chan struct{}
}

func (b blockingReader) wait() {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-b.release
}

func (b blockingReader) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	b.wait()
	return b.w.Get(ctx, key)
}

func (b blockingReader) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	b.wait()
	return b.w.GetRange(ctx, key, off, n)
}

// An object the agent seeded as it stored it serves the reads of every
// kind (tail, catch-up, stored batches) without a read of the object
// store, and a copy is kept: the caller's buffer is reused after Seed.
func TestSeededObjectNeedsNoRead(t *testing.T) {
	w := newWorld(t, 4, 10)
	f := setup(t, w, nil)
	buf := append([]byte(nil), w.obj...)
	f.Seed("seg", buf)
	clear(buf) // the batcher reuses its buffer
	resp, err := f.Fetch(context.Background(), Request{TopicID: 1, Offset: 5, MaxRecords: 1000, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Release()
	if len(resp.Records) != 35 || string(resp.Records[0].Value) != "c0-r5" {
		t.Fatalf("got %d records, first %q", len(resp.Records), resp.Records[0].Value)
	}
	cr, err := f.FetchChunks(context.Background(), Request{TopicID: 1, Offset: 12, MaxRecords: 1000, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(cr.Data) == 0 {
		t.Fatal("no chunks")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gets != 0 || w.ranges != 0 {
		t.Fatalf("%d whole and %d range reads of a seeded object", w.gets, w.ranges)
	}
}

// Objects too large to be read whole, or larger than the cache, are not
// seeded: a reader reads them from the store.
func TestSeedKeepsToTheBounds(t *testing.T) {
	w := newWorld(t, 4, 10)
	f := setup(t, w, func(c *Config) { c.WholeObjectBytes = int64(len(w.obj)) - 1 })
	f.Seed("seg", w.obj)
	if f.spans.has("seg") {
		t.Fatal("an object above WholeObjectBytes was seeded")
	}
	f = setup(t, w, func(c *Config) { c.ObjectCacheBytes = 0 })
	f.Seed("seg", w.obj)
	if f.spans.has("seg") {
		t.Fatal("an object was seeded with no object cache")
	}
}
