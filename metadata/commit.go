package metadata

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

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
	// ErrUnknownProducer: the chunk names a producer id that was never
	// issued, or that expired.
	ErrUnknownProducer = errors.New("metadata: unknown producer id")
	// ErrProducerFenced: the chunk's producer epoch is not the producer's
	// current epoch.
	ErrProducerFenced = errors.New("metadata: producer epoch fenced")
	// ErrOffsetMismatch: a conditional append found the partition at
	// another next offset; see OffsetMismatchError.
	ErrOffsetMismatch = errors.New("metadata: offset mismatch")
	// ErrSegmentExpired: the segment's pending row was gone or past its
	// deadline when the commit or swap finished; nothing was written.
	// Retriable with a new object.
	ErrSegmentExpired = errors.New("metadata: segment no longer pending")
)

func init() {
	sentinels = append(sentinels, ErrOutOfOrderSequence, ErrPartitionNotFound, ErrUnknownProducer,
		ErrProducerFenced, ErrOffsetMismatch, ErrSegmentExpired)
}

// OffsetMismatchError carries a conditional append's expected offset and
// the partition's actual next offset.
type OffsetMismatchError struct {
	Expected   int64
	NextOffset int64
}

func (e *OffsetMismatchError) Error() string {
	return fmt.Sprintf("expected next offset %d, the partition is at %d", e.Expected, e.NextOffset)
}

// Unwrap makes errors.Is(err, ErrOffsetMismatch) hold.
func (e *OffsetMismatchError) Unwrap() error { return ErrOffsetMismatch }

// SequenceError carries an out-of-order chunk's sequence and the one
// expected, with ErrOutOfOrderSequence.
type SequenceError struct {
	ProducerID int64
	Got, Want  int32
}

func (e *SequenceError) Error() string {
	return fmt.Sprintf("sequence %d of producer %d is not the next one; expected %d", e.Got, e.ProducerID, e.Want)
}

// Unwrap makes errors.Is(err, ErrOutOfOrderSequence) hold.
func (e *SequenceError) Unwrap() error { return ErrOutOfOrderSequence }

// NotifyChannel is the LISTEN/NOTIFY channel on which commits announce new
// high watermarks. The payload is a space-separated list of
// "topicID:partition:highWatermark" entries (see silt_commit_flush).
const NotifyChannel = "silt_commits"

// Segment kinds.
const (
	KindFlush     = "flush"     // written by a batcher: chunks of many partitions
	KindMerged    = "merged"    // rewritten by a partition's owner
	KindCompacted = "compacted" // rewritten by a partition's owner
	KindOrphan    = "orphan"    // found in the bucket without a row
)

// Chunk is one RecordBatch of one partition inside a segment object.
type Chunk struct {
	TopicID         int64
	Partition       int32
	ByteOffset      int64
	ByteLength      int32
	Records         int32 // records in the batch
	LastOffsetDelta int32 // offsets used = LastOffsetDelta + 1
	MaxTimestamp    int64
	// ProducerID > 0 makes the chunk idempotent with ProducerEpoch and
	// BaseSequence.
	ProducerID    int64
	ProducerEpoch int16
	BaseSequence  int32
	// CheckOffset makes the chunk conditional: it commits only if the
	// partition's next offset is ExpectedOffset.
	CheckOffset    bool
	ExpectedOffset int64
}

// Flush is one registered segment object and its chunks, in flush order.
type Flush struct {
	SegmentID   int64 // from RegisterSegment
	SegmentSize int64
	Chunks      []Chunk
}

// ChunkResult is the outcome of one chunk. Err is ErrPartitionNotFound,
// ErrOutOfOrderSequence, ErrUnknownProducer, ErrProducerFenced or
// ErrOffsetMismatch (wrapped), or nil. Duplicate means the chunk was an
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

// RegisterSegment records an object before it is written: a pending
// segment row whose deadline is ttl from now on Postgres's clock. The
// commit or swap that indexes the object must finish before then; after
// it, the janitor deletes the object and the row.
//
// The row commits asynchronously (synchronous_commit off): it waits for no
// WAL flush of its own. That is safe because the commit or swap that
// indexes the object flushes the WAL past it; a row lost in a crash before
// then leaves an object with no row, which the orphan sweep deletes, and
// its commit fails (SLT01, retriable). A flush so costs one WAL flush, not
// two.
func (s *Store) RegisterSegment(ctx context.Context, key string, size int64, kind string, ttl time.Duration) (int64, error) {
	var id int64
	err := s.pool.QueryRow(ctx, `
		WITH async AS (SELECT set_config('synchronous_commit', 'off', true))
		INSERT INTO segments (key, size, kind, state, deadline)
		SELECT $1, $2, $3, 'pending', now() + $4::interval FROM async RETURNING id`, key, size, kind, ttl).Scan(&id)
	if pgCode(err) == sqlUniqueViolation {
		return 0, fmt.Errorf("register segment %q: %w: key in use", key, ErrInvalidArgument)
	}
	return id, s.classify("register segment", err)
}

