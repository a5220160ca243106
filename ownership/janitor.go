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
	PartitionsOf(ctx context.Context, topicID int64, parts []int32) ([]metadata.PartitionInfo, error)
	ListBatches(ctx context.Context, topicID int64, partition int32, offset int64, limit int) ([]metadata.BatchRef, error)
	AdvanceLogStart(ctx context.Context, agentID string, l metadata.Lease, newStart int64) (int64, error)
	RegisterSegment(ctx context.Context, key string, size int64, kind string, ttl time.Duration) (int64, error)
	AbandonSegment(ctx context.Context, id int64) error
	SwapBatches(ctx context.Context, agentID string, l metadata.Lease, old []metadata.BatchRef, segmentID, segmentSize int64, chunks []metadata.NewChunk) error
	ClaimDoomed(ctx context.Context, grace, claim time.Duration, limit int) ([]metadata.SegmentRef, error)
	ForgetSegments(ctx context.Context, ids []int64) error
	AdoptOrphans(ctx context.Context, keys []string, age time.Duration) (int64, error)
	AcquireJanitorLock(ctx context.Context, name, agentID string, ttl time.Duration) (bool, error)
	ExpireProducers(ctx context.Context, age time.Duration, limit int) (states, producers int64, err error)
	ExpireGroups(ctx context.Context, retention time.Duration, limit int) (int64, error)
	Now(ctx context.Context) (time.Time, error)
	ReleaseJanitorLock(ctx context.Context, name, agentID string) error
}

// orphanLock serializes orphan scans across agents.
const orphanLock = "orphans"

// maxIndexRows bounds the index rows one duty reads for a partition in a
// pass; the next pass goes on from there.
const maxIndexRows = 100_000

// maxRunChunks bounds the chunks one merge writes into one segment (and
// so one swap's size).
const maxRunChunks = 10_000

// maxRowOffsets bounds the offsets one merged index row spans, so that a
// record's offset delta within the row fits an int32.
const maxRowOffsets = 1 << 30

// janitor runs the owner's duties from one goroutine.
type janitor struct {
	o      *Owner
	cfg    JanitorConfig
	passMu sync.Mutex // one pass at a time (the loop, or a test driving it)

	due       map[dutyKey]time.Time    // next visit per partition and duty
	compacted map[metadata.Lease]int64 // high watermark at the last clean compaction
	cleanedTo map[metadata.Lease]int64 // where the last compaction pass stopped
	mergedTo  map[metadata.Lease]int64 // below it, chunks are settled for merging
	retained  map[metadata.Lease]retentionMark
	// mergeSeen is the high watermark at which a merge pass last read a
	// partition to its end, and mergeLeft the small rows it left waiting.
	mergeSeen  map[metadata.Lease]int64
	mergeLeft  map[metadata.Lease]int
	lastGC     time.Time
	lastScan   time.Time
	lastExpiry time.Time

	entMu   sync.Mutex
	entropy io.Reader
}

// retentionMark is where the last retention pass of a partition stopped:
// the log start it left and the time of the first chunk, which stayed (its
// max timestamp, but never later than its segment was written; both are
// fixed, so the mark stays true until the log start moves).
type retentionMark struct {
	logStart int64
	firstAt  int64
}

type dutyKey struct {
	lease metadata.Lease
	duty  string
}

