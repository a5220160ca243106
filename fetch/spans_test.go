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

	"silt/metadata"
	"silt/objectstore"
	"silt/segment"
)

// flushWorld is several flush objects, each holding one chunk of every
// partition, as flushes of a topic written round the partitions leave
// them; the objects are old (no tail sharing through the object cache).
type flushWorld struct {
	objs map[string][]byte
	refs map[int32][]metadata.BatchRef // per partition, in offset order

	chunk int64 // every chunk's size

	mu     sync.Mutex
	reads  int   // object reads, whole or ranges
	wide   int   // of them, reads of more than one chunk
	bytes  int64 // read
	perObj map[string]int
	fail   map[string]int // fail the next n reads of an object
	gone   map[string]bool
	start  int64 // the log start offset PartitionOffsets reports
	onRead func()
}

func newFlushWorld(t *testing.T, objects, partitions, perChunk int) *flushWorld {
	t.Helper()
	w := &flushWorld{objs: map[string][]byte{}, refs: map[int32][]metadata.BatchRef{}, perObj: map[string]int{}, fail: map[string]int{}, gone: map[string]bool{}}
	for o := range objects {
		b := segment.NewBuilder(segment.NewEncoder())
		key := fmt.Sprintf("seg-%d", o)
		var refs []metadata.BatchRef
		for p := range partitions {
			recs := make([]segment.Record, perChunk)
			for i := range recs {
				recs[i] = segment.Record{OffsetDelta: int32(i), Timestamp: 1000, Value: []byte(fmt.Sprintf("p%02d-o%02d-r%02d", p, o, i))}
			}
			ref, err := b.Add(segment.ChunkKey{TopicID: 1, Partition: int32(p)}, recs, segment.BatchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			base := int64(o * perChunk)
			refs = append(refs, metadata.BatchRef{BaseOffset: base, LastOffset: base + int64(perChunk) - 1, Records: int32(perChunk),
				SegmentKey: key, SegmentKind: "flush", SegmentAt: time.Now().Add(-time.Hour), ByteOffset: ref.Offset, ByteLength: int32(ref.Length), Batches: 1})
		}
		obj, _, err := b.Finish()
		if err != nil {
			t.Fatal(err)
		}
		w.objs[key] = bytes.Clone(obj)
		for p, r := range refs {
			r.SegmentSize = int64(len(obj))
			w.refs[int32(p)] = append(w.refs[int32(p)], r)
			if w.chunk != 0 && w.chunk != int64(r.ByteLength) {
				t.Fatal("chunks of different sizes")
			}
			w.chunk = int64(r.ByteLength)
		}
	}
	return w
}

func (w *flushWorld) hwm(p int32) int64 { rs := w.refs[p]; return rs[len(rs)-1].LastOffset + 1 }

func (w *flushWorld) LookupBatches(_ context.Context, _ int64, p int32, offset, maxBytes int64, limit int) (metadata.PartitionState, []metadata.BatchRef, error) {
	var out []metadata.BatchRef
	var before int64
	for _, r := range w.refs[p] {
		if r.LastOffset >= offset && len(out) < limit && (before < maxBytes || before == 0) {
			out = append(out, r)
			before += int64(r.ByteLength)
		}
	}
	return metadata.PartitionState{HighWatermark: w.hwm(p)}, out, nil
}

func (w *flushWorld) PartitionOffsets(_ context.Context, _ int64, p int32) (metadata.PartitionState, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return metadata.PartitionState{HighWatermark: w.hwm(p), LogStartOffset: w.start}, nil
}

func (w *flushWorld) FirstBatchAtOrAfter(context.Context, int64, int32, int64) (metadata.BatchRef, bool, error) {
	return metadata.BatchRef{}, false, nil
}

func (w *flushWorld) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	return w.GetRange(ctx, key, 0, int64(len(w.objs[key])))
}