// AbandonSegment gives up a pending segment (its write or commit failed
// for certain): its deadline moves to now, so the janitor deletes the
// object, if any, at its next pass.
func (s *Store) AbandonSegment(ctx context.Context, id int64) error {
	_, err := s.pool.Exec(ctx, `UPDATE segments SET deadline = now() WHERE id = $1 AND state = 'pending'`, id)
	return s.classify("abandon segment", err)
}

// Commit result codes of silt_commit_flush.
const (
	codeOK = iota
	codePartitionNotFound
	codeDuplicate
	codeOutOfOrder
	codeUnknownProducer
	codeFencedEpoch
	codeOffsetMismatch
)

// CommitFlush indexes a registered segment in one server-side call
// (silt_commit_flush): it locks the partition rows in (topic, partition)
// order, checks idempotent sequences and conditional offsets, assigns base
// offsets, inserts the batch rows, advances the high watermarks, NOTIFYs
// and, last, turns the segment row live. The call is one statement sent
// with the simple protocol, so no lock is ever held while Postgres waits on
// this client. A chunk that fails its own check gets an error in its result
// and the others still commit; the returned error is for the call as a
// whole (then nothing was written): ErrSegmentExpired when the segment's
// deadline passed first.
func (s *Store) CommitFlush(ctx context.Context, f Flush) ([]ChunkResult, error) {
	results := make([]ChunkResult, len(f.Chunks))
	// Distinct partitions sorted (the lock order) and distinct producers.
	pidx := map[partKey]int32{}
	qidx := map[producerKey]int32{}
	var parts []partKey
	var prods []producerKey
	for _, c := range f.Chunks {
		k := partKey{c.TopicID, c.Partition}
		if _, ok := pidx[k]; !ok {
			pidx[k] = 0
			parts = append(parts, k)
		}
		if c.ProducerID > 0 {
			pk := producerKey{c.ProducerID, k}
			if _, ok := qidx[pk]; !ok {
				prods = append(prods, pk)
				qidx[pk] = int32(len(prods))
			}
		}
	}
	sort.Slice(parts, func(i, j int) bool {
		if parts[i].topic != parts[j].topic {
			return parts[i].topic < parts[j].topic
		}
		return parts[i].part < parts[j].part
	})
	pTopics := make([]int64, len(parts))
	pParts := make([]int32, len(parts))
	for i, k := range parts {
		pidx[k] = int32(i + 1)
		pTopics[i], pParts[i] = k.topic, k.part
	}
	qProd := make([]int64, len(prods))
	qTopics := make([]int64, len(prods))
	qParts := make([]int32, len(prods))
	for i, p := range prods {
		qProd[i], qTopics[i], qParts[i] = p.producer, p.topic, p.part
	}
	n := len(f.Chunks)
	var (
		cP, cQ, cLen, cRecs, cDelta, cEpoch, cSeq = make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, n)
		cOff, cTS, cExp                           = make([]int64, n), make([]int64, n), make([]int64, n)
	)
	for i, c := range f.Chunks {
		k := partKey{c.TopicID, c.Partition}
		cP[i] = pidx[k]
		if c.ProducerID > 0 {
			cQ[i] = qidx[producerKey{c.ProducerID, k}]
		}
		cOff[i], cLen[i], cRecs[i], cDelta[i], cTS[i] = c.ByteOffset, c.ByteLength, c.Records, c.LastOffsetDelta, c.MaxTimestamp
		cEpoch[i], cSeq[i] = int32(c.ProducerEpoch), c.BaseSequence
		cExp[i] = -1
		if c.CheckOffset {
			cExp[i] = c.ExpectedOffset
		}
	}
	var (
		bases, details []int64
		codes          []int32
		lockWaitUs     int64
		notes          []string
	)
	err := s.pool.QueryRow(ctx, `
		SELECT base_offsets, codes, details, lock_wait_us, notes FROM silt_commit_flush(
			$1::bigint, $2::bigint, $3::bigint[], $4::integer[], $5::bigint[], $6::bigint[], $7::integer[],
			$8::integer[], $9::integer[], $10::bigint[], $11::integer[], $12::integer[], $13::integer[], $14::bigint[],
			$15::integer[], $16::integer[], $17::bigint[], false)`,
		pgx.QueryExecModeSimpleProtocol,
		f.SegmentID, f.SegmentSize, pTopics, pParts, qProd, qTopics, qParts,
		cP, cQ, cOff, cLen, cRecs, cDelta, cTS, cEpoch, cSeq, cExp).Scan(&bases, &codes, &details, &lockWaitUs, &notes)
	if err != nil {
		return nil, s.classify("commit flush", err)
	}
	s.metrics.commitLockWait.Observe(float64(lockWaitUs) / 1e6)
	s.notifyCommits(ctx, notes)
	if len(bases) != n || len(codes) != n || len(details) != n {
		return nil, fmt.Errorf("commit flush: %d chunks, %d results", n, len(codes))
	}
	for i, c := range f.Chunks {
		r := &results[i]
		switch codes[i] {
		case codeOK:
			r.BaseOffset = bases[i]
		case codeDuplicate:
			r.BaseOffset, r.Duplicate = bases[i], true
		case codePartitionNotFound:
			r.Err = fmt.Errorf("topic %d partition %d: %w", c.TopicID, c.Partition, ErrPartitionNotFound)
		case codeOutOfOrder:
			r.Err = fmt.Errorf("partition %d: %w", c.Partition,
				&SequenceError{ProducerID: c.ProducerID, Got: c.BaseSequence, Want: int32(details[i])})
		case codeUnknownProducer:
			r.Err = fmt.Errorf("producer id %d is unknown: %w", c.ProducerID, ErrUnknownProducer)
		case codeFencedEpoch:
			r.Err = fmt.Errorf("producer %d has epoch %d, not %d: %w", c.ProducerID, details[i], c.ProducerEpoch, ErrProducerFenced)
		case codeOffsetMismatch:
			r.Err = fmt.Errorf("partition %d: %w", c.Partition,
				&OffsetMismatchError{Expected: c.ExpectedOffset, NextOffset: details[i]})
		default:
			return nil, fmt.Errorf("commit flush: unknown result code %d", codes[i])
		}
	}
	return results, nil
}

