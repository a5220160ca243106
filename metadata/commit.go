package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Errors of CommitFlush chunks.
var (
	// ErrOutOfOrderSequence: an idempotent chunk's base sequence is neither
	// the next expected one nor a recent duplicate.
	ErrOutOfOrderSequence = errors.New("metadata: out of order sequence")
	// ErrPartitionNotFound: the chunk's partition does not exist (the topic
	// was deleted or never had that partition).
	ErrPartitionNotFound = errors.New("metadata: partition not found")
)

func init() {
	sentinels = append(sentinels, ErrOutOfOrderSequence, ErrPartitionNotFound)
}

// NotifyChannel is the LISTEN/NOTIFY channel on which commits announce new
// high watermarks. The payload is a space-separated list of
// "topicID:partition:highWatermark" entries.
const NotifyChannel = "silt_commits"

// maxNotifyPayload keeps each NOTIFY under Postgres' 8000-byte limit.
const maxNotifyPayload = 7900

// recentBatches is how many committed batches per producer and partition
// are remembered to answer retries (as Kafka does).
const recentBatches = 5

// Chunk is one RecordBatch of one partition inside a segment object.
type Chunk struct {
	TopicID         int64
	Partition       int32
	ByteOffset      int64
	ByteLength      int32
	Records         int32 // records in the batch
	LastOffsetDelta int32 // offsets used = LastOffsetDelta + 1
	MaxTimestamp    int64
	// ProducerID > 0 makes the chunk idempotent with BaseSequence.
	ProducerID   int64
	BaseSequence int32
}

// Flush is one segment object and its chunks, in flush order.
type Flush struct {
	SegmentKey  string
	SegmentSize int64
	Chunks      []Chunk
}

// ChunkResult is the outcome of one chunk. Err is ErrPartitionNotFound or
// ErrOutOfOrderSequence (wrapped), or nil. Duplicate means the chunk was an
// idempotent retry: BaseOffset is the original's and nothing was written.
type ChunkResult struct {
	BaseOffset int64
	Duplicate  bool
	Err        error
}

type partKey struct {
	topic int64
	part  int32
}

type producerKey struct {
	producer int64
	partKey
}

type producerState struct {
	lastSeq int32
	recent  []recentBatch // oldest first
	dirty   bool
}

// recentBatch is [base sequence, last sequence, base offset] in JSON.
type recentBatch [3]int64

