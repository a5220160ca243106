package batcher

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
	"silt/objectstore/mem"
	"silt/segment"
)

// fakeCommitter assigns offsets per partition like CommitFlush, in memory.
type fakeCommitter struct {
	mu      sync.Mutex
	next    map[[2]int64]int64
	flushes []metadata.Flush
	fail    error
	gate    chan struct{} // when set, each commit waits for a receive

	registered int64
	keys       map[int64]string // segment id -> key
	abandoned  []int64
}

func (f *fakeCommitter) RegisterSegment(ctx context.Context, key string, size int64, kind string, ttl time.Duration) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registered++
	if f.keys == nil {
		f.keys = map[int64]string{}
	}
	f.keys[f.registered] = key
	return f.registered, nil
}

func (f *fakeCommitter) AbandonSegment(ctx context.Context, id int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.abandoned = append(f.abandoned, id)
	return nil
}

func (f *fakeCommitter) CommitFlush(ctx context.Context, fl metadata.Flush) ([]metadata.ChunkResult, error) {
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	if f.next == nil {
		f.next = map[[2]int64]int64{}
	}
	f.flushes = append(f.flushes, fl)
	out := make([]metadata.ChunkResult, len(fl.Chunks))
	for i, c := range fl.Chunks {
		k := [2]int64{c.TopicID, int64(c.Partition)}
		out[i].BaseOffset = f.next[k]
		f.next[k] += int64(c.LastOffsetDelta) + 1
	}
	return out, nil
}

func (f *fakeCommitter) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.flushes)
}

// gatedBucket blocks Puts until released and can fail them.
type gatedBucket struct {
	objectstore.Bucket
	mu    sync.Mutex
	puts  int
	fail  error
	gates map[int]chan struct{} // put number -> gate
}

func (g *gatedBucket) Put(ctx context.Context, key string, r io.Reader, size int64, opts objectstore.PutOptions) error {
	g.mu.Lock()
	n := g.puts
	g.puts++
	gate := g.gates[n]
	fail := g.fail
	g.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if fail != nil {
		return fail
	}
	return g.Bucket.Put(ctx, key, r, size, opts)
}

func setup(t *testing.T, cfg Config, c *fakeCommitter) (*Batcher, *gatedBucket) {
	t.Helper()
	return setupWith(t, cfg, c, nil)
}

