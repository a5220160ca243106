package batcher

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"silt/metadata"
	"silt/objectstore"
	"silt/segment"
)

// Errors returned by Produce.
var (
	// ErrBackpressure: the buffer is full; retry after a short wait.
	ErrBackpressure = errors.New("batcher: buffer full")
	// ErrClosed: the batcher is shutting down.
	ErrClosed = errors.New("batcher: closed")
	// ErrStorage: the segment object could not be written; retriable.
	ErrStorage = errors.New("batcher: object store write failed")
	// ErrTooLarge: one Produce is larger than the whole buffer.
	ErrTooLarge = errors.New("batcher: request larger than the buffer")
)

// Config tunes the batcher.
type Config struct {
	// Linger is how long the oldest buffered record waits for company.
	Linger time.Duration
	// MaxSegmentBytes flushes once this many record bytes are buffered.
	MaxSegmentBytes int
	// MaxBufferBytes bounds buffered plus in-flight record bytes.
	MaxBufferBytes int64
	// MaxInflightFlushes bounds flushes building, writing or committing at once.
	MaxInflightFlushes int
	// FlushTimeout bounds one flush's PUT and commit; it is also the
	// deadline, on Postgres's clock, of the flush's pending segment row.
	FlushTimeout time.Duration
	// UnreadyAfter: flushes failing without a success for longer than this
	// make Ready fail, so that load balancers steer around the agent.
	UnreadyAfter time.Duration
	// KeyPrefix is prepended to segment keys ("segments/").
	KeyPrefix string
	// Compression of record batches.
	Compression segment.Compression
}

// DefaultConfig returns the defaults: linger 100 ms, 8 MiB segments, a
// 64 MiB buffer, four flushes in flight, zstd.
func DefaultConfig() Config {
	return Config{
		Linger:             100 * time.Millisecond,
		MaxSegmentBytes:    8 << 20,
		MaxBufferBytes:     64 << 20,
		MaxInflightFlushes: 4,
		FlushTimeout:       30 * time.Second,
		UnreadyAfter:       10 * time.Second,
		KeyPrefix:          "segments/",
		Compression:        segment.CompressionZstd,
	}
}

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case c.Linger < 0:
		return errors.New("batcher: linger must not be negative")
	case c.MaxSegmentBytes < 1024:
		return errors.New("batcher: max segment bytes must be at least 1 KiB")
	case c.MaxBufferBytes < int64(c.MaxSegmentBytes):
		return fmt.Errorf("batcher: max buffer bytes (%d) must be at least max segment bytes (%d)", c.MaxBufferBytes, c.MaxSegmentBytes)
	case c.MaxInflightFlushes < 1:
		return errors.New("batcher: max in-flight flushes must be at least 1")
	case c.FlushTimeout <= 0:
		return errors.New("batcher: flush timeout must be positive")
	case c.UnreadyAfter <= 0:
		return errors.New("batcher: unready-after must be positive")
	}
	return nil
}

// Putter stores segment objects.
type Putter interface {
	Put(ctx context.Context, key string, r io.Reader, size int64, opts objectstore.PutOptions) error
}

// Committer records segment objects in Postgres: a pending row before the
// object is written, then the commit that indexes it.
type Committer interface {
	RegisterSegment(ctx context.Context, key string, size int64, kind string, ttl time.Duration) (int64, error)
	AbandonSegment(ctx context.Context, id int64) error
	CommitFlush(ctx context.Context, f metadata.Flush) ([]metadata.ChunkResult, error)
}

// Part is records for one partition within a Produce.
type Part struct {
	TopicID   int64
	Partition int32
	Records   []segment.Record
	// ProducerID > 0 makes the part idempotent: BaseSequence is the
	// sequence of its first record, and it is committed as its own chunk.
	ProducerID    int64
	ProducerEpoch int16
	BaseSequence  int32
	// CheckOffset makes the part a conditional append: it commits, as its
	// own chunk, only if the partition's next offset is ExpectedOffset.
	CheckOffset    bool
	ExpectedOffset int64
	// Batch, when set instead of Records, is one ready Kafka RecordBatch
	// v2 (a Kafka client's, as it came): it is stored as its own chunk,
	// byte for byte, with base offset 0 (see segment.Builder.AddRaw). Its
	// records must have offset deltas 0..n-1, and its producer fields must
	// agree with ProducerID, ProducerEpoch and BaseSequence. Submit checks
	// its framing and CRC.
	Batch []byte
}

// ownChunk reports whether the part must be committed as a chunk of its own.
func (p *Part) ownChunk() bool { return p.ProducerID > 0 || p.CheckOffset || p.Batch != nil }

