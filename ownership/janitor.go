package ownership

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"golang.org/x/sync/errgroup"

	"silt/metadata"
	"silt/objectstore"
	"silt/segment"
)

// JanitorStore is what the janitor needs of the metadata store.
type JanitorStore interface {
	GetTopicByID(ctx context.Context, id int64) (metadata.Topic, error)
	Partitions(ctx context.Context, topicID int64) ([]metadata.PartitionInfo, error)
	ListBatches(ctx context.Context, topicID int64, partition int32, offset int64, limit int) ([]metadata.BatchRef, error)
	AdvanceLogStart(ctx context.Context, agentID string, l metadata.Lease, newStart int64) (int64, error)
	SwapBatches(ctx context.Context, agentID string, l metadata.Lease, old []metadata.BatchRef, seg metadata.NewSegment, chunks []metadata.NewChunk) error
	MarkUnreferenced(ctx context.Context, minAge time.Duration, limit int) (int64, error)
	TakeUnreferenced(ctx context.Context, grace time.Duration, limit int) ([]string, error)
	KnownSegments(ctx context.Context, keys []string) (map[string]bool, error)
	TryLock(ctx context.Context, key int64, fn func(ctx context.Context) error) (bool, error)
}

// orphanLockKey serializes orphan scans across agents.
const orphanLockKey int64 = 0x73696c746f7270 // "siltorp"

// maxIndexRows bounds the index rows one duty reads for a partition.
const maxIndexRows = 100_000

// janitor runs the owner's duties from one goroutine.
type janitor struct {
	o      *Owner
	cfg    JanitorConfig
	passMu sync.Mutex // one pass at a time (the loop, or a test driving it)

	due       map[dutyKey]time.Time    // next visit per partition and duty
	compacted map[metadata.Lease]int64 // high watermark at the last clean compaction
	lastGC    time.Time
	lastScan  time.Time

	entMu   sync.Mutex
	entropy io.Reader
}

type dutyKey struct {
	lease metadata.Lease
	duty  string
}

func newJanitor(o *Owner) *janitor {
	return &janitor{o: o, cfg: o.cfg.Janitor, due: map[dutyKey]time.Time{}, compacted: map[metadata.Lease]int64{},
		entropy: ulid.Monotonic(rand.Reader, 0), lastScan: time.Now()}
}

// run visits owned partitions and runs due duties until ctx ends.
func (j *janitor) run(ctx context.Context) {
	tick := time.NewTicker(j.tickEvery())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		j.pass(ctx)
	}
}

func (j *janitor) tickEvery() time.Duration {
	d := min(j.cfg.RetentionInterval, j.cfg.MergeInterval, j.cfg.CompactInterval, j.cfg.GCInterval) / 4
	return max(d, 10*time.Millisecond)
}

// RunJanitor runs every duty once now, whatever their schedules; tests
// and operators use it to drive the janitor.
func (o *Owner) RunJanitor(ctx context.Context) {
	j := o.jan
	j.passMu.Lock()
	clear(j.due)
	j.lastGC, j.lastScan = time.Time{}, time.Time{}
	j.passMu.Unlock()
	j.pass(ctx)
}