// setupWith is setup with the Written hook.
func setupWith(t *testing.T, cfg Config, c *fakeCommitter, written func(string, []byte)) (*Batcher, *gatedBucket) {
	t.Helper()
	mb, err := mem.New(context.Background(), mem.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	bucket := &gatedBucket{Bucket: mb, gates: map[int]chan struct{}{}}
	b, err := New(context.Background(), cfg, Deps{Bucket: bucket, Committer: c, Written: written})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return b, bucket
}

func recs(n int, prefix string) []segment.Record {
	out := make([]segment.Record, n)
	for i := range out {
		out[i] = segment.Record{Key: []byte(fmt.Sprint(prefix, i)), Value: bytes.Repeat([]byte{'v'}, 100), Timestamp: int64(1000 + i)}
	}
	return out
}

func TestProduceCommitsAndAssignsOffsets(t *testing.T) {
	c := &fakeCommitter{}
	cfg := DefaultConfig()
	cfg.Linger = time.Millisecond
	b, bucket := setup(t, cfg, c)
	ctx := context.Background()
	res, err := b.Produce(ctx, []Part{
		{TopicID: 1, Partition: 0, Records: recs(3, "a")},
		{TopicID: 2, Partition: 5, Records: recs(2, "b")},
		{TopicID: 1, Partition: 0, Records: recs(4, "c")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].BaseOffset != 0 || res[1].BaseOffset != 0 || res[2].BaseOffset != 3 {
		t.Fatalf("results %+v", res)
	}
	// One object holds both partitions, and it decodes back.
	if c.count() != 1 || bucket.puts != 1 {
		t.Fatalf("%d commits, %d puts; want 1 each", c.count(), bucket.puts)
	}
	fl := c.flushes[0]
	rc, err := bucket.Get(ctx, c.keys[fl.SegmentID])
	if err != nil {
		t.Fatal(err)
	}
	obj, _ := io.ReadAll(rc)
	rc.Close()
	refs, err := segment.ParseObject(obj)
	if err != nil || len(refs) != 2 {
		t.Fatalf("object index: %v %v", refs, err)
	}
	batch, err := segment.DecodeBatch(refs[0].Bytes(obj), segment.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(batch.Records) != 7 || string(batch.Records[3].Key) != "c0" || batch.Records[6].OffsetDelta != 6 {
		t.Fatalf("decoded %d records, key[3]=%q", len(batch.Records), batch.Records[3].Key)
	}
}

// Many concurrent producers: every record gets a unique, contiguous offset.
func TestConcurrentProducersContiguousOffsets(t *testing.T) {
	c := &fakeCommitter{}
	cfg := DefaultConfig()
	cfg.Linger = 2 * time.Millisecond
	cfg.MaxSegmentBytes = 8 << 10
	b, _ := setup(t, cfg, c)
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[int32]map[int64]bool{}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				p := int32((w + i) % 4)
				res, err := b.Produce(context.Background(), []Part{{TopicID: 1, Partition: p, Records: recs(5, "k")}})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[p] == nil {
					seen[p] = map[int64]bool{}
				}
				for j := int64(0); j < 5; j++ {
					if seen[p][res[0].BaseOffset+j] {
						t.Errorf("offset %d of partition %d handed out twice", res[0].BaseOffset+j, p)
					}
					seen[p][res[0].BaseOffset+j] = true
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	total := 0
	for p, offs := range seen {
		for o := int64(0); o < int64(len(offs)); o++ {
			if !offs[o] {
				t.Fatalf("partition %d: offset %d missing (gap)", p, o)
			}
		}
		total += len(offs)
	}
	if total != 8*40*5 {
		t.Fatalf("%d offsets, want %d", total, 8*40*5)
	}
	if c.count() >= 8*40 {
		t.Fatalf("%d commits for %d produces: no batching", c.count(), 8*40)
	}
}

func TestPutFailureFailsWaitersWithoutCommit(t *testing.T) {
	c := &fakeCommitter{}
	cfg := DefaultConfig()
	cfg.Linger = time.Millisecond
	b, bucket := setup(t, cfg, c)
	bucket.fail = errors.New("injected")
	_, err := b.Produce(context.Background(), []Part{{TopicID: 1, Records: recs(1, "x")}})
	if !errors.Is(err, ErrStorage) {
		t.Fatalf("err = %v, want ErrStorage", err)
	}
	if c.count() != 0 {
		t.Fatal("a flush whose PUT failed was committed")
	}
	// Its pending segment was given up, for the janitor to delete.
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.abandoned) != 1 || c.abandoned[0] != c.registered {
		t.Fatalf("abandoned %v of %d registered", c.abandoned, c.registered)
	}
}

// Ready fails once flushes have failed for UnreadyAfter, and recovers
// through a probe flush once failures stop coming.
func TestReadyFollowsFlushOutcomes(t *testing.T) {
	c := &fakeCommitter{fail: fmt.Errorf("tx: %w", metadata.ErrUnavailable)}
	cfg := DefaultConfig()
	cfg.Linger = time.Millisecond
	cfg.UnreadyAfter = 50 * time.Millisecond
	b, _ := setup(t, cfg, c)
	ctx := context.Background()
	if err := b.Ready(ctx); err != nil {
		t.Fatalf("ready before any flush: %v", err)
	}
	produce := func() { _, _ = b.Produce(ctx, []Part{{TopicID: 1, Records: recs(1, "x")}}) }
	produce()
	if err := b.Ready(ctx); err != nil {
		t.Fatalf("one failed flush already made the agent unready: %v", err)
	}
	// Keep failing for longer than the bound.
	waitFor(t, func() bool { produce(); return b.Ready(ctx) != nil })
	if err := b.Ready(ctx); !errors.Is(err, metadata.ErrUnavailable) {
		t.Fatalf("unready with %v", err)
	}
	// The store recovers; with no traffic the probe brings readiness back.
	c.mu.Lock()
	c.fail = nil
	c.mu.Unlock()
	before := c.count()
	waitFor(t, func() bool { return b.Ready(ctx) == nil })
	if c.count() != before+1 || len(c.flushes[before].Chunks) != 0 {
		t.Fatalf("recovered without exactly one empty probe commit: %d commits, was %d", c.count(), before)
	}
}

// A conditional part is committed as a chunk of its own, carrying its
// expected offset.
func TestConditionalPartsGetOwnChunks(t *testing.T) {
	c := &fakeCommitter{}
	cfg := DefaultConfig()
	cfg.Linger = time.Hour
	b, _ := setup(t, cfg, c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = b.Produce(context.Background(), []Part{
			{TopicID: 1, Records: recs(2, "a")},
			{TopicID: 1, Records: recs(2, "b"), CheckOffset: true, ExpectedOffset: 2},
			{TopicID: 1, Records: recs(2, "c")},
		})
	}()
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.pending) == 1 })
	_ = b.Close(context.Background())
	<-done
	chunks := c.flushes[0].Chunks
	if len(chunks) != 3 || !chunks[1].CheckOffset || chunks[1].ExpectedOffset != 2 || chunks[0].CheckOffset || chunks[2].CheckOffset {
		t.Fatalf("chunks %+v", chunks)
	}
}

func TestCommitFailureFailsWaiters(t *testing.T) {
	injected := fmt.Errorf("tx: %w", metadata.ErrUnavailable)
	c := &fakeCommitter{fail: injected}
	cfg := DefaultConfig()
	cfg.Linger = time.Millisecond
	b, _ := setup(t, cfg, c)
	_, err := b.Produce(context.Background(), []Part{{TopicID: 1, Records: recs(1, "x")}})
	if !errors.Is(err, metadata.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

func TestBackpressureWhenBufferFull(t *testing.T) {
	c := &fakeCommitter{gate: make(chan struct{})}
	cfg := DefaultConfig()
	cfg.Linger = 0
	cfg.MaxSegmentBytes = 1024
	cfg.MaxBufferBytes = 4096
	cfg.MaxInflightFlushes = 1
	b, _ := setup(t, cfg, c)
	// Commits are held, so nothing leaves the buffer: accepted produces
	// wait, refused ones return at once.
	const n = 100
	results := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := b.Produce(context.Background(), []Part{{TopicID: 1, Records: recs(4, "x")}})
			results <- err
		}()
	}
	if err := <-results; !errors.Is(err, ErrBackpressure) {
		t.Fatalf("first answer with commits held: %v, want ErrBackpressure", err)
	}
	close(c.gate) // release commits so the accepted ones finish
	accepted := 0
	for i := 1; i < n; i++ {
		switch err := <-results; {
		case err == nil:
			accepted++
		case errors.Is(err, ErrBackpressure):
		default:
			t.Fatalf("produce: %v", err)
		}
	}
	if accepted == 0 {
		t.Fatal("nothing was accepted")
	}
}

// A produce whose context has already ended is not buffered.
func TestProduceWithEndedContext(t *testing.T) {
	c := &fakeCommitter{}
	b, _ := setup(t, DefaultConfig(), c)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Produce(ctx, []Part{{TopicID: 1, Records: recs(1, "x")}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.pending) != 0 || b.inBuffer != 0 {
		t.Fatal("records of an ended produce were buffered")
	}
}

// A slow first PUT does not let a later flush commit before it.
func TestCommitsFollowFlushOrder(t *testing.T) {
	c := &fakeCommitter{}
	cfg := DefaultConfig()
	cfg.Linger = 0
	b, bucket := setup(t, cfg, c)
	gate := make(chan struct{})
	bucket.gates[0] = gate
	first := make(chan []Result, 1)
	go func() {
		res, err := b.Produce(context.Background(), []Part{{TopicID: 1, Records: recs(2, "first")}})
		if err != nil {
			t.Error(err)
		}
		first <- res
	}()
	waitFor(t, func() bool { bucket.mu.Lock(); defer bucket.mu.Unlock(); return bucket.puts == 1 })
	second := make(chan []Result, 1)
	go func() {
		res, err := b.Produce(context.Background(), []Part{{TopicID: 1, Records: recs(3, "second")}})
		if err != nil {
			t.Error(err)
		}
		second <- res
	}()
	waitFor(t, func() bool { bucket.mu.Lock(); defer bucket.mu.Unlock(); return bucket.puts == 2 })
	select {
	case <-second:
		t.Fatal("second flush was acknowledged before the first one's PUT finished")
	default:
	}
	if c.count() != 0 {
		t.Fatal("second flush committed before the first")
	}
	close(gate)
	r1, r2 := <-first, <-second
	if r1[0].BaseOffset != 0 || r2[0].BaseOffset != 2 {
		t.Fatalf("offsets first=%d second=%d, want 0 and 2", r1[0].BaseOffset, r2[0].BaseOffset)
	}
}

func TestCloseFlushesPendingAndRefusesNew(t *testing.T) {
	c := &fakeCommitter{}
	cfg := DefaultConfig()
	cfg.Linger = time.Hour // only Close can flush
	b, _ := setup(t, cfg, c)
	got := make(chan error, 1)
	go func() {
		_, err := b.Produce(context.Background(), []Part{{TopicID: 1, Records: recs(1, "x")}})
		got <- err
	}()
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.pending) == 1 })
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("pending produce failed on close: %v", err)
	}
	if c.count() != 1 {
		t.Fatalf("%d commits after close, want 1", c.count())
	}
	if _, err := b.Produce(context.Background(), []Part{{TopicID: 1, Records: recs(1, "y")}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("produce after close: %v", err)
	}
}