// Result is where a Part's records landed.
type Result struct {
	BaseOffset int64 // offset of the Part's first record
	Duplicate  bool  // an idempotent retry; offsets are the original ones
	// Err: this part failed alone (unknown partition, producer, sequence
	// or epoch, or an offset mismatch); see metadata's chunk errors.
	Err error
}

// waiter is one Produce call waiting for its flush.
type waiter struct {
	parts   []Part
	bytes   int64
	results []Result
	err     error // the whole call failed
	done    chan struct{}
}

// Batcher buffers, flushes and commits.
type Batcher struct {
	cfg       Config
	bucket    Putter
	committer Committer
	written   func(key string, obj []byte)
	logger    *slog.Logger
	metrics   *metrics

	mu       sync.Mutex
	pending  []*waiter
	pendBy   int64     // record bytes in pending
	firstAt  time.Time // when the oldest pending waiter arrived
	inBuffer int64     // pending + in-flight bytes
	closing  bool

	kick     chan struct{}
	slots    chan struct{}
	lastDone chan struct{}
	stopped  chan struct{}
	// builders keeps one segment.Builder (with its zstd encoder and its
	// segment-sized buffers) per flush slot. A sync.Pool would drop them at
	// every garbage collection, and rebuilding them costs more than keeping
	// MaxInflightFlushes of them.
	builders chan *segment.Builder
	entropy  io.Reader
	entMu    sync.Mutex
	runCtx   context.Context

	// Flush outcomes, for Ready.
	healthMu     sync.Mutex
	failingSince time.Time // first failure since the last success; zero when healthy
	lastFailure  time.Time
	lastErr      error
}

// Deps are the batcher's collaborators.
type Deps struct {
	Bucket     Putter
	Committer  Committer
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Written, when set, is called with each flush segment's key and
	// bytes once the object is stored, before its commit (so before any
	// reader can look it up): the fetcher keeps it for the tail readers
	// that will ask for it next, sparing the object store that GET. obj is
	// the batcher's buffer, valid only during the call.
	Written func(key string, obj []byte)
}