// count counts a read of n bytes of key, or fails it.
func (w *flushWorld) count(key string, n int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.onRead != nil {
		w.onRead()
	}
	switch {
	case w.gone[key]:
		return objectstore.ErrNotExist
	case w.fail[key] > 0:
		w.fail[key]--
		return errors.New("injected read failure")
	}
	w.reads++
	w.perObj[key]++
	w.bytes += n
	if n > w.chunk {
		w.wide++
	}
	return nil
}

func (w *flushWorld) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reads, w.wide, w.bytes = 0, 0, 0
	clear(w.perObj)
}

func (w *flushWorld) objReads(key string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.perObj[key]
}

func (w *flushWorld) GetRange(_ context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if err := w.count(key, n); err != nil {
		return nil, err
	}
	obj := w.objs[key]
	if off+n > int64(len(obj)) {
		return nil, objectstore.ErrInvalidRange
	}
	return io.NopCloser(bytes.NewReader(obj[off : off+n])), nil
}

// checkPage checks that values are partition p's records from offset on.
func checkPage(t *testing.T, p int32, from int64, values []string, perChunk int) {
	t.Helper()
	for i, v := range values {
		off := from + int64(i)
		if want := fmt.Sprintf("p%02d-o%02d-r%02d", p, off/int64(perChunk), off%int64(perChunk)); v != want {
			t.Fatalf("partition %d from %d: record %d is %q, want %q", p, from, i, v, want)
		}
	}
}