func TestIdempotentPartsGetOwnChunks(t *testing.T) {
	c := &fakeCommitter{}
	cfg := DefaultConfig()
	cfg.Linger = time.Hour
	b, _ := setup(t, cfg, c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = b.Produce(context.Background(), []Part{
			{TopicID: 1, Records: recs(2, "a")},
			{TopicID: 1, Records: recs(2, "b"), ProducerID: 7, BaseSequence: 0},
			{TopicID: 1, Records: recs(2, "c")},
		})
	}()
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.pending) == 1 })
	_ = b.Close(context.Background())
	<-done
	chunks := c.flushes[0].Chunks
	if len(chunks) != 3 || chunks[1].ProducerID != 7 || chunks[0].ProducerID != 0 || chunks[2].ProducerID != 0 {
		t.Fatalf("chunks %+v", chunks)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatal("condition not met within 10s")
		case <-tick.C:
		}
	}
}

// readyBatch encodes records as a client would send them: one RecordBatch
// with base offset 0, here gzip-free (the batcher does not care which codec).
func readyBatch(t *testing.T, n int, prefix string, producerID int64, seq int32) []byte {
	t.Helper()
	opts := segment.BatchOptions{Compression: segment.CompressionZstd}
	if producerID > 0 {
		opts.Idempotent, opts.ProducerID, opts.BaseSequence = true, producerID, seq
	}
	rs := recs(n, prefix)
	for i := range rs {
		rs[i].OffsetDelta = int32(i)
	}
	b, _, err := segment.NewEncoder().AppendBatch(nil, rs, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Ready batches are stored byte for byte as their own chunks, between the
// record parts of the same partition, and commit in order.
func TestReadyBatchesStoredAsTheyAre(t *testing.T) {
	c := &fakeCommitter{}
	cfg := DefaultConfig()
	cfg.Linger = time.Millisecond
	b, bucket := setup(t, cfg, c)
	ctx := context.Background()
	ready := readyBatch(t, 4, "r", 0, 0)
	idem := readyBatch(t, 2, "i", 77, 5)
	res, err := b.Produce(ctx, []Part{
		{TopicID: 1, Partition: 0, Records: recs(3, "a")},
		{TopicID: 1, Partition: 0, Batch: ready},
		{TopicID: 1, Partition: 0, Records: recs(2, "b")},
		{TopicID: 1, Partition: 0, Batch: idem, ProducerID: 77, BaseSequence: 5},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].BaseOffset != 0 || res[1].BaseOffset != 3 || res[2].BaseOffset != 7 || res[3].BaseOffset != 9 {
		t.Fatalf("results %+v", res)
	}
	fl := c.flushes[0]
	if len(fl.Chunks) != 4 || fl.Chunks[3].ProducerID != 77 || fl.Chunks[3].BaseSequence != 5 || fl.Chunks[1].ProducerID != 0 {
		t.Fatalf("chunks %+v", fl.Chunks)
	}
	rc, err := bucket.Get(ctx, c.keys[fl.SegmentID])
	if err != nil {
		t.Fatal(err)
	}
	obj, _ := io.ReadAll(rc)
	rc.Close()
	refs, err := segment.ParseObject(obj)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(refs[1].Bytes(obj), ready) || !bytes.Equal(refs[3].Bytes(obj), idem) {
		t.Fatal("a ready batch was not stored byte for byte")
	}
	if refs[1].Records != 4 || refs[2].Records != 2 {
		t.Fatalf("refs %+v", refs)
	}
}

func TestReadyBatchChecked(t *testing.T) {
	b, _ := setup(t, DefaultConfig(), &fakeCommitter{})
	ctx := context.Background()
	bad := readyBatch(t, 2, "x", 0, 0)
	bad[len(bad)-1] ^= 1
	if _, err := b.Submit(ctx, []Part{{TopicID: 1, Batch: bad}}); !errors.Is(err, segment.ErrCorrupt) {
		t.Fatalf("bad crc: %v", err)
	}
	moved := readyBatch(t, 2, "x", 0, 0)
	segment.SetBaseOffset(moved, 10)
	if _, err := b.Submit(ctx, []Part{{TopicID: 1, Batch: moved}}); !errors.Is(err, segment.ErrInvalid) {
		t.Fatalf("base offset 10: %v", err)
	}
	if _, err := b.Submit(ctx, []Part{{TopicID: 1, Batch: readyBatch(t, 1, "x", 0, 0), Records: recs(1, "y")}}); err == nil {
		t.Fatal("records and a batch in one part were accepted")
	}
}

// Submits that follow one another commit in that order, across flushes in
// flight at once.
func TestSubmitKeepsOrder(t *testing.T) {
	c := &fakeCommitter{}
	cfg := DefaultConfig()
	cfg.Linger = time.Millisecond
	b, bucket := setup(t, cfg, c)
	gate := make(chan struct{})
	bucket.mu.Lock()
	bucket.gates[0] = gate // the first flush's PUT waits
	bucket.mu.Unlock()
	ctx := context.Background()
	var pending []*Pending
	submit := func(n int) {
		for range n {
			p, err := b.Submit(ctx, []Part{{TopicID: 1, Partition: 0, Records: recs(3, fmt.Sprint("s", len(pending), "-"))}})
			if err != nil {
				t.Fatal(err)
			}
			pending = append(pending, p)
		}
	}
	puts := func() int {
		bucket.mu.Lock()
		defer bucket.mu.Unlock()
		return bucket.puts
	}
	waitPuts := func(n int) {
		t.Helper()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		deadline := time.After(10 * time.Second)
		for puts() < n {
			select {
			case <-tick.C:
			case <-deadline:
				t.Fatalf("%d puts, want %d", puts(), n)
			}
		}
	}
	submit(10)
	waitPuts(1) // the first flush is writing
	submit(10)
	waitPuts(2) // the second flush has written and waits to commit after the first
	close(gate)
	for i, p := range pending {
		res, err := p.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := int64(3 * i); res[0].BaseOffset != want {
			t.Fatalf("submit %d at offset %d, want %d", i, res[0].BaseOffset, want)
		}
	}
	if c.count() != 2 {
		t.Fatalf("%d flushes, want 2", c.count())
	}
}

// Written sees each stored flush segment, byte for byte as stored, and
// not the segments whose PUT failed.
func TestWrittenSeesStoredSegments(t *testing.T) {
	c := &fakeCommitter{}
	cfg := DefaultConfig()
	cfg.Linger = time.Millisecond
	var mu sync.Mutex
	seen := map[string][]byte{}
	b, bucket := setupWith(t, cfg, c, func(key string, obj []byte) {
		mu.Lock()
		defer mu.Unlock()
		seen[key] = bytes.Clone(obj)
	})
	ctx := context.Background()
	if _, err := b.Produce(ctx, []Part{{TopicID: 1, Partition: 0, Records: recs(3, "a")}}); err != nil {
		t.Fatal(err)
	}
	key := c.keys[c.flushes[0].SegmentID]
	rc, err := bucket.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := io.ReadAll(rc)
	rc.Close()
	mu.Lock()
	if len(seen) != 1 || !bytes.Equal(seen[key], stored) {
		t.Fatalf("written saw %d segments; the stored one equal: %v", len(seen), bytes.Equal(seen[key], stored))
	}
	mu.Unlock()

	bucket.mu.Lock()
	bucket.fail = errors.New("injected")
	bucket.mu.Unlock()
	if _, err := b.Produce(ctx, []Part{{TopicID: 1, Partition: 0, Records: recs(1, "b")}}); err == nil {
		t.Fatal("produce with a failing PUT succeeded")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 {
		t.Fatalf("written saw %d segments, want only the stored one", len(seen))
	}
}
