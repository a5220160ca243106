package metadata

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// BatchRef locates one indexed chunk.
type BatchRef struct {
	BaseOffset   int64
	LastOffset   int64
	Records      int32
	MaxTimestamp int64
	SegmentID    int64
	SegmentKey   string
	SegmentKind  string // flush, merged or compacted
	SegmentSize  int64
	SegmentAt    time.Time // when the segment object was registered
	// SegmentAge is the segment's age on Postgres's clock, and
	// DeleteHorizon the chunk's compaction tombstone horizon (Unix ms,
	// 0: none); ListBatches only.
	SegmentAge    time.Duration
	DeleteHorizon int64
	ByteOffset    int64
	ByteLength    int32
	// Batches is how many RecordBatches the range holds: 1 for a flush
	// chunk, stored with base offset 0 (its offset is BaseOffset); more for
	// a merged run, whose batches carry their own base offsets.
	Batches int32
}

// PartitionState is a partition's offsets at the time of a lookup.
type PartitionState struct {
	LogStartOffset int64
	HighWatermark  int64
}

// lookupFirstPage is how many index rows a lookup reads first; it reads
// four times more at a time while the byte budget is not spent.
const lookupFirstPage = 4

// LookupBatches returns the partition's offsets and, in offset order, the
// chunks from the one containing offset onwards, stopping once maxBytes is
// reached (the first chunk is always included) or after limit chunks.
//
// It reads the index a page at a time, 4 rows first and then four times
// more per page while the bytes are short of maxBytes, so that a lookup
// costs the rows it returns: read in one go up to limit rows, a lookup in
// the middle of a long partition read (and joined) limit rows to return
// one merged row of a MiB. Later pages keep to the first page's high
// watermark and stop at any gap (a retention or merge between the pages);
// the caller goes on from where the rows end.
func (s *Store) LookupBatches(ctx context.Context, topicID int64, partition int32, offset, maxBytes int64, limit int) (PartitionState, []BatchRef, error) {
	page := min(limit, lookupFirstPage)
	st, refs, err := s.lookupFirst(ctx, topicID, partition, offset, maxBytes, page)
	if err != nil {
		return st, nil, err
	}
	var used int64
	for _, r := range refs {
		used += int64(r.ByteLength)
	}
	for full := len(refs) == page; full && used < maxBytes && len(refs) < limit; {
		last := refs[len(refs)-1].LastOffset
		page = min(page*4, limit-len(refs))
		next, err := s.lookupMore(ctx, topicID, partition, last+1, maxBytes-used, page, st.HighWatermark)
		if err != nil {
			return PartitionState{}, nil, err
		}
		full = len(next) == page
		for _, r := range next {
			if r.BaseOffset != last+1 {
				full = false // a gap: the index changed between the pages
				break
			}
			refs = append(refs, r)
			used += int64(r.ByteLength)
			last = r.LastOffset
		}
	}
	return st, refs, nil
}

// lookupFirst reads the partition's offsets and the first page of rows.
func (s *Store) lookupFirst(ctx context.Context, topicID int64, partition int32, offset, maxBytes int64, limit int) (PartitionState, []BatchRef, error) {
	rows, err := s.pool.Query(ctx, `
		WITH p AS (
			SELECT next_offset, log_start_offset FROM partitions WHERE topic_id = $1 AND partition = $2
		), b AS (
			SELECT b.base_offset, b.last_offset, b.record_count, b.max_timestamp, s.key, s.size, s.created_at,
			       b.byte_offset, b.byte_length, b.batch_count,
			       sum(b.byte_length) OVER (ORDER BY b.last_offset) - b.byte_length AS before
			FROM batches b JOIN segments s ON s.id = b.segment_id
			WHERE b.topic_id = $1 AND b.partition = $2 AND b.last_offset >= $3
			ORDER BY b.last_offset
			LIMIT $5
		)
		SELECT p.next_offset, p.log_start_offset,
		       b.base_offset, b.last_offset, b.record_count, b.max_timestamp, b.key, b.size, b.created_at, b.byte_offset, b.byte_length,
		       b.batch_count
		FROM p LEFT JOIN b ON b.before < $4 OR b.before = 0
		ORDER BY b.last_offset`, topicID, partition, offset, maxBytes, limit)
	if err != nil {
		return PartitionState{}, nil, s.classify("lookup batches", err)
	}
	defer rows.Close()
	var st PartitionState
	var refs []BatchRef
	found := false
	for rows.Next() {
		found = true
		var (
			base, last, maxTS, segSize, byteOff *int64
			count, length, nbatches             *int32
			key                                 *string
			at                                  *time.Time
		)
		if err := rows.Scan(&st.HighWatermark, &st.LogStartOffset, &base, &last, &count, &maxTS, &key, &segSize, &at, &byteOff, &length, &nbatches); err != nil {
			return PartitionState{}, nil, s.classify("lookup batches", err)
		}
		if base == nil {
			continue
		}
		refs = append(refs, BatchRef{
			BaseOffset: *base, LastOffset: *last, Records: *count, MaxTimestamp: *maxTS,
			SegmentKey: *key, SegmentSize: *segSize, SegmentAt: *at, ByteOffset: *byteOff, ByteLength: *length, Batches: *nbatches,
		})
	}
	if err := rows.Err(); err != nil {
		return PartitionState{}, nil, s.classify("lookup batches", err)
	}
	if !found {
		return PartitionState{}, nil, fmt.Errorf("topic id %d has no partition %d: %w", topicID, partition, ErrPartitionNotFound)
	}
	return st, refs, nil
}

