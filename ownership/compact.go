package ownership

import (
	"context"
	"fmt"
	"io"

	"silt/metadata"
	"silt/segment"
)

// indexPage is how many index rows a janitor duty reads at a time.
const indexPage = 1000

// offsetMap is the cleaner's map from key to its latest offset in the
// dirty section, bounded by an estimate of its memory (Kafka's
// log.cleaner.dedupe.buffer.size).
type offsetMap struct {
	latest map[string]int64
	bytes  int64
	limit  int64
}

// mapEntryOverhead estimates a map entry's bytes besides its key: the
// string header, the offset and the map's own bookkeeping.
const mapEntryOverhead = 48

// put records off as key's latest offset; it returns false, recording
// nothing, when the key is new and the map is full.
func (m *offsetMap) put(key []byte, off int64) bool {
	if _, ok := m.latest[string(key)]; ok {
		m.latest[string(key)] = off
		return true
	}
	size := int64(len(key)) + mapEntryOverhead
	if m.bytes+size > m.limit {
		return false
	}
	m.latest[string(key)] = off
	m.bytes += size
	return true
}

// compact cleans a cleanup.policy=compact partition in bounded passes,
// as Kafka's log cleaner does. A pass reads the dirty section (from the
// last pass's end to the newest chunk, which stays as it is) into a map of
// each key's latest offset, stopping when the map reaches
// CompactMapBytes; then it recopies the log from its start up to where the
// map stopped, chunk by chunk: a record goes when a later record of its
// key is in the map, and a tombstone goes once its chunk's delete horizon
// passed. The horizon is set when the cleaner first sees a chunk with
// tombstones, to then + delete.retention.ms, on Postgres's clock. Chunks
// keep their offsets and boundaries (offsets get gaps, as in Kafka; a
// chunk left empty goes); runs of changed chunks are written to new
// segments of up to MergeTargetBytes and swapped in. Memory is bounded by
// the map and one chunk at a time.
func (j *janitor) compact(ctx context.Context, l metadata.Lease, t metadata.Topic, p metadata.PartitionInfo) error {
	if last, ok := j.compacted[l]; ok && last == p.HighWatermark {
		return nil // nothing new since the last clean pass
	}
	pgNow, err := j.o.store.Now(ctx)
	if err != nil {
		return err
	}
	now := pgNow.UnixMilli()
	dirtyFrom := max(j.cleanedTo[l], p.LogStartOffset)
	m := &offsetMap{latest: map[string]int64{}, limit: j.cfg.CompactMapBytes}
	upper, err := j.scanDirty(ctx, l, p, dirtyFrom, m)
	if err != nil {
		return err
	}
	j.o.metrics.compactMapBytes.Set(float64(m.bytes))
	if upper <= dirtyFrom {
		j.compacted[l] = p.HighWatermark
		return nil
	}
	c := cleaner{j: j, l: l, t: t, m: m, now: now}
	if err := c.recopy(ctx, p.LogStartOffset, upper); err != nil {
		return err
	}
	j.cleanedTo[l] = upper
	if upper >= p.HighWatermark-1 || c.reachedHead {
		j.compacted[l] = p.HighWatermark
	}
	j.o.logger.Debug("compacted", "topic", t.Name, "partition", l.Partition, "to", upper,
		"removed_records", c.removed, "rewritten_chunks", c.rewritten, "map_keys", len(m.latest))
	return nil
}