func (j *janitor) pass(ctx context.Context) {
	j.passMu.Lock()
	defer j.passMu.Unlock()
	now := time.Now()
	leases := j.o.Leases()
	held := map[metadata.Lease]bool{}
	topics := map[int64]metadata.Topic{}
	parts := map[int64][]metadata.PartitionInfo{}
	var overdue int64
	var pending int
	for _, l := range leases {
		held[l] = true
		if ctx.Err() != nil {
			return
		}
		t, ok := topics[l.TopicID]
		if !ok {
			var err error
			if t, err = j.o.store.GetTopicByID(ctx, l.TopicID); err != nil {
				continue // deleted meanwhile
			}
			topics[l.TopicID] = t
			if parts[l.TopicID], err = j.o.store.Partitions(ctx, l.TopicID); err != nil {
				continue
			}
		}
		if int(l.Partition) >= len(parts[l.TopicID]) {
			continue
		}
		p := parts[l.TopicID][l.Partition]
		if j.isDue(l, "retention", now, j.cfg.RetentionInterval) {
			o, err := j.retention(ctx, l, t, p)
			j.record("retention", err)
			overdue += o
		}
		if t.Config.Compacted() {
			if j.isDue(l, "compact", now, j.cfg.CompactInterval) {
				j.record("compact", j.compact(ctx, l, t, p))
			}
		} else if j.isDue(l, "merge", now, j.cfg.MergeInterval) {
			n, err := j.merge(ctx, l, p)
			j.record("merge", err)
			pending += n
		}
	}
	j.o.metrics.retentionOver.Set(float64(overdue))
	j.o.metrics.mergePending.Set(float64(pending))
	// Forget partitions no longer held.
	for k := range j.due {
		if !held[k.lease] {
			delete(j.due, k)
		}
	}
	for l := range j.compacted {
		if !held[l] {
			delete(j.compacted, l)
		}
	}
	if now.Sub(j.lastGC) >= j.cfg.GCInterval {
		j.lastGC = now
		j.record("gc", j.gc(ctx))
	}
	if now.Sub(j.lastScan) >= j.cfg.OrphanInterval {
		j.lastScan = now
		j.record("orphans", j.orphans(ctx))
	}
}

func (j *janitor) isDue(l metadata.Lease, duty string, now time.Time, every time.Duration) bool {
	k := dutyKey{l, duty}
	if next, ok := j.due[k]; ok && now.Before(next) {
		return false
	}
	j.due[k] = now.Add(every)
	return true
}

func (j *janitor) record(duty string, err error) {
	outcome := "ok"
	switch {
	case err == nil:
	case errors.Is(err, metadata.ErrFenced):
		outcome = "fenced"
		j.o.logger.Info("janitor fenced", "duty", duty, "err", err)
	default:
		outcome = "error"
		j.o.logger.Warn("janitor duty failed", "duty", duty, "err", err)
	}
	j.o.metrics.runs.WithLabelValues(duty, outcome).Inc()
}

// retention advances the log start past chunks older than retention.ms
// and past the oldest chunks while the partition exceeds retention.bytes.
// It returns the bytes still past policy (0 when caught up).
func (j *janitor) retention(ctx context.Context, l metadata.Lease, t metadata.Topic, p metadata.PartitionInfo) (int64, error) {
	if !t.Config.Deletes() {
		return 0, nil
	}
	ms, maxBytes := t.Config.RetentionMs, t.Config.RetentionBytes
	over := int64(0)
	if maxBytes > 0 {
		over = p.TotalBytes - maxBytes
	}
	if ms <= 0 && over <= 0 {
		return 0, nil
	}
	cutoff := time.Now().UnixMilli() - ms
	refs, err := j.o.store.ListBatches(ctx, l.TopicID, l.Partition, p.LogStartOffset, maxIndexRows)
	if err != nil {
		return 0, err
	}
	newStart := p.LogStartOffset
	var overdue int64
	for _, r := range refs {
		expired := ms > 0 && r.MaxTimestamp < cutoff
		if !expired && over <= 0 {
			break
		}
		newStart = r.LastOffset + 1
		over -= int64(r.ByteLength)
		overdue += int64(r.ByteLength)
	}
	if newStart == p.LogStartOffset {
		return 0, nil
	}
	freed, err := j.o.store.AdvanceLogStart(ctx, j.o.cfg.AgentID, l, newStart)
	if err != nil {
		return overdue, err
	}
	j.o.metrics.retentionFreed.Add(float64(freed))
	j.o.logger.Debug("retention", "topic", t.Name, "partition", l.Partition, "log_start", newStart, "freed_bytes", freed)
	return 0, nil
}