// setupSpans is a fetcher over w with the object-span cache bounded at
// cacheBytes (0: the default).
func setupSpans(t *testing.T, w *flushWorld, cacheBytes int64) *Fetcher {
	t.Helper()
	cfg := DefaultConfig()
	if cacheBytes > 0 {
		cfg.ObjectCacheBytes = cacheBytes
	}
	f, err := New(cfg, Deps{Index: w, Objects: w, Watcher: noWatch{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.spans.reads.Wait)
	return f
}

// page reads one page of partition p from offset, in one of the three
// forms (by how), and returns its values and the next offset.
func page(t *testing.T, f *Fetcher, how int, p int32, offset, maxBytes int64) ([]string, int64, error) {
	t.Helper()
	ctx := context.Background()
	req := Request{TopicID: 1, Partition: p, Offset: offset, MaxBytes: maxBytes, MaxRecords: 1 << 20}
	var values []string
	decode := func(raw []byte) error {
		for len(raw) > 0 {
			_, b, next, err := segment.NextBatch(raw)
			if err != nil {
				return err
			}
			d, err := segment.DecodeBatch(b, segment.DecodeOptions{})
			if err != nil {
				return err
			}
			for _, r := range d.Records {
				values = append(values, string(r.Value))
			}
			raw = next
		}
		return nil
	}
	switch how % 3 {
	case 0: // stored batches (HTTP)
		resp, err := f.FetchBatches(ctx, req)
		if err != nil {
			return nil, 0, err
		}
		defer resp.Release()
		for _, sb := range resp.Batches {
			if err := decode(sb.Bytes); err != nil {
				return nil, 0, err
			}
		}
		return values, resp.NextOffset, nil
	case 1: // chunks (Kafka)
		resp, err := f.FetchChunks(ctx, req)
		if err != nil {
			return nil, 0, err
		}
		if err := decode(resp.Data); err != nil {
			return nil, 0, err
		}
		return values, resp.NextOffset, nil
	default: // records
		resp, err := f.Fetch(ctx, req)
		if err != nil {
			return nil, 0, err
		}
		defer resp.Release()
		for _, r := range resp.Records {
			values = append(values, string(r.Value))
		}
		return values, resp.NextOffset, nil
	}
}

// idle waits for the span reads under way (reads ahead) and checks that no
// span is pinned and nothing is in flight.
func idle(t *testing.T, f *Fetcher) {
	t.Helper()
	f.spans.reads.Wait()
	if n := f.spans.pinned(); n != 0 || f.inflight.inUse() != 0 {
		t.Fatalf("%d bytes of spans pinned, %d in flight, with no fetch under way", n, f.inflight.inUse())
	}
	if used := f.spans.bytes(); used > f.spans.max {
		t.Fatalf("the object-span cache holds %d bytes, above its bound %d", used, f.spans.max)
	}
}

// An object that readers of several partitions want is read once, whole,
// and serves all of them, in each of the three fetch forms. Readers one
// after another never overlap: each reads its own chunk of it.
func TestCatchUpReadersShareObjects(t *testing.T) {
	const objects, partitions, perChunk = 3, 4, 10
	w := newFlushWorld(t, objects, partitions, perChunk)
	f := setupSpans(t, w, 0)

	// Partitions 1-3 have looked up the first object (as their fetches
	// do before reading); partition 0's read of it is then shared.
	for p := int32(1); p < partitions; p++ {
		f.spans.want(PartitionKey{1, p}, w.refs[p][:1])
	}
	for p := int32(0); p < partitions; p++ {
		maxBytes := w.chunk
		if p%3 == 2 {
			maxBytes = 2*w.chunk - 1 // records are priced by their size, not their batch's
		}
		values, next, err := page(t, f, int(p), p, 0, maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(values) != perChunk || next != perChunk {
			t.Fatalf("partition %d: %d records, next %d", p, len(values), next)
		}
		checkPage(t, p, 0, values, perChunk)
	}
	idle(t, f)
	if n := w.objReads("seg-0"); n != 1 || w.wide < 1 {
		t.Fatalf("%d reads of the first object, want 1, whole", n)
	}

	// Readers one after another, on a fresh agent: each wants the first
	// object alone when it reads it. Its own range.
	w.reset()
	f = setupSpans(t, w, 0)
	for p := int32(0); p < partitions; p++ {
		if _, _, err := page(t, f, 0, p, 0, w.chunk); err != nil {
			t.Fatal(err)
		}
	}
	idle(t, f)
	if n := w.objReads("seg-0"); n != partitions {
		t.Fatalf("%d reads of the first object, want one per partition", n)
	}
}

// catchUp reads every partition of w from offset 0 to its end, in rounds
// (every partition's next page after every one's last), the partitions of
// a round at once, each in the form i%3 when mixed (else stored batches),
// and checks every record.
func catchUp(t *testing.T, f *Fetcher, w *flushWorld, partitions, perChunk int, maxBytes int64, mixed bool, each func()) {
	t.Helper()
	offsets := make([]int64, partitions)
	for round := 0; ; round++ {
		if round > 10*len(w.objs)*partitions {
			t.Fatal("catch-up makes no progress")
		}
		done := true
		var wg sync.WaitGroup
		for p := range int32(partitions) {
			if offsets[p] >= w.hwm(p) {
				continue
			}
			done = false
			wg.Go(func() {
				how := 0
				if mixed {
					how = int(p)
				}
				values, next, err := page(t, f, how, p, offsets[p], maxBytes)
				if err != nil {
					t.Error(err)
					return
				}
				if len(values) == 0 {
					t.Errorf("partition %d: no records from %d", p, offsets[p])
					return
				}
				checkPage(t, p, offsets[p], values, perChunk)
				offsets[p] = next
			})
		}
		wg.Wait()
		if t.Failed() || done {
			return
		}
		if each != nil {
			each()
		}
	}
}

// Readers of every partition catching up together read each record where
// it belongs, and each object once, whole, but for the first page's
// objects, read before the readers know of each other: there, their own
// ranges and perhaps one whole read. Small pages (as Kafka consumers ask,
// a chunk or two per partition) get the same reads.
func TestConcurrentCatchUpReadsObjectsOnce(t *testing.T) {
	const objects, partitions, perChunk = 12, 8, 20
	for _, pageChunks := range []int64{1, 2, 5} {
		t.Run(fmt.Sprintf("%d chunks a page", pageChunks), func(t *testing.T) {
			w := newFlushWorld(t, objects, partitions, perChunk)
			f := setupSpans(t, w, 0)
			catchUp(t, f, w, partitions, perChunk, pageChunks*w.chunk, true, nil)
			idle(t, f)
			total := int64(objects*partitions) * w.chunk
			t.Logf("%d reads, %d of several chunks: %.2f bytes read per chunk byte", w.reads, w.wide, float64(w.bytes)/float64(total))
			for o := range objects {
				n := w.objReads(fmt.Sprintf("seg-%d", o))
				if o > int(pageChunks) && n != 1 || n > partitions+1 {
					t.Errorf("object %d read %d times", o, n)
				}
			}
		})
	}
}

// The object-span cache never holds more than its bound, reads ahead only
// within it, and a catch-up with room for only a few objects still reads
// most objects once: fetches end before an object there is no room for,
// so that the readers move through the objects held together.
func TestReadAheadBoundedByBudget(t *testing.T) {
	const objects, partitions, perChunk = 16, 6, 20
	w := newFlushWorld(t, objects, partitions, perChunk)
	size := int64(len(w.objs["seg-0"]))
	bound := 3 * size
	f := setupSpans(t, w, bound)
	var over int64
	w.onRead = func() { // under w.mu: never f's lock inside it
		if used := f.spans.bytes(); used > bound {
			over = used
		}
	}
	// Every reader has looked up its first pages before any read (else
	// the first page is read before the readers know of each other,
	// mostly as their own ranges: see TestConcurrentCatchUpReadsObjectsOnce).
	for p := range int32(partitions) {
		f.spans.want(PartitionKey{1, p}, w.refs[p])
	}
	catchUp(t, f, w, partitions, perChunk, 8*w.chunk, false, func() {
		if used := f.spans.bytes(); used > bound {
			t.Errorf("the object-span cache holds %d bytes, above its bound %d", used, bound)
		}
	})
	idle(t, f)
	if over > 0 {
		t.Fatalf("a read began with %d bytes of spans held, above the bound %d", over, bound)
	}
	t.Logf("%d reads, %d of several chunks: %v", w.reads, w.wide, w.perObj)
	if w.wide < objects/2 || w.reads > objects+partitions {
		t.Fatalf("%d reads (%d whole) for %d objects of %d partitions: the readers did not share", w.reads, w.wide, objects, partitions)
	}
}

// Spans are evicted only once no partition wants them and no reader
// holds them; an evicted span in use keeps its bytes counted until its
// last reader lets go.
func TestSpanEviction(t *testing.T) {
	read := func(_ context.Context, _ string, lo, hi, _ int64, _ string) ([]byte, error) {
		return make([]byte, hi-lo), nil
	}
	c := newSpanCache(200, 100, read)
	a, b := PartitionKey{1, 0}, PartitionKey{1, 1}
	ref := func(key string) []metadata.BatchRef {
		return []metadata.BatchRef{{SegmentKey: key, ByteOffset: 0, ByteLength: 50, SegmentSize: 100}}
	}
	get := func(k PartitionKey, key string) (*span, bool) {
		t.Helper()
		s, refused := c.acquire(context.Background(), k, key, 100, 0, 50, modeCatchUp)
		if s != nil {
			if _, _, err := c.wait(context.Background(), s); err != nil {
				t.Fatal(err)
			}
		}
		return s, refused
	}
	for _, key := range []string{"x", "y", "z"} {
		c.want(a, ref(key))
		c.want(b, ref(key))
	}
	x, _ := get(a, "x")
	y, _ := get(a, "y")
	if x == nil || y == nil || x.hi != 100 || c.bytes() != 200 {
		t.Fatalf("spans %v %v, %d bytes held; want two whole objects, 200 bytes", x, y, c.bytes())
	}
	c.release(x)
	c.served(a, "x")
	// x is still wanted by b: no room for z.
	if z, refused := get(a, "z"); z != nil || !refused {
		t.Fatal("a span was read past the bound, or a wanted one evicted")
	}
	c.served(b, "x")
	z, _ := get(a, "z")
	if z == nil || c.has("x") || !c.has("y") || c.bytes() != 200 {
		t.Fatalf("x, unwanted and unpinned, not evicted for z (%d bytes held)", c.bytes())
	}
	// y, pinned, is evicted once unwanted but keeps its bytes until let go.
	c.served(a, "y")
	c.served(b, "y")
	c.served(a, "z")
	c.served(b, "z")
	c.release(z)
	c.want(a, ref("w"))
	c.want(b, ref("w"))
	w, _ := get(a, "w")
	if w == nil || !c.has("y") {
		t.Fatal("z, unwanted and unpinned, not evicted for w before the pinned y")
	}
	c.served(a, "w")
	c.served(b, "w")
	c.release(w)
	c.want(a, ref("v"))
	c.want(b, ref("v"))
	c.want(a, ref("u"))
	c.want(b, ref("u"))
	v, _ := get(a, "v")
	if v == nil || c.bytes() != 200 {
		t.Fatalf("v not read in w's room (%d bytes held)", c.bytes())
	}
	if u, refused := get(a, "u"); u != nil || !refused {
		t.Fatal("the pinned y was evicted, or its bytes not counted")
	}
	c.release(y)
	c.release(v)
	if c.pinned() != 0 {
		t.Fatal("spans still pinned")
	}
}

// A span whose read fails is not kept: the fetch fails with a storage
// error, and the next one reads again.
func TestFailedSpanReadIsNotCached(t *testing.T) {
	const objects, partitions, perChunk = 2, 4, 10
	w := newFlushWorld(t, objects, partitions, perChunk)
	f := setupSpans(t, w, 0)
	for p := int32(1); p < partitions; p++ {
		f.spans.want(PartitionKey{1, p}, w.refs[p][:1])
	}
	w.fail["seg-0"] = 1
	if _, _, err := page(t, f, 0, 0, 0, w.chunk); !errors.Is(err, ErrStorage) {
		t.Fatalf("fetch over a failed read: %v, want ErrStorage", err)
	}
	f.spans.reads.Wait()
	if f.spans.has("seg-0") || f.spans.pinned() != 0 {
		t.Fatal("a failed read was kept")
	}
	values, _, err := page(t, f, 0, 0, 0, w.chunk)
	if err != nil || len(values) != perChunk {
		t.Fatalf("fetch after a failed read: %d records, %v", len(values), err)
	}
	checkPage(t, 0, 0, values, perChunk)
	idle(t, f)
}

// An object that retention deleted between the lookup and a shared or
// read-ahead span read surfaces as ErrOffsetOutOfRange, in every form,
// and nothing of it is kept.
func TestDeletedObjectUnderSpanIsOutOfRange(t *testing.T) {
	const objects, partitions, perChunk = 3, 4, 10
	for how := range 3 {
		w := newFlushWorld(t, objects, partitions, perChunk)
		f := setupSpans(t, w, 0)
		for p := int32(1); p < partitions; p++ {
			f.spans.want(PartitionKey{1, p}, w.refs[p][:1])
		}
		// The index still names seg-0 (the lookup came first), but it is
		// gone and the log starts past it.
		w.gone["seg-0"], w.start = true, perChunk
		_, _, err := page(t, f, how, 0, 0, w.chunk)
		var oor *OutOfRangeError
		if !errors.As(err, &oor) || !errors.Is(err, ErrOffsetOutOfRange) || oor.LogStartOffset != perChunk {
			t.Fatalf("form %d: fetch of a deleted object: %v, want ErrOffsetOutOfRange", how, err)
		}
		f.spans.reads.Wait()
		if f.spans.has("seg-0") {
			t.Fatalf("form %d: the failed span was kept", how)
		}
		idle(t, f)
	}
}