// CommitFlush indexes a flushed segment in one transaction: it locks the
// partition rows in (topic, partition) order, checks idempotent sequences,
// assigns base offsets, inserts the segment row and the batch rows in bulk,
// advances the high watermarks and NOTIFYs. A chunk that fails its own check
// gets an error in its result and the others still commit; the returned
// error is for the transaction as a whole (then nothing was written).
func (s *Store) CommitFlush(ctx context.Context, f Flush) ([]ChunkResult, error) {
	results := make([]ChunkResult, len(f.Chunks))
	if len(f.Chunks) == 0 {
		return results, nil
	}
	// Distinct partitions and producers, sorted: the lock order.
	parts := map[partKey]int64{}
	var producers []producerKey
	seenProd := map[producerKey]bool{}
	for _, c := range f.Chunks {
		k := partKey{c.TopicID, c.Partition}
		parts[k] = -1
		if c.ProducerID > 0 {
			pk := producerKey{c.ProducerID, k}
			if !seenProd[pk] {
				seenProd[pk] = true
				producers = append(producers, pk)
			}
		}
	}
	keys := make([]partKey, 0, len(parts))
	for k := range parts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].topic != keys[j].topic {
			return keys[i].topic < keys[j].topic
		}
		return keys[i].part < keys[j].part
	})
	topicIDs := make([]int64, len(keys))
	partNums := make([]int32, len(keys))
	for i, k := range keys {
		topicIDs[i], partNums[i] = k.topic, k.part
	}

	err := s.inTx(ctx, "commit flush", func(tx pgx.Tx) error {
		// Round trip 1: segment row, partition locks, producer state.
		batch := &pgx.Batch{}
		var segmentID int64
		batch.Queue(`INSERT INTO segments (key, size) VALUES ($1, $2) RETURNING id`, f.SegmentKey, f.SegmentSize).
			QueryRow(func(r pgx.Row) error { return r.Scan(&segmentID) })
		batch.Queue(`
			SELECT p.topic_id, p.partition, p.next_offset
			FROM partitions p
			JOIN unnest($1::bigint[], $2::int[]) AS r(topic_id, partition)
			  ON p.topic_id = r.topic_id AND p.partition = r.partition
			ORDER BY p.topic_id, p.partition
			FOR NO KEY UPDATE OF p`, topicIDs, partNums).
			Query(func(rows pgx.Rows) error {
				for rows.Next() {
					var k partKey
					var next int64
					if err := rows.Scan(&k.topic, &k.part, &next); err != nil {
						return err
					}
					parts[k] = next
				}
				return rows.Err()
			})
		states := map[producerKey]*producerState{}
		if len(producers) > 0 {
			pids := make([]int64, len(producers))
			ptop := make([]int64, len(producers))
			ppart := make([]int32, len(producers))
			for i, p := range producers {
				pids[i], ptop[i], ppart[i] = p.producer, p.topic, p.part
			}
			batch.Queue(`
				SELECT s.producer_id, s.topic_id, s.partition, s.last_sequence, s.recent
				FROM producer_state s
				JOIN unnest($1::bigint[], $2::bigint[], $3::int[]) AS r(producer_id, topic_id, partition)
				  ON s.producer_id = r.producer_id AND s.topic_id = r.topic_id AND s.partition = r.partition`,
				pids, ptop, ppart).
				Query(func(rows pgx.Rows) error {
					for rows.Next() {
						var k producerKey
						st := &producerState{}
						if err := rows.Scan(&k.producer, &k.topic, &k.part, &st.lastSeq, &st.recent); err != nil {
							return err
						}
						states[k] = st
					}
					return rows.Err()
				})
		}
		if err := tx.SendBatch(ctx, batch).Close(); err != nil {
			return err
		}

		// Assign offsets in flush order.
		var (
			bTopic, bOff, bLast, bMaxTS, bByteOff []int64
			bPart, bCount, bLen                   []int32
			addBytes                              = map[partKey]int64{}
			startNext                             = map[partKey]int64{}
		)
		for k, v := range parts {
			startNext[k] = v
		}
		for i, c := range f.Chunks {
			k := partKey{c.TopicID, c.Partition}
			next := parts[k]
			if next < 0 {
				results[i].Err = fmt.Errorf("topic %d partition %d: %w", c.TopicID, c.Partition, ErrPartitionNotFound)
				continue
			}
			if c.ProducerID > 0 {
				pk := producerKey{c.ProducerID, k}
				st := states[pk]
				lastSeq := wrapSequence(int64(c.BaseSequence) + int64(c.Records) - 1)
				if st != nil {
					if dup, off := st.duplicate(c.BaseSequence, lastSeq); dup {
						results[i] = ChunkResult{BaseOffset: off, Duplicate: true}
						continue
					}
				}
				expected := int32(0)
				if st != nil {
					expected = wrapSequence(int64(st.lastSeq) + 1)
				}
				if c.BaseSequence != expected {
					results[i].Err = fmt.Errorf("producer %d topic %d partition %d: sequence %d, expected %d: %w",
						c.ProducerID, c.TopicID, c.Partition, c.BaseSequence, expected, ErrOutOfOrderSequence)
					continue
				}
				if st == nil {
					st = &producerState{}
					states[pk] = st
				}
				st.record(c.BaseSequence, lastSeq, next)
			}
			results[i].BaseOffset = next
			parts[k] = next + int64(c.LastOffsetDelta) + 1
			addBytes[k] += int64(c.ByteLength)
			bTopic = append(bTopic, c.TopicID)
			bPart = append(bPart, c.Partition)
			bOff = append(bOff, next)
			bLast = append(bLast, next+int64(c.LastOffsetDelta))
			bCount = append(bCount, c.Records)
			bMaxTS = append(bMaxTS, c.MaxTimestamp)
			bByteOff = append(bByteOff, c.ByteOffset)
			bLen = append(bLen, c.ByteLength)
		}
		if len(bTopic) == 0 {
			// Nothing to index: the object is unreferenced from the start.
			_, err := tx.Exec(ctx, `UPDATE segments SET unreferenced_at = now() WHERE id = $1`, segmentID)
			return err
		}

		// Round trip 2: batch rows, high watermarks, producer state, notify.
		batch = &pgx.Batch{}
		batch.Queue(`
			INSERT INTO batches (topic_id, partition, base_offset, last_offset, record_count,
			                     max_timestamp, segment_id, byte_offset, byte_length)
			SELECT r.topic_id, r.partition, r.base_offset, r.last_offset, r.record_count,
			       r.max_timestamp, $9, r.byte_offset, r.byte_length
			FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::bigint[], $5::int[], $6::bigint[], $7::bigint[], $8::int[])
			  AS r(topic_id, partition, base_offset, last_offset, record_count, max_timestamp, byte_offset, byte_length)`,
			bTopic, bPart, bOff, bLast, bCount, bMaxTS, bByteOff, bLen, segmentID)
		var uTopic, uNext, uBytes []int64
		var uPart []int32
		var notes []string
		for _, k := range keys {
			if parts[k] < 0 || parts[k] == startNext[k] {
				continue
			}
			uTopic = append(uTopic, k.topic)
			uPart = append(uPart, k.part)
			uNext = append(uNext, parts[k])
			uBytes = append(uBytes, addBytes[k])
			notes = append(notes, strconv.FormatInt(k.topic, 10)+":"+strconv.Itoa(int(k.part))+":"+strconv.FormatInt(parts[k], 10))
		}
		batch.Queue(`
			UPDATE partitions p SET next_offset = r.next_offset, total_bytes = p.total_bytes + r.bytes
			FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::bigint[]) AS r(topic_id, partition, next_offset, bytes)
			WHERE p.topic_id = r.topic_id AND p.partition = r.partition`, uTopic, uPart, uNext, uBytes)
		if err := queueProducerUpserts(batch, states); err != nil {
			return err
		}
		for _, payload := range notifyPayloads(notes) {
			batch.Queue(`SELECT pg_notify($1, $2)`, NotifyChannel, payload)
		}
		return tx.SendBatch(ctx, batch).Close()
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// wrapSequence wraps a producer sequence past the largest int32 to 0, as
// Kafka does.
func wrapSequence(n int64) int32 {
	return int32(n % (math.MaxInt32 + 1))
}

func (st *producerState) duplicate(base, last int32) (bool, int64) {
	for _, r := range st.recent {
		if r[0] == int64(base) && r[1] == int64(last) {
			return true, r[2]
		}
	}
	return false, 0
}

func (st *producerState) record(base, last int32, offset int64) {
	st.lastSeq = last
	st.recent = append(st.recent, recentBatch{int64(base), int64(last), offset})
	if n := len(st.recent); n > recentBatches {
		st.recent = st.recent[n-recentBatches:]
	}
	st.dirty = true
}

func queueProducerUpserts(batch *pgx.Batch, states map[producerKey]*producerState) error {
	var pids, topics []int64
	var parts, lastSeqs []int32
	var recents [][]byte
	for k, st := range states {
		if !st.dirty {
			continue
		}
		raw, err := json.Marshal(st.recent)
		if err != nil {
			return err
		}
		pids = append(pids, k.producer)
		topics = append(topics, k.topic)
		parts = append(parts, k.part)
		lastSeqs = append(lastSeqs, st.lastSeq)
		recents = append(recents, raw)
	}
	if len(pids) == 0 {
		return nil
	}
	batch.Queue(`
		INSERT INTO producer_state (producer_id, topic_id, partition, last_sequence, recent, updated_at)
		SELECT r.producer_id, r.topic_id, r.partition, r.last_sequence, r.recent, now()
		FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::int[], $5::jsonb[])
		  AS r(producer_id, topic_id, partition, last_sequence, recent)
		ON CONFLICT (producer_id, topic_id, partition) DO UPDATE SET
		  last_sequence = EXCLUDED.last_sequence, recent = EXCLUDED.recent, updated_at = now()`,
		pids, topics, parts, lastSeqs, recents)
	return nil
}

// notifyPayloads packs entries into payloads under the NOTIFY size limit.
func notifyPayloads(entries []string) []string {
	var out []string
	var b strings.Builder
	for _, e := range entries {
		if b.Len() > 0 && b.Len()+1+len(e) > maxNotifyPayload {
			out = append(out, b.String())
			b.Reset()
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(e)
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}

// NewProducerID issues a fresh idempotent producer id.
func (s *Store) NewProducerID(ctx context.Context) (int64, error) {
	var id int64
	err := s.pool.QueryRow(ctx, `SELECT nextval('producer_ids')`).Scan(&id)
	return id, classify("new producer id", err)
}