// merge rewrites runs of small chunks of flush segments into per-partition
// segments, bytes unchanged. It returns the small chunks left waiting.
func (j *janitor) merge(ctx context.Context, l metadata.Lease, p metadata.PartitionInfo) (int, error) {
	refs, err := j.o.store.ListBatches(ctx, l.TopicID, l.Partition, p.LogStartOffset, maxIndexRows)
	if err != nil {
		return 0, err
	}
	now := time.Now()
	var run []metadata.BatchRef
	var runBytes int64
	flushRun := func() error {
		defer func() { run, runBytes = nil, 0 }()
		if len(run) < j.cfg.MergeMinChunks {
			return nil
		}
		return j.rewriteRaw(ctx, l, run, runBytes)
	}
	pending := 0
	for _, r := range refs {
		small := r.SegmentKind == "flush" && int64(r.ByteLength) < j.cfg.MergeSmallChunkBytes && now.Sub(r.SegmentAt) >= j.cfg.MergeMinAge
		if !small {
			if err := flushRun(); err != nil {
				return 0, err
			}
			continue
		}
		if runBytes+int64(r.ByteLength) > j.cfg.MergeTargetBytes {
			if err := flushRun(); err != nil {
				return 0, err
			}
		}
		run = append(run, r)
		runBytes += int64(r.ByteLength)
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
	pending = len(run)
	if len(run) >= j.cfg.MergeMinChunks {
		pending = 0
	}
	return pending, flushRun()
}

// readChunks fetches the bytes of refs, in order.
func (j *janitor) readChunks(ctx context.Context, refs []metadata.BatchRef) ([][]byte, error) {
	out := make([][]byte, len(refs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, r := range refs {
		g.Go(func() error {
			rc, err := j.o.bucket.GetRange(gctx, r.SegmentKey, r.ByteOffset, int64(r.ByteLength))
			if err != nil {
				return fmt.Errorf("read %s@%d: %w", r.SegmentKey, r.ByteOffset, err)
			}
			defer rc.Close()
			b := make([]byte, r.ByteLength)
			if _, err := io.ReadFull(rc, b); err != nil {
				return fmt.Errorf("read %s@%d: %w", r.SegmentKey, r.ByteOffset, err)
			}
			out[i] = b
			return nil
		})
	}
	return out, g.Wait()
}

// rewriteRaw copies the chunks of run, unchanged, into one new segment
// and swaps the index rows to it.
func (j *janitor) rewriteRaw(ctx context.Context, l metadata.Lease, run []metadata.BatchRef, total int64) error {
	chunks, err := j.readChunks(ctx, run)
	if err != nil {
		return err
	}
	b := segment.NewBuilder(nil)
	news := make([]metadata.NewChunk, len(run))
	key := segment.ChunkKey{TopicID: l.TopicID, Partition: l.Partition}
	for i, c := range chunks {
		ref, err := b.AddRaw(key, c)
		if err != nil {
			return fmt.Errorf("merge %s@%d: %w", run[i].SegmentKey, run[i].ByteOffset, err)
		}
		r := run[i]
		news[i] = metadata.NewChunk{BaseOffset: r.BaseOffset, LastOffset: r.LastOffset, Records: r.Records, MaxTimestamp: r.MaxTimestamp,
			ByteOffset: ref.Offset, ByteLength: int32(ref.Length)}
	}
	if err := j.writeAndSwap(ctx, l, b, run, news, "merged"); err != nil {
		return err
	}
	j.o.metrics.rewritten.WithLabelValues("merge").Add(float64(total))
	j.pace(ctx, total)
	return nil
}

// writeAndSwap finishes b, PUTs it and swaps the index from old to news.
// If the swap is refused, the new object is deleted again.
func (j *janitor) writeAndSwap(ctx context.Context, l metadata.Lease, b *segment.Builder, old []metadata.BatchRef, news []metadata.NewChunk, kind string) error {
	obj, _, err := b.Finish()
	if err != nil {
		return err
	}
	key := j.newKey(kind)
	if err := j.o.bucket.Put(ctx, key, bytes.NewReader(obj), int64(len(obj)), objectstore.PutOptions{IfNotExists: true}); err != nil {
		return fmt.Errorf("%s put %s: %w", kind, key, err)
	}
	seg := metadata.NewSegment{Key: key, Size: int64(len(obj)), Kind: kind}
	if err := j.o.store.SwapBatches(ctx, j.o.cfg.AgentID, l, old, seg, news); err != nil {
		// Only a refused swap certainly wrote nothing. Any other error
		// (a commit whose outcome is unknown) may have indexed the new
		// object: it stays, and the orphan sweep removes it if not.
		if errors.Is(err, metadata.ErrFenced) {
			if derr := j.o.bucket.Delete(context.WithoutCancel(ctx), key); derr != nil {
				j.o.logger.Debug("delete unused rewrite", "key", key, "err", derr)
			}
		}
		return err
	}
	j.o.logger.Debug("rewrote chunks", "kind", kind, "topic_id", l.TopicID, "partition", l.Partition, "old_chunks", len(old), "new_chunks", len(news), "key", key)
	return nil
}

// newKey names a rewritten object: <prefix><kind>/<yyyy>/<mm>/<dd>/<ulid>.seg.
func (j *janitor) newKey(kind string) string {
	now := time.Now().UTC()
	j.entMu.Lock()
	id := ulid.MustNew(ulid.Timestamp(now), j.entropy)
	j.entMu.Unlock()
	return fmt.Sprintf("%s%s/%04d/%02d/%02d/%s.seg", j.cfg.KeyPrefix, kind, now.Year(), now.Month(), now.Day(), id)
}

// pace waits as long as rewriting n bytes takes at the configured rate.
func (j *janitor) pace(ctx context.Context, n int64) {
	d := time.Duration(float64(n) / float64(j.cfg.RewriteBytesPerSecond) * float64(time.Second))
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// gc marks objects no index row references and deletes those past the
// grace period, in rounds until no full round is left.
func (j *janitor) gc(ctx context.Context) error {
	const round = 1000
	for {
		n, err := j.o.store.MarkUnreferenced(ctx, 0, round)
		if err != nil {
			return err
		}
		j.o.metrics.unreferencedNew.Add(float64(n))
		if n < round {
			break
		}
	}
	for {
		keys, err := j.o.store.TakeUnreferenced(ctx, j.cfg.GCGrace, round)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := j.o.bucket.Delete(ctx, k); err != nil {
				// The row is gone: the orphan sweep deletes it later.
				j.o.logger.Warn("delete unreferenced object", "key", k, "err", err)
				continue
			}
			j.o.metrics.deleted.WithLabelValues("unreferenced").Inc()
		}
		if len(keys) < round {
			return nil
		}
	}
}

// orphans deletes objects under the key prefix that have no segment row
// and are older than OrphanAge: leftovers of flushes whose commit failed.
// One agent at a time scans, under an advisory lock.
func (j *janitor) orphans(ctx context.Context) error {
	_, err := j.o.store.TryLock(ctx, orphanLockKey, func(ctx context.Context) error {
		cutoff := time.Now().Add(-j.cfg.OrphanAge)
		var batch []string
		check := func() error {
			if len(batch) == 0 {
				return nil
			}
			known, err := j.o.store.KnownSegments(ctx, batch)
			if err != nil {
				return err
			}
			for _, k := range batch {
				if known[k] {
					continue
				}
				if err := j.o.bucket.Delete(ctx, k); err != nil {
					return err
				}
				j.o.metrics.deleted.WithLabelValues("orphan").Inc()
				j.o.logger.Info("deleted orphan object", "key", k)
			}
			batch = batch[:0]
			return nil
		}
		err := j.o.bucket.List(ctx, j.cfg.KeyPrefix, func(oi objectstore.ObjectInfo) error {
			if oi.LastModified.After(cutoff) {
				return nil
			}
			batch = append(batch, oi.Key)
			if len(batch) >= 1000 {
				return check()
			}
			return nil
		})
		if err != nil {
			return err
		}
		return check()
	})
	return err
}