func newJanitor(o *Owner) *janitor {
	return &janitor{o: o, cfg: o.cfg.Janitor, due: map[dutyKey]time.Time{}, compacted: map[metadata.Lease]int64{}, cleanedTo: map[metadata.Lease]int64{},
		mergedTo: map[metadata.Lease]int64{}, retained: map[metadata.Lease]retentionMark{},
		mergeSeen: map[metadata.Lease]int64{}, mergeLeft: map[metadata.Lease]int{},
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
	j.lastGC, j.lastScan, j.lastExpiry = time.Time{}, time.Time{}, time.Time{}
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
	// Only the partitions held are read, whatever the topics' sizes.
	heldParts := map[int64][]int32{}
	for _, l := range leases {
		heldParts[l.TopicID] = append(heldParts[l.TopicID], l.Partition)
	}
	parts := map[int64]map[int32]metadata.PartitionInfo{}
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
			infos, err := j.o.store.PartitionsOf(ctx, l.TopicID, heldParts[l.TopicID])
			if err != nil {
				continue
			}
			parts[l.TopicID] = make(map[int32]metadata.PartitionInfo, len(infos))
			for _, p := range infos {
				parts[l.TopicID][p.Partition] = p
			}
		}
		p, ok := parts[l.TopicID][l.Partition]
		if !ok {
			continue
		}
		if j.isDue(l, "retention", now, j.cfg.RetentionInterval) {
			j.bounded(ctx, "retention", func(ctx context.Context) error {
				o, err := j.retention(ctx, l, t, p)
				overdue += o
				return err
			})
		}
		if t.Config.Compacted() {
			if j.isDue(l, "compact", now, j.cfg.CompactInterval) {
				j.bounded(ctx, "compact", func(ctx context.Context) error { return j.compact(ctx, l, t, p) })
			}
		} else if j.isDue(l, "merge", now, j.cfg.MergeInterval) {
			j.bounded(ctx, "merge", func(ctx context.Context) error {
				n, err := j.merge(ctx, l, p)
				pending += n
				return err
			})
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
	for l := range j.cleanedTo {
		if !held[l] {
			delete(j.cleanedTo, l)
		}
	}
	for l := range j.mergedTo {
		if !held[l] {
			delete(j.mergedTo, l)
		}
	}
	for l := range j.retained {
		if !held[l] {
			delete(j.retained, l)
		}
	}
	for l := range j.mergeSeen {
		if !held[l] {
			delete(j.mergeSeen, l)
			delete(j.mergeLeft, l)
		}
	}
	if now.Sub(j.lastGC) >= j.cfg.GCInterval {
		j.lastGC = now
		j.bounded(ctx, "gc", j.gc)
	}
	if now.Sub(j.lastScan) >= j.cfg.OrphanInterval {
		j.lastScan = now
		j.bounded(ctx, "orphans", j.orphans)
	}
	if now.Sub(j.lastExpiry) >= j.cfg.ExpiryInterval {
		j.lastExpiry = now
		j.bounded(ctx, "expiry", j.expire)
	}
}

// expire forgets idle producer ids and empty consumer groups, in rounds.
// Any agent may run it: rows are taken with SKIP LOCKED.
func (j *janitor) expire(ctx context.Context) error {
	const round = 1000
	for {
		states, producers, err := j.o.store.ExpireProducers(ctx, j.cfg.ProducerExpiry, round)
		if err != nil {
			return err
		}
		j.o.metrics.expired.WithLabelValues("producer_state").Add(float64(states))
		j.o.metrics.expired.WithLabelValues("producer").Add(float64(producers))
		if states < round && producers < round {
			break
		}
	}
	for {
		n, err := j.o.store.ExpireGroups(ctx, j.cfg.GroupRetention, round)
		if err != nil {
			return err
		}
		j.o.metrics.expired.WithLabelValues("group").Add(float64(n))
		if n < round {
			return nil
		}
	}
}

// bounded runs one duty under a deadline of RewriteTimeout, so that no
// duty can wedge the janitor, and records its outcome.
func (j *janitor) bounded(ctx context.Context, duty string, fn func(ctx context.Context) error) {
	ctx, cancel := context.WithTimeout(ctx, j.cfg.RewriteTimeout)
	defer cancel()
	j.record(duty, fn(ctx))
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
	if ms <= 0 && over <= 0 || p.HighWatermark <= p.LogStartOffset {
		return 0, nil
	}
	now := time.Now().UnixMilli()
	cutoff := now - ms
	// Nothing expires before the first chunk does: while the log start is
	// where the last pass left it and that chunk is younger than the
	// cutoff, the index is not read at all. (Compaction can lower a
	// chunk's timestamp, so compacted topics are always read.)
	if m, ok := j.retained[l]; ok && over <= 0 && !t.Config.Compacted() && m.logStart == p.LogStartOffset && m.firstAt >= cutoff {
		return 0, nil
	}
	delete(j.retained, l)
	// Read the index a page at a time from the log start, and stop at the
	// first chunk that stays: a pass costs what it drops, plus a page.
	// A chunk's time is its largest timestamp, but never later than when
	// its segment was written: a timestamp in the future (within
	// message.timestamp.after.max.ms) would otherwise hold back the
	// retention of every chunk after it.
	newStart := p.LogStartOffset
	var overdue int64
	from := p.LogStartOffset
	stays := int64(-1) // the time of the first chunk that stays
	page := 16         // the first chunk usually stays: start small
scan:
	for read := 0; read < maxIndexRows; {
		refs, err := j.o.store.ListBatches(ctx, l.TopicID, l.Partition, from, page)
		if err != nil {
			return 0, err
		}
		for _, r := range refs {
			at := min(r.MaxTimestamp, now-r.SegmentAge.Milliseconds())
			expired := ms > 0 && at < cutoff
			if !expired && over <= 0 {
				stays = at
				break scan
			}
			newStart = r.LastOffset + 1
			over -= int64(r.ByteLength)
			overdue += int64(r.ByteLength)
		}
		read += len(refs)
		if len(refs) < page {
			break
		}
		from = refs[len(refs)-1].LastOffset + 1
		page = indexPage
	}
	mark := func() {
		if stays >= 0 && ms > 0 {
			j.retained[l] = retentionMark{logStart: newStart, firstAt: stays}
		}
	}
	if newStart == p.LogStartOffset {
		mark()
		return 0, nil
	}
	freed, err := j.o.store.AdvanceLogStart(ctx, j.o.cfg.AgentID, l, newStart)
	if err != nil {
		return overdue, err
	}
	mark()
	j.o.metrics.retentionFreed.Add(float64(freed))
	j.o.logger.Debug("retention", "topic", t.Name, "partition", l.Partition, "log_start", newStart, "freed_bytes", freed)
	return 0, nil
}

// merge rewrites runs of small rows into per-partition segments, bytes
// unchanged: chunks of flush segments, and merged rows still below
// MergeRemergeBytes, so that a quiet partition's rows keep growing towards
// MergeRowBytes instead of staying as small as a minute of its data. Runs
// are size-tiered, as in a log-structured merge tree: a row is merged
// again only with at least as many bytes after it, so each byte is
// rewritten about log2(MergeRowBytes / chunk size) times at most and a
// partition's open tail holds a few partial rows. It returns the small
// rows left waiting.
func (j *janitor) merge(ctx context.Context, l metadata.Lease, p metadata.PartitionInfo) (int, error) {
	// Rows below mergedTo are settled: merged, or not small, or small ones
	// left between larger ones. A pass reads on from there, a page at a
	// time, so its cost follows what is new, whatever the partition's
	// size; the open tail (small rows with nothing large after them) is
	// read again by the next pass, which may merge it with what arrived.
	from := max(j.mergedTo[l], p.LogStartOffset)
	if seen, ok := j.mergeSeen[l]; from >= p.HighWatermark || ok && seen == p.HighWatermark {
		return j.mergeLeft[l], nil // nothing new since the last pass read it all
	}
	var run []metadata.BatchRef
	var runBytes int64
	settled := from
	done, whole := false, true
	for read := 0; !done && read < maxIndexRows; {
		refs, err := j.o.store.ListBatches(ctx, l.TopicID, l.Partition, from, indexPage)
		if err != nil {
			return 0, err
		}
		for _, r := range refs {
			small := j.mergeable(r)
			if small && r.SegmentKind == metadata.KindFlush && r.SegmentAge < j.cfg.MergeMinAge {
				done, whole = true, false // this chunk and those after it are too young
				break
			}
			if !small {
				if _, err := j.mergeRun(ctx, l, run); err != nil {
					return 0, err
				}
				run, runBytes, settled = nil, 0, r.LastOffset+1
				continue
			}
			if runBytes+int64(r.ByteLength) > j.cfg.MergeTargetBytes || len(run) >= maxRunChunks {
				if _, err := j.mergeRun(ctx, l, run); err != nil {
					return 0, err
				}
				run, runBytes, settled = nil, 0, r.BaseOffset
			}
			run = append(run, r)
			runBytes += int64(r.ByteLength)
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		read += len(refs)
		if len(refs) < indexPage {
			done = true
		} else {
			from = refs[len(refs)-1].LastOffset + 1
			whole = whole && read < maxIndexRows
		}
	}
	pending := 0
	if len(run) > 0 {
		merged, err := j.mergeRun(ctx, l, run)
		if err != nil {
			return 0, err
		}
		if !merged {
			pending = len(run)
		}
		settled = run[0].BaseOffset
	}
	j.mergedTo[l] = settled
	// Read to the end with nothing too young: until new chunks arrive,
	// another pass would find the same.
	delete(j.mergeSeen, l)
	if whole {
		j.mergeSeen[l], j.mergeLeft[l] = p.HighWatermark, pending
	}
	return pending, nil
}

// mergeable reports whether an index row is small enough to merge: a
// chunk of a flush segment below MergeSmallChunkBytes, or a merged row
// below MergeRemergeBytes.
func (j *janitor) mergeable(r metadata.BatchRef) bool {
	switch r.SegmentKind {
	case metadata.KindFlush:
		return int64(r.ByteLength) < j.cfg.MergeSmallChunkBytes
	case metadata.KindMerged:
		return int64(r.ByteLength) < j.cfg.MergeRemergeBytes
	}
	return false
}

// mergeRun merges a run of mergeable rows, leaving out the leading rows
// larger than all the rows after them (size tiers), when at least
// MergeMinChunks rows are left. It reports whether it merged.
func (j *janitor) mergeRun(ctx context.Context, l metadata.Lease, run []metadata.BatchRef) (bool, error) {
	var total int64
	for _, r := range run {
		total += int64(r.ByteLength)
	}
	for len(run) > 0 && 2*int64(run[0].ByteLength) > total {
		total -= int64(run[0].ByteLength)
		run = run[1:]
	}
	if len(run) < j.cfg.MergeMinChunks {
		return false, nil // too few to merge: left as they are
	}
	return true, j.rewriteRaw(ctx, l, run, total)
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

// rewriteRaw copies the rows of run, unchanged, into one new segment
// and swaps the index rows to it.
func (j *janitor) rewriteRaw(ctx context.Context, l metadata.Lease, run []metadata.BatchRef, total int64) error {
	chunks, err := j.readChunks(ctx, run)
	if err != nil {
		return err
	}
	b := segment.NewBuilder(nil)
	key := segment.ChunkKey{TopicID: l.TopicID, Partition: l.Partition}
	// The batches are copied byte for byte, each with its base offset
	// written in (the CRC does not cover it), and indexed by rows of up to
	// MergeRowBytes: a row covers several batches, so index rows per byte
	// stay bounded however small the flushes were. A row merged before
	// holds batches that carry their offsets already; it moves whole.
	var news []metadata.NewChunk
	for i, c := range chunks {
		r := run[i]
		first := int64(-1)
		var length int64
		if r.Batches <= 1 {
			segment.SetBaseOffset(c, r.BaseOffset)
		}
		for rest := c; len(rest) > 0; {
			_, batch, next, err := segment.NextBatch(rest)
			if err != nil {
				return fmt.Errorf("merge %s@%d: %w", r.SegmentKey, r.ByteOffset, err)
			}
			ref, err := b.AddRaw(key, batch)
			if err != nil {
				return fmt.Errorf("merge %s@%d: %w", r.SegmentKey, r.ByteOffset, err)
			}
			if first < 0 {
				first = ref.Offset
			}
			length += ref.Length
			rest = next
		}
		batches := max(r.Batches, 1)
		if n := len(news); n > 0 && int64(news[n-1].ByteLength)+length <= j.cfg.MergeRowBytes &&
			r.LastOffset-news[n-1].BaseOffset < maxRowOffsets {
			row := &news[n-1]
			row.LastOffset, row.Records, row.ByteLength, row.Batches = r.LastOffset, row.Records+r.Records, row.ByteLength+int32(length), row.Batches+batches
			row.MaxTimestamp = max(row.MaxTimestamp, r.MaxTimestamp)
			continue
		}
		news = append(news, metadata.NewChunk{BaseOffset: r.BaseOffset, LastOffset: r.LastOffset, Records: r.Records, MaxTimestamp: r.MaxTimestamp,
			ByteOffset: first, ByteLength: int32(length), Batches: batches})
	}
	if err := j.writeAndSwap(ctx, l, b, run, news, metadata.KindMerged); err != nil {
		return err
	}
	j.o.metrics.rewritten.WithLabelValues("merge").Add(float64(total))
	j.pace(ctx, total)
	return nil
}

// writeAndSwap finishes b, registers it as a pending segment whose
// deadline is RewriteTimeout away on Postgres's clock, PUTs it and swaps
// the index from old to news. The swap turns the segment live as its last
// step and fails if the deadline passed: the janitor may then have deleted
// the object. A swap that certainly wrote nothing gives the segment up.
func (j *janitor) writeAndSwap(ctx context.Context, l metadata.Lease, b *segment.Builder, old []metadata.BatchRef, news []metadata.NewChunk, kind string) error {
	obj, _, err := b.Finish()
	if err != nil {
		return err
	}
	key := j.newKey(kind)
	id, err := j.o.store.RegisterSegment(ctx, key, int64(len(obj)), kind, j.cfg.RewriteTimeout)
	if err != nil {
		return fmt.Errorf("%s register %s: %w", kind, key, err)
	}
	if err := j.o.bucket.Put(ctx, key, bytes.NewReader(obj), int64(len(obj)), objectstore.PutOptions{IfNotExists: true}); err != nil {
		j.abandon(ctx, id)
		return fmt.Errorf("%s put %s: %w", kind, key, err)
	}
	if err := j.o.store.SwapBatches(ctx, j.o.cfg.AgentID, l, old, id, int64(len(obj)), news); err != nil {
		// Only a refused swap certainly wrote nothing. Any other error
		// (a call whose outcome is unknown) may have indexed the object:
		// its row says which, and the deadline settles it.
		if errors.Is(err, metadata.ErrFenced) || errors.Is(err, metadata.ErrSegmentExpired) {
			j.abandon(ctx, id)
		}
		return err
	}
	j.o.logger.Debug("rewrote chunks", "kind", kind, "topic_id", l.TopicID, "partition", l.Partition, "old_chunks", len(old), "new_chunks", len(news), "key", key)
	return nil
}

// abandon gives up a pending segment so that the next sweep deletes it.
func (j *janitor) abandon(ctx context.Context, id int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := j.o.store.AbandonSegment(ctx, id); err != nil {
		j.o.logger.Debug("abandon segment", "id", id, "err", err)
	}
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

// gc deletes the objects of segments that are doomed by Postgres's clock:
// pending past their deadline (failed or stalled writes, adopted orphans)
// and unreferenced past the grace period. It claims them in rounds, deletes
// each object, and removes a row only once its object is gone, so an
// object-store outage leaks nothing: the claim lapses and a later pass, of
// this agent or another, retries.
func (j *janitor) gc(ctx context.Context) error {
	const round = 1000
	for {
		doomed, err := j.o.store.ClaimDoomed(ctx, j.cfg.GCGrace, j.cfg.RewriteTimeout, round)
		if err != nil {
			return err
		}
		gone := make([]int64, 0, len(doomed))
		var failed error
		for _, d := range doomed {
			if err := j.o.bucket.Delete(ctx, d.Key); err != nil {
				failed = fmt.Errorf("delete %s: %w", d.Key, err)
				continue
			}
			gone = append(gone, d.ID)
			j.o.metrics.deleted.WithLabelValues(d.Reason).Inc()
		}
		if len(gone) > 0 {
			if err := j.o.store.ForgetSegments(ctx, gone); err != nil {
				return err
			}
		}
		if failed != nil {
			return failed // the claims lapse; a later pass retries
		}
		if len(doomed) < round {
			return nil
		}
	}
}

// orphans adopts objects under the key prefix that have no segment row,
// giving each a pending row whose deadline is OrphanAge away on Postgres's
// clock; gc deletes them then. Nothing can index an adopted object: every
// commit needs its own pending row, written before its object. One agent
// at a time scans, under a janitor lock that lapses if it stalls.
func (j *janitor) orphans(ctx context.Context) error {
	ok, err := j.o.store.AcquireJanitorLock(ctx, orphanLock, j.o.cfg.AgentID, j.cfg.RewriteTimeout)
	if err != nil || !ok {
		return err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := j.o.store.ReleaseJanitorLock(rctx, orphanLock, j.o.cfg.AgentID); err != nil {
			j.o.logger.Debug("release orphan lock", "err", err)
		}
	}()
	var batch []string
	adopt := func() error {
		if len(batch) == 0 {
			return nil
		}
		n, err := j.o.store.AdoptOrphans(ctx, batch, j.cfg.OrphanAge)
		if err != nil {
			return err
		}
		if n > 0 {
			j.o.metrics.orphansAdopted.Add(float64(n))
			j.o.logger.Info("adopted orphan objects", "count", n, "delete_after", j.cfg.OrphanAge)
		}
		batch = batch[:0]
		return nil
	}
	err = j.o.bucket.List(ctx, j.cfg.KeyPrefix, func(oi objectstore.ObjectInfo) error {
		batch = append(batch, oi.Key)
		if len(batch) >= 1000 {
			return adopt()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return adopt()
}