// New starts a batcher; ctx bounds nothing but carries values to flushes
// (flushes are not cancelled by it: Close flushes what is left).
func New(ctx context.Context, cfg Config, deps Deps) (*Batcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Bucket == nil || deps.Committer == nil {
		return nil, errors.New("batcher: bucket and committer are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Registerer == nil {
		deps.Registerer = prometheus.NewRegistry()
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	close(done)
	b := &Batcher{
		cfg:       cfg,
		bucket:    deps.Bucket,
		committer: deps.Committer,
		written:   deps.Written,
		logger:    deps.Logger,
		metrics:   m,
		kick:      make(chan struct{}, 1),
		slots:     make(chan struct{}, cfg.MaxInflightFlushes),
		lastDone:  done,
		stopped:   make(chan struct{}),
		entropy:   ulid.Monotonic(rand.Reader, 0),
		runCtx:    context.WithoutCancel(ctx),
		builders:  make(chan *segment.Builder, cfg.MaxInflightFlushes),
	}
	go b.run()
	return b, nil
}

// RecordSize is the bytes a record is charged against the buffer: what
// it holds in memory (segment.RecordMemory), as every memory bound does.
func RecordSize(r *segment.Record) int64 { return segment.RecordMemory(r) }

// Produce buffers parts, waits for their flush and returns one Result per
// part. If ctx ends first, Produce returns ctx's error; the records may
// still be committed.
func (b *Batcher) Produce(ctx context.Context, parts []Part) ([]Result, error) {
	p, err := b.Submit(ctx, parts)
	if err != nil {
		return nil, err
	}
	return p.Wait(ctx)
}

// Pending is a Submit waiting for its flush.
type Pending struct{ w *waiter }

// Done is closed once the flush has been committed or has failed.
func (p *Pending) Done() <-chan struct{} { return p.w.done }

// Wait waits for the flush and returns one Result per part, as Produce
// does. If ctx ends first, Wait returns ctx's error; the records may still
// be committed.
func (p *Pending) Wait(ctx context.Context) ([]Result, error) {
	select {
	case <-p.w.done:
		return p.w.results, p.w.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Submit buffers parts like Produce but returns once they are buffered,
// without waiting for their flush. Parts submitted one after the other
// (each Submit returning before the next begins) commit in that order,
// which is how a connection keeps its pipelined requests in order. The
// parts' bytes must stay untouched until Done is closed.
func (b *Batcher) Submit(ctx context.Context, parts []Part) (*Pending, error) {
	w := &waiter{parts: parts, done: make(chan struct{})}
	for i := range parts {
		for j := range parts[i].Records {
			w.bytes += RecordSize(&parts[i].Records[j])
		}
		if raw := parts[i].Batch; raw != nil {
			if len(parts[i].Records) > 0 {
				return nil, errors.New("batcher: a part has both records and a ready batch")
			}
			h, err := segment.VerifyBatch(raw)
			if err != nil {
				return nil, fmt.Errorf("batcher: part %d: %w", i, err)
			}
			if h.BaseOffset != 0 || h.RecordCount == 0 {
				return nil, fmt.Errorf("batcher: part %d: a ready batch needs base offset 0 and records: %w", i, segment.ErrInvalid)
			}
			w.bytes += int64(len(raw))
		}
	}
	if w.bytes > b.cfg.MaxBufferBytes {
		return nil, fmt.Errorf("%w: %d bytes, buffer holds %d", ErrTooLarge, w.bytes, b.cfg.MaxBufferBytes)
	}
	if err := ctx.Err(); err != nil {
		return nil, err // nobody would wait for these records
	}
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	if b.inBuffer+w.bytes > b.cfg.MaxBufferBytes {
		b.mu.Unlock()
		b.metrics.backpressure.Inc()
		return nil, ErrBackpressure
	}
	b.inBuffer += w.bytes
	if len(b.pending) == 0 {
		b.firstAt = time.Now()
	}
	b.pending = append(b.pending, w)
	b.pendBy += w.bytes
	b.metrics.buffered.Set(float64(b.inBuffer))
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
	return &Pending{w: w}, nil
}

// Close stops accepting records, flushes the buffer and waits for every
// flush to finish, or for ctx to end.
func (b *Batcher) Close(ctx context.Context) error {
	b.mu.Lock()
	b.closing = true
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
	select {
	case <-b.stopped:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("batcher close: %w", ctx.Err())
	}
}

// run is the goroutine that owns the pending buffer.
func (b *Batcher) run() {
	defer close(b.stopped)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		b.mu.Lock()
		var wait time.Duration
		var take []*waiter
		n := len(b.pending)
		switch {
		case n > 0 && (b.closing || b.pendBy >= int64(b.cfg.MaxSegmentBytes) || time.Since(b.firstAt) >= b.cfg.Linger):
			take = b.pending
			b.pending = nil
			b.pendBy = 0
		case n > 0:
			wait = b.cfg.Linger - time.Since(b.firstAt)
		}
		finished := b.closing && n == 0
		b.mu.Unlock()

		if take != nil {
			b.slots <- struct{}{} // waits while MaxInflightFlushes are running
			prev := b.lastDone
			done := make(chan struct{})
			b.lastDone = done
			b.metrics.inflight.Inc()
			go b.flush(take, prev, done)
			continue
		}
		if finished {
			for i := 0; i < cap(b.slots); i++ { // wait for in-flight flushes
				b.slots <- struct{}{}
			}
			return
		}
		if wait > 0 {
			timer.Reset(wait)
		}
		select {
		case <-b.kick:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// chunkPlan is one chunk of a flush and the parts it carries.
type chunkPlan struct {
	key     segment.ChunkKey
	count   int // records of the members
	records []segment.Record
	raw     []byte // a ready batch, stored as it is (Part.Batch)
	opts    segment.BatchOptions
	members []member
	// own: the chunk carries one part that must be committed alone
	// (idempotent or conditional), part.
	own  bool
	part *Part
}

// member locates a part inside a chunk.
type member struct {
	w     *waiter
	part  int
	delta int64 // offset of the part's first record within the chunk
}

// plan groups the waiters' parts into chunks: per partition, consecutive
// plain parts share a chunk; each idempotent or conditional part, and
// each ready batch, is its own.
// Chunks are ordered by (topic, partition), then arrival.
func (b *Batcher) plan(ws []*waiter) []*chunkPlan {
	type pk struct {
		topic int64
		part  int32
	}
	byPart := map[pk][]*chunkPlan{}
	var keys []pk
	for _, w := range ws {
		for i := range w.parts {
			p := &w.parts[i]
			if len(p.Records) == 0 && p.Batch == nil {
				continue
			}
			k := pk{p.TopicID, p.Partition}
			list, seen := byPart[k]
			if !seen {
				keys = append(keys, k)
			}
			var c *chunkPlan
			if !p.ownChunk() && len(list) > 0 && !list[len(list)-1].own {
				c = list[len(list)-1]
			} else {
				c = &chunkPlan{
					key:  segment.ChunkKey{TopicID: p.TopicID, Partition: p.Partition},
					opts: segment.BatchOptions{Compression: b.cfg.Compression},
					own:  p.ownChunk(),
					part: p,
				}
				if p.ProducerID > 0 {
					c.opts.Idempotent = true
					c.opts.ProducerID = p.ProducerID
					c.opts.ProducerEpoch = p.ProducerEpoch
					c.opts.BaseSequence = p.BaseSequence
				}
				c.raw = p.Batch
				byPart[k] = append(list, c)
			}
			c.members = append(c.members, member{w: w, part: i, delta: int64(c.count)})
			c.count += len(p.Records)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].topic != keys[j].topic {
			return keys[i].topic < keys[j].topic
		}
		return keys[i].part < keys[j].part
	})
	var out []*chunkPlan
	for _, k := range keys {
		for _, c := range byPart[k] {
			if c.raw != nil {
				out = append(out, c)
				continue
			}
			// One allocation per chunk, of the right size.
			c.records = make([]segment.Record, 0, c.count)
			for _, m := range c.members {
				c.records = append(c.records, m.w.parts[m.part].Records...)
			}
			for i := range c.records {
				c.records[i].OffsetDelta = int32(i)
			}
			out = append(out, c)
		}
	}
	return out
}

// flush writes and commits one batch of waiters, then answers them.
func (b *Batcher) flush(ws []*waiter, prev <-chan struct{}, done chan<- struct{}) {
	start := time.Now()
	var flushBytes int64
	for _, w := range ws {
		w.results = make([]Result, len(w.parts))
		flushBytes += w.bytes
	}
	defer func() {
		b.mu.Lock()
		b.inBuffer -= flushBytes
		b.metrics.buffered.Set(float64(b.inBuffer))
		b.mu.Unlock()
		b.metrics.inflight.Dec()
		<-b.slots
		for _, w := range ws {
			close(w.done)
		}
	}()

	err := b.writeAndCommit(ws, prev, done)
	b.recordOutcome(err)
	outcome := "ok"
	if err != nil {
		outcome = "error"
		b.logger.Warn("flush failed", "waiters", len(ws), "err", err)
		for _, w := range ws {
			w.err = err
			w.results = nil
		}
	}
	b.metrics.flushes.WithLabelValues(outcome).Inc()
	b.metrics.flushSeconds.Observe(time.Since(start).Seconds())
}

func (b *Batcher) writeAndCommit(ws []*waiter, prev <-chan struct{}, done chan<- struct{}) error {
	ctx, cancel := context.WithTimeout(b.runCtx, b.cfg.FlushTimeout)
	defer cancel()
	return b.writeAndCommitCtx(ctx, ws, prev, done)
}

// writeAndCommitCtx builds, registers, writes and commits one segment of
// ws's parts, committing after prev is closed and closing done then.
func (b *Batcher) writeAndCommitCtx(ctx context.Context, ws []*waiter, prev <-chan struct{}, done chan<- struct{}) error {
	committed := false
	defer func() {
		if !committed {
			<-prev
			close(done)
		}
	}()

	plans := b.plan(ws)
	builder := b.getBuilder()
	defer b.putBuilder(builder)
	var records int
	for _, c := range plans {
		var ref segment.ChunkRef
		var err error
		if c.raw != nil {
			ref, err = builder.AddRaw(c.key, c.raw)
		} else {
			ref, err = builder.Add(c.key, c.records, c.opts)
		}
		if err != nil {
			return fmt.Errorf("build segment: %w", err)
		}
		records += int(ref.Records)
	}
	obj, refs, err := builder.Finish()
	if err != nil {
		return fmt.Errorf("build segment: %w", err)
	}
	key := b.segmentKey()
	// The object is known before it is written: a pending row whose
	// deadline, on Postgres's clock, is a flush timeout away. The commit
	// fails, writing nothing, if it cannot finish before then, so the
	// janitor may delete the object of any flush past its deadline.
	segID, err := b.committer.RegisterSegment(ctx, key, int64(len(obj)), metadata.KindFlush, b.cfg.FlushTimeout)
	if err != nil {
		return fmt.Errorf("register segment %s: %w", key, err)
	}

	putStart := time.Now()
	if err := b.bucket.Put(ctx, key, bytes.NewReader(obj), int64(len(obj)), objectstore.PutOptions{IfNotExists: true}); err != nil {
		b.abandon(segID)
		return fmt.Errorf("%w: put %s: %v", ErrStorage, key, err)
	}
	b.metrics.putSeconds.Observe(time.Since(putStart).Seconds())
	b.metrics.segmentBytes.Observe(float64(len(obj)))
	b.metrics.flushRecords.Observe(float64(records))
	if b.written != nil {
		b.written(key, obj)
	}

	f := metadata.Flush{SegmentID: segID, SegmentSize: int64(len(obj)), Chunks: make([]metadata.Chunk, len(refs))}
	for i, r := range refs {
		c := metadata.Chunk{
			TopicID: r.TopicID, Partition: r.Partition,
			ByteOffset: r.Offset, ByteLength: int32(r.Length),
			Records: r.Records, LastOffsetDelta: r.LastOffsetDelta, MaxTimestamp: r.MaxTimestamp,
		}
		if p := plans[i].part; plans[i].own {
			c.ProducerID, c.ProducerEpoch, c.BaseSequence = p.ProducerID, p.ProducerEpoch, p.BaseSequence
			c.CheckOffset, c.ExpectedOffset = p.CheckOffset, p.ExpectedOffset
		}
		f.Chunks[i] = c
	}
	// Commits run in flush order.
	select {
	case <-prev:
	case <-ctx.Done():
		return fmt.Errorf("commit %s: waiting for the previous flush: %w", key, ctx.Err())
	}
	committed = true
	commitStart := time.Now()
	results, err := b.committer.CommitFlush(ctx, f)
	close(done)
	b.metrics.commitSeconds.Observe(time.Since(commitStart).Seconds())
	b.metrics.commits.Inc()
	if err != nil {
		return fmt.Errorf("commit %s: %w", key, err)
	}
	for i, c := range plans {
		r := results[i]
		for _, m := range c.members {
			res := &m.w.results[m.part]
			res.Err = r.Err
			res.Duplicate = r.Duplicate
			if r.Err == nil {
				res.BaseOffset = r.BaseOffset + m.delta
			}
		}
	}
	return nil
}

// recordOutcome notes a flush's outcome for Ready.
func (b *Batcher) recordOutcome(err error) {
	b.healthMu.Lock()
	defer b.healthMu.Unlock()
	if err == nil {
		b.failingSince, b.lastErr = time.Time{}, nil
		return
	}
	now := time.Now()
	if b.failingSince.IsZero() {
		b.failingSince = now
	}
	b.lastFailure, b.lastErr = now, err
}

// Ready reports whether the agent can complete a flush. It fails while
// flushes have failed, with no success between, for longer than
// UnreadyAfter. Once no flush has failed for UnreadyAfter (a load balancer
// that steered around the agent sends no more), it writes and commits an
// empty probe segment instead, through the same PUT and commit, and
// reports that.
func (b *Batcher) Ready(ctx context.Context) error {
	b.healthMu.Lock()
	since, last, lastErr := b.failingSince, b.lastFailure, b.lastErr
	b.healthMu.Unlock()
	if since.IsZero() || time.Since(since) < b.cfg.UnreadyAfter {
		return nil
	}
	if time.Since(last) < b.cfg.UnreadyAfter {
		return fmt.Errorf("flushes failing for %v: %w", time.Since(since).Round(time.Second), lastErr)
	}
	closed := make(chan struct{})
	close(closed)
	probe := func() error {
		ctx, cancel := context.WithTimeout(ctx, b.cfg.FlushTimeout)
		defer cancel()
		return b.writeAndCommitCtx(ctx, nil, closed, make(chan struct{}))
	}
	err := probe()
	b.recordOutcome(err)
	if err != nil {
		return fmt.Errorf("probe flush: %w", err)
	}
	return nil
}

// abandon gives up a flush's pending segment so the janitor deletes its
// object soon rather than at its deadline; failing that, the deadline does.
func (b *Batcher) abandon(id int64) {
	ctx, cancel := context.WithTimeout(b.runCtx, 5*time.Second)
	defer cancel()
	if err := b.committer.AbandonSegment(ctx, id); err != nil {
		b.logger.Debug("abandon segment", "id", id, "err", err)
	}
}

func (b *Batcher) getBuilder() *segment.Builder {
	select {
	case sb := <-b.builders:
		sb.Reset()
		return sb
	default:
		return segment.NewBuilder(segment.NewEncoder())
	}
}

func (b *Batcher) putBuilder(sb *segment.Builder) {
	select {
	case b.builders <- sb:
	default:
	}
}

// segmentKey returns a fresh key: <prefix><yyyy>/<mm>/<dd>/<ulid>.seg.
func (b *Batcher) segmentKey() string {
	now := time.Now().UTC()
	b.entMu.Lock()
	id := ulid.MustNew(ulid.Timestamp(now), b.entropy)
	b.entMu.Unlock()
	return fmt.Sprintf("%s%04d/%02d/%02d/%s.seg", b.cfg.KeyPrefix, now.Year(), now.Month(), now.Day(), id)
}