// notifyCommits announces committed high watermarks on NotifyChannel in
// a transaction of its own, after the commit: see silt_commit_flush in
// migration 0007 for why not inside it. It commits asynchronously, holding
// Postgres's notification lock for no WAL flush. A notification that fails
// is logged and dropped: the records are committed, and long-polls on
// those partitions wake at their time out instead.
func (s *Store) notifyCommits(ctx context.Context, notes []string) {
	if len(notes) == 0 {
		return
	}
	_, err := s.pool.Exec(ctx, `SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, n) FROM unnest($2::text[]) AS n`,
		NotifyChannel, notes)
	if err != nil {
		s.metrics.notifyFailures.Inc()
		s.logger.Warn("commit notification failed; long-polls on its partitions wake at their time out", "err", s.classify("notify commits", err))
	}
}

// NewProducerID issues a fresh idempotent producer id: 63 random bits, so
// that no client can guess another's, recorded so that only issued ids are
// accepted.
func (s *Store) NewProducerID(ctx context.Context) (int64, error) {
	for attempt := 0; ; attempt++ {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("new producer id: %w", err)
		}
		id := int64(binary.BigEndian.Uint64(b[:]) >> 1)
		if id == 0 {
			continue
		}
		_, err := s.pool.Exec(ctx, `INSERT INTO producers (id) VALUES ($1)`, id)
		if pgCode(err) == sqlUniqueViolation && attempt < 3 {
			continue
		}
		if err != nil {
			return 0, s.classify("new producer id", err)
		}
		return id, nil
	}
}

// BumpProducerEpoch moves producer id to the epoch after epoch, which must
// be its current one (Kafka's InitProducerId with a producer id, KIP-360):
// its sequences start over at 0 and writes at older epochs are fenced.
// ErrUnknownProducer when the id was never issued or expired,
// ErrProducerFenced when epoch is not its current one.
func (s *Store) BumpProducerEpoch(ctx context.Context, id int64, epoch int16) (int16, error) {
	var next, current int32
	err := s.pool.QueryRow(ctx, `
		WITH cur AS (SELECT epoch FROM producers WHERE id = $1),
		     up AS (UPDATE producers SET epoch = epoch + 1 WHERE id = $1 AND epoch = $2 AND epoch < 32767 RETURNING epoch)
		SELECT coalesce((SELECT epoch FROM up), -1), coalesce((SELECT epoch FROM cur), -1)`, id, int32(epoch)).Scan(&next, &current)
	switch {
	case err != nil:
		return 0, s.classify("bump producer epoch", err)
	case current < 0:
		return 0, fmt.Errorf("producer id %d is unknown: %w", id, ErrUnknownProducer)
	case next < 0:
		return 0, fmt.Errorf("producer %d has epoch %d, not %d: %w", id, current, epoch, ErrProducerFenced)
	}
	return int16(next), nil
}
