package ownership

import (
	"context"
	"time"

	"silt/metadata"
	"silt/segment"
)

// compactChunkBytes is the record bytes after which compaction starts a
// new chunk.
const compactChunkBytes = 1 << 20

// compact keeps the latest record per key in all but the newest chunk of
// a cleanup.policy=compact partition, drops tombstones older than
// delete.retention.ms, and swaps the survivors in with their offsets kept
// (leaving gaps, as Kafka does). Records without a key are kept.
func (j *janitor) compact(ctx context.Context, l metadata.Lease, t metadata.Topic, p metadata.PartitionInfo) error {
	if last, ok := j.compacted[l]; ok && last == p.HighWatermark {
		return nil // nothing new since the last clean pass
	}
	if p.TotalBytes > j.cfg.CompactMaxBytes {
		j.o.logger.Warn("partition too large to compact", "topic", t.Name, "partition", l.Partition, "bytes", p.TotalBytes, "max", j.cfg.CompactMaxBytes)
		return nil
	}
	refs, err := j.o.store.ListBatches(ctx, l.TopicID, l.Partition, p.LogStartOffset, maxIndexRows)
	if err != nil {
		return err
	}
	if len(refs) < 2 {
		return nil
	}
	raw, err := j.readChunks(ctx, refs)
	if err != nil {
		return err
	}
	batches := make([]*segment.Batch, len(refs))
	latest := map[string]int64{}
	for i, c := range raw {
		b, err := segment.DecodeBatch(c, segment.DecodeOptions{})
		if err != nil {
			return err
		}
		batches[i] = b
		for _, r := range b.Records {
			if r.Key != nil {
				latest[string(r.Key)] = refs[i].BaseOffset + int64(r.OffsetDelta)
			}
		}
	}
	horizon := time.Now().UnixMilli() - t.Config.DeleteRetentionMs
	cleanable := refs[:len(refs)-1] // the newest chunk stays as it is
	var (
		keep    []segment.Record
		keepOff []int64
		removed int
		total   int64
	)
	builder := segment.NewBuilder(segment.NewEncoder())
	var news []metadata.NewChunk
	var size int64
	emit := func() error {
		if len(keep) == 0 {
			return nil
		}
		base := keepOff[0]
		var maxTS int64
		for i := range keep {
			keep[i].OffsetDelta = int32(keepOff[i] - base)
			maxTS = max(maxTS, keep[i].Timestamp)
		}
		ref, err := builder.Add(segment.ChunkKey{TopicID: l.TopicID, Partition: l.Partition}, keep, segment.BatchOptions{Compression: segment.CompressionZstd})
		if err != nil {
			return err
		}
		news = append(news, metadata.NewChunk{BaseOffset: base, LastOffset: keepOff[len(keepOff)-1], Records: int32(len(keep)),
			MaxTimestamp: maxTS, ByteOffset: ref.Offset, ByteLength: int32(ref.Length)})
		keep, keepOff, size = nil, nil, 0
		return nil
	}
	for i := range cleanable {
		total += int64(refs[i].ByteLength)
		for _, r := range batches[i].Records {
			off := refs[i].BaseOffset + int64(r.OffsetDelta)
			switch {
			case r.Key != nil && latest[string(r.Key)] != off:
				removed++ // superseded by a later record of the key
				continue
			case r.Key != nil && r.Value == nil && r.Timestamp < horizon:
				removed++ // a tombstone past delete.retention.ms
				continue
			}
			keep = append(keep, r)
			keepOff = append(keepOff, off)
			size += segment.RecordSize(&r)
			if size >= compactChunkBytes {
				if err := emit(); err != nil {
					return err
				}
			}
		}
	}
	if removed == 0 {
		j.compacted[l] = p.HighWatermark
		return nil
	}
	if err := emit(); err != nil {
		return err
	}
	if err := j.writeAndSwap(ctx, l, builder, cleanable, news, "compacted"); err != nil {
		return err
	}
	j.compacted[l] = p.HighWatermark
	j.o.metrics.rewritten.WithLabelValues("compact").Add(float64(total))
	j.o.logger.Debug("compacted", "topic", t.Name, "partition", l.Partition, "removed_records", removed, "chunks", len(news))
	j.pace(ctx, total)
	return nil
}
