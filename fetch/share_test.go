package fetch

import (
	"bytes"
	"context"
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

	mu    sync.Mutex
	reads int   // object reads, whole or ranges
	wide  int   // of them, reads of more than one chunk
	bytes int64 // read
}

func newFlushWorld(t *testing.T, objects, partitions, perChunk int) *flushWorld {
	t.Helper()
	w := &flushWorld{objs: map[string][]byte{}, refs: map[int32][]metadata.BatchRef{}}
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
	return metadata.PartitionState{HighWatermark: w.hwm(p)}, nil
}

func (w *flushWorld) FirstBatchAtOrAfter(context.Context, int64, int32, int64) (metadata.BatchRef, bool, error) {
	return metadata.BatchRef{}, false, nil
}

func (w *flushWorld) Get(_ context.Context, key string) (io.ReadCloser, error) {
	w.count(int64(len(w.objs[key])))
	return io.NopCloser(bytes.NewReader(w.objs[key])), nil
}

func (w *flushWorld) count(n int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reads++
	w.bytes += n
	if n > w.chunk {
		w.wide++
	}
}

func (w *flushWorld) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reads, w.wide, w.bytes = 0, 0, 0
}

func (w *flushWorld) GetRange(_ context.Context, key string, off, n int64) (io.ReadCloser, error) {
	w.count(n)
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

// An object that readers of several partitions want is read once, from
// the first chunk they want to the last, and serves all of them; once they
// have read it, it is let go. Readers one after another never overlap:
// each reads its own chunk.
func TestCatchUpReadersShareObjects(t *testing.T) {
	const objects, partitions, perChunk = 3, 4, 10
	w := newFlushWorld(t, objects, partitions, perChunk)
	f, err := New(DefaultConfig(), Deps{Index: w, Objects: w, Watcher: noWatch{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	chunk := int64(w.refs[0][0].ByteLength)

	// Partitions 1-3 have looked up the first object (as their fetches
	// do before reading); partition 0's read of it is then shared.
	for p := int32(1); p < partitions; p++ {
		f.share.want(PartitionKey{1, p}, w.refs[p][:1])
	}
	for p := int32(0); p < partitions; p++ {
		var values []string
		if p%2 == 0 {
			resp, err := f.FetchBatches(ctx, Request{TopicID: 1, Partition: p, MaxBytes: chunk})
			if err != nil {
				t.Fatal(err)
			}
			for _, sb := range resp.Batches {
				b, err := segment.DecodeBatch(sb.Bytes, segment.DecodeOptions{})
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range b.Records {
					values = append(values, string(r.Value))
				}
			}
			resp.Release()
		} else {
			resp, err := f.Fetch(ctx, Request{TopicID: 1, Partition: p, MaxRecords: perChunk, MaxBytes: 2*chunk - 1})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range resp.Records {
				values = append(values, string(r.Value))
			}
			resp.Release()
		}
		if len(values) != perChunk {
			t.Fatalf("partition %d: %d records", p, len(values))
		}
		checkPage(t, p, 0, values, perChunk)
	}
	if w.reads != 1 || w.bytes != partitions*chunk {
		t.Fatalf("%d reads of %d bytes of the first object, want 1 of its %d chunks' bytes", w.reads, w.bytes, partitions)
	}
	if n := f.share.heldBytes(); n != 0 || f.inflight.inUse() != 0 {
		t.Fatalf("%d bytes still shared, %d in flight, once every partition read its chunk", n, f.inflight.inUse())
	}

	// Readers one after another, on a fresh agent: each wants the first
	// object alone when it reads it. Ranges.
	w.reset()
	f, err = New(DefaultConfig(), Deps{Index: w, Objects: w, Watcher: noWatch{}})
	if err != nil {
		t.Fatal(err)
	}
	for p := int32(0); p < partitions; p++ {
		resp, err := f.FetchBatches(ctx, Request{TopicID: 1, Partition: p, MaxBytes: chunk})
		if err != nil || len(resp.Batches) != 1 {
			t.Fatalf("partition %d: %v", p, err)
		}
		resp.Release()
	}
	if w.reads != partitions || w.wide != 0 {
		t.Fatalf("%d reads, %d of more than a chunk; want %d, 0", w.reads, w.wide, partitions)
	}
}

// Readers of every partition catching up together (in rounds, each
// reader's next page after every reader's last one) read each record where
// it belongs, and each object once, in one read, but for the first page's
// objects, read before the readers know of each other: there, their own
// ranges and perhaps a shared one, never more than twice those chunks.
func TestConcurrentCatchUpReadsObjectsOnce(t *testing.T) {
	const objects, partitions, perChunk = 12, 8, 20
	w := newFlushWorld(t, objects, partitions, perChunk)
	f, err := New(DefaultConfig(), Deps{Index: w, Objects: w, Watcher: noWatch{}})
	if err != nil {
		t.Fatal(err)
	}
	chunk := int64(w.refs[0][0].ByteLength)
	offsets := make([]int64, partitions)
	for round := 0; offsets[0] < w.hwm(0); round++ {
		var wg sync.WaitGroup
		for p := range int32(partitions) {
			wg.Go(func() {
				resp, err := f.FetchBatches(context.Background(), Request{TopicID: 1, Partition: p, Offset: offsets[p], MaxBytes: 2 * chunk})
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Release()
				var values []string
				for _, sb := range resp.Batches {
					b, err := segment.DecodeBatch(sb.Bytes, segment.DecodeOptions{})
					if err != nil {
						t.Error(err)
						return
					}
					for _, r := range b.Records {
						values = append(values, string(r.Value))
					}
				}
				checkPage(t, p, offsets[p], values, perChunk)
				offsets[p] = resp.NextOffset
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	total := int64(objects*partitions) * chunk // the chunks' bytes
	first := int64(2*partitions) * chunk       // of the first page's two objects
	t.Logf("%d reads, %d of several chunks: %.2f chunk bytes read per chunk byte", w.reads, w.wide, float64(w.bytes)/float64(total))
	if w.wide < objects-2 || w.wide > objects+2 || w.bytes > total+first {
		t.Fatalf("%d reads of several chunks for %d objects, %d bytes read of %d", w.wide, objects, w.bytes, total)
	}
	if n := f.share.heldBytes(); n != 0 || f.inflight.inUse() != 0 {
		t.Fatalf("%d bytes still shared, %d in flight, at the end", n, f.inflight.inUse())
	}
}