// scanDirty reads the chunks from offset from up to, not including, the
// partition's newest chunk into m, and returns the end of what it read:
// the offset after the last chunk whose keys all fit.
func (j *janitor) scanDirty(ctx context.Context, l metadata.Lease, p metadata.PartitionInfo, from int64, m *offsetMap) (int64, error) {
	upper := from
	var b segment.Batch
	for {
		refs, err := j.o.store.ListBatches(ctx, l.TopicID, l.Partition, from, indexPage)
		if err != nil {
			return upper, err
		}
		for _, r := range refs {
			if r.LastOffset >= p.HighWatermark-1 {
				return upper, nil // the newest chunk is not cleaned
			}
			raw, err := j.readChunk(ctx, r)
			if err != nil {
				return upper, err
			}
			full := false
			err = eachBatch(r, raw, &b, func(base int64, _ []byte, b *segment.Batch) bool {
				for _, rec := range b.Records {
					if rec.Key != nil && !m.put(rec.Key, base+int64(rec.OffsetDelta)) {
						full = true
						return false
					}
				}
				return true
			})
			if err != nil {
				return upper, err
			}
			if full {
				return upper, nil // full: this chunk waits for the next pass
			}
			upper = r.LastOffset + 1
		}
		if len(refs) < indexPage {
			return upper, nil
		}
		from = refs[len(refs)-1].LastOffset + 1
	}
}

// readChunk reads one chunk's bytes.
func (j *janitor) readChunk(ctx context.Context, r metadata.BatchRef) ([]byte, error) {
	rc, err := j.o.bucket.GetRange(ctx, r.SegmentKey, r.ByteOffset, int64(r.ByteLength))
	if err != nil {
		return nil, fmt.Errorf("read %s@%d: %w", r.SegmentKey, r.ByteOffset, err)
	}
	defer rc.Close()
	b := make([]byte, r.ByteLength)
	if _, err := io.ReadFull(rc, b); err != nil {
		return nil, fmt.Errorf("read %s@%d: %w", r.SegmentKey, r.ByteOffset, err)
	}
	return b, nil
}

// cleaner is one compaction pass's recopy.
type cleaner struct {
	j   *janitor
	l   metadata.Lease
	t   metadata.Topic
	m   *offsetMap
	now int64 // Postgres's clock, Unix ms

	// The run of changed chunks being written.
	builder *segment.Builder
	old     []metadata.BatchRef
	news    []metadata.NewChunk
	bytes   int64

	removed, rewritten int
	reachedHead        bool
}

// recopy cleans the chunks from offset from up to upper.
func (c *cleaner) recopy(ctx context.Context, from, upper int64) error {
	var b segment.Batch
	for {
		refs, err := c.j.o.store.ListBatches(ctx, c.l.TopicID, c.l.Partition, from, indexPage)
		if err != nil {
			return err
		}
		for _, r := range refs {
			if r.LastOffset >= upper {
				return c.flush(ctx)
			}
			raw, err := c.j.readChunk(ctx, r)
			if err != nil {
				return err
			}
			if err := c.clean(ctx, r, raw, &b); err != nil {
				return err
			}
		}
		if len(refs) < indexPage {
			c.reachedHead = true
			return c.flush(ctx)
		}
		from = refs[len(refs)-1].LastOffset + 1
	}
}

// eachBatch decodes the batches of index row r's bytes in turn into b and
// calls fn with each one's base offset and bytes, until fn returns false:
// one for a flush chunk (base offset from the row), several for a merged
// run (each with its own).
func eachBatch(r metadata.BatchRef, raw []byte, b *segment.Batch, fn func(base int64, raw []byte, b *segment.Batch) bool) error {
	for rest := raw; len(rest) > 0; {
		h, one, next, err := segment.NextBatch(rest)
		if err != nil {
			return fmt.Errorf("compact %s@%d: %w", r.SegmentKey, r.ByteOffset, err)
		}
		base := h.BaseOffset
		if r.Batches <= 1 {
			base = r.BaseOffset // stored with base offset 0
		}
		if err := b.Decode(one, segment.DecodeOptions{}); err != nil {
			return fmt.Errorf("compact %s@%d: %w", r.SegmentKey, r.ByteOffset, err)
		}
		if !fn(base, one, b) {
			return nil
		}
		rest = next
	}
	return nil
}

// cleanedBatch is one batch of a row being cleaned.
type cleanedBatch struct {
	base    int64
	raw     []byte           // as stored
	keep    []segment.Record // the records that stay
	removed int
	horizon int64
}