// lookupMore reads a further page of rows from offset, below hwm, within
// budget bytes (the first row always).
func (s *Store) lookupMore(ctx context.Context, topicID int64, partition int32, offset, budget int64, limit int, hwm int64) ([]BatchRef, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT base_offset, last_offset, record_count, max_timestamp, key, size, created_at, byte_offset, byte_length, batch_count
		FROM (
			SELECT b.base_offset, b.last_offset, b.record_count, b.max_timestamp, s.key, s.size, s.created_at,
			       b.byte_offset, b.byte_length, b.batch_count,
			       sum(b.byte_length) OVER (ORDER BY b.last_offset) - b.byte_length AS before
			FROM batches b JOIN segments s ON s.id = b.segment_id
			WHERE b.topic_id = $1 AND b.partition = $2 AND b.last_offset >= $3 AND b.base_offset < $6
			ORDER BY b.last_offset
			LIMIT $5
		) x
		WHERE before < $4 OR before = 0
		ORDER BY last_offset`, topicID, partition, offset, budget, limit, hwm)
	if err != nil {
		return nil, s.classify("lookup batches", err)
	}
	refs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (BatchRef, error) {
		var b BatchRef
		err := r.Scan(&b.BaseOffset, &b.LastOffset, &b.Records, &b.MaxTimestamp, &b.SegmentKey, &b.SegmentSize, &b.SegmentAt,
			&b.ByteOffset, &b.ByteLength, &b.Batches)
		return b, err
	})
	return refs, s.classify("lookup batches", err)
}

// PartitionOffsets returns a partition's log start offset and high watermark.
func (s *Store) PartitionOffsets(ctx context.Context, topicID int64, partition int32) (PartitionState, error) {
	var st PartitionState
	err := s.pool.QueryRow(ctx, `SELECT log_start_offset, next_offset FROM partitions WHERE topic_id = $1 AND partition = $2`,
		topicID, partition).Scan(&st.LogStartOffset, &st.HighWatermark)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, fmt.Errorf("topic id %d has no partition %d: %w", topicID, partition, ErrPartitionNotFound)
	}
	return st, s.classify("partition offsets", err)
}

// FirstBatchAtOrAfter returns the first indexed chunk whose max timestamp
// is at least ts, for Kafka's ListOffsets by timestamp; found is false when
// no record is that recent.
//
// Each index row carries the running maximum of the partition's max
// timestamps up to it (migration 0008), non-decreasing in offset order, so
// the first row whose running maximum reaches ts is one descent of the
// index batches_time. While the running maxima are exact that row is the
// answer. Retention and compaction can leave them higher than the rows
// left would give, never lower, which puts that row at or before the
// answer: the lookup goes on from it, by offset, to the first row whose
// own max timestamp reaches ts (the same row, unless records with the
// greatest timestamps so far were removed).
func (s *Store) FirstBatchAtOrAfter(ctx context.Context, topicID int64, partition int32, ts int64) (ref BatchRef, found bool, err error) {
	err = s.pool.QueryRow(ctx, `
		SELECT b.base_offset, b.last_offset, b.record_count, b.max_timestamp, s.key, s.size, s.created_at, b.byte_offset, b.byte_length,
		       b.batch_count
		FROM batches b JOIN segments s ON s.id = b.segment_id
		WHERE b.topic_id = $1 AND b.partition = $2 AND b.max_timestamp >= $3
		  AND b.last_offset >= (SELECT t.last_offset FROM batches t
		                        WHERE t.topic_id = $1 AND t.partition = $2 AND t.running_max_ts >= $3
		                        ORDER BY t.running_max_ts, t.last_offset LIMIT 1)
		ORDER BY b.last_offset LIMIT 1`, topicID, partition, ts).
		Scan(&ref.BaseOffset, &ref.LastOffset, &ref.Records, &ref.MaxTimestamp, &ref.SegmentKey, &ref.SegmentSize, &ref.SegmentAt, &ref.ByteOffset, &ref.ByteLength, &ref.Batches)
	if errors.Is(err, pgx.ErrNoRows) {
		return BatchRef{}, false, nil
	}
	if err != nil {
		return BatchRef{}, false, s.classify("first batch at or after", err)
	}
	return ref, true, nil
}