// clean decides one index row: left as it is, or rewritten into the
// current run, each of its batches filtered (or only given its delete
// horizon) into a chunk of its own.
func (c *cleaner) clean(ctx context.Context, r metadata.BatchRef, raw []byte, b *segment.Batch) error {
	horizon := r.DeleteHorizon
	tombstonesGo := horizon > 0 && horizon <= c.now
	var parts []cleanedBatch
	changed := false
	err := eachBatch(r, raw, b, func(base int64, one []byte, b *segment.Batch) bool {
		cb := cleanedBatch{base: base, raw: one, horizon: horizon}
		tombstones := false
		for _, rec := range b.Records {
			off := base + int64(rec.OffsetDelta)
			if rec.Key != nil {
				if latest, ok := c.m.latest[string(rec.Key)]; ok && latest > off {
					cb.removed++ // superseded by a later record of its key
					continue
				}
				if rec.Value == nil {
					if tombstonesGo {
						cb.removed++ // a tombstone past its horizon
						continue
					}
					tombstones = true
				}
			}
			cb.keep = append(cb.keep, cloneRecord(rec))
		}
		if tombstones && horizon == 0 {
			cb.horizon = c.now + c.t.Config.DeleteRetentionMs // first seen by the cleaner
		}
		changed = changed || cb.removed > 0 || cb.horizon != horizon
		parts = append(parts, cb)
		return true
	})
	if err != nil {
		return err
	}
	if !changed {
		// Unchanged: it stays where it is, and ends the run before it.
		return c.flush(ctx)
	}
	if c.builder == nil {
		c.builder = segment.NewBuilder(segment.NewEncoder())
	}
	key := segment.ChunkKey{TopicID: c.l.TopicID, Partition: c.l.Partition}
	c.old = append(c.old, r)
	c.bytes += int64(r.ByteLength)
	c.rewritten++
	for _, cb := range parts {
		c.removed += cb.removed
		if len(cb.keep) == 0 {
			continue
		}
		var ref segment.ChunkRef
		var err error
		if cb.removed == 0 {
			ref, err = c.builder.AddRaw(key, cb.raw) // only the horizon changes
		} else {
			ref, err = c.builder.Add(key, cb.keep, segment.BatchOptions{Compression: segment.CompressionZstd})
		}
		if err != nil {
			return fmt.Errorf("compact %s@%d: %w", r.SegmentKey, r.ByteOffset, err)
		}
		c.news = append(c.news, metadata.NewChunk{
			BaseOffset: cb.base, LastOffset: cb.base + int64(ref.LastOffsetDelta), Records: ref.Records,
			MaxTimestamp: ref.MaxTimestamp, ByteOffset: ref.Offset, ByteLength: int32(ref.Length), DeleteHorizon: cb.horizon,
		})
	}
	if int64(c.builder.Len()) >= c.j.cfg.MergeTargetBytes {
		return c.flush(ctx)
	}
	return nil
}

// cloneRecord copies what a record aliases in its decoded batch, which
// the next batch's decode reuses.
func cloneRecord(r segment.Record) segment.Record {
	out := segment.Record{OffsetDelta: r.OffsetDelta, Timestamp: r.Timestamp}
	if r.Key != nil {
		out.Key = append([]byte{}, r.Key...)
	}
	if r.Value != nil {
		out.Value = append([]byte{}, r.Value...)
	}
	if len(r.Headers) > 0 {
		out.Headers = make([]segment.Header, len(r.Headers))
		for i, h := range r.Headers {
			out.Headers[i] = segment.Header{Key: h.Key}
			if h.Value != nil {
				out.Headers[i].Value = append([]byte{}, h.Value...)
			}
		}
	}
	return out
}

// flush writes the current run as a new segment and swaps it in.
func (c *cleaner) flush(ctx context.Context) error {
	if len(c.old) == 0 {
		return nil
	}
	defer func() { c.builder, c.old, c.news, c.bytes = nil, nil, nil, 0 }()
	if err := c.j.writeAndSwap(ctx, c.l, c.builder, c.old, c.news, metadata.KindCompacted); err != nil {
		return err
	}
	c.j.o.metrics.rewritten.WithLabelValues("compact").Add(float64(c.bytes))
	c.j.pace(ctx, c.bytes)
	return nil
}
