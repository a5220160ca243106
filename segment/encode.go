package segment

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"slices"

	"github.com/klauspost/compress/zstd"
)

// BatchOptions set the batch-level fields written by AppendBatch.
type BatchOptions struct {
	// Compression of the records section: CompressionNone or CompressionZstd.
	Compression Compression
	// Idempotent says the producer fields below are meaningful. When false
	// (the zero value), producerId, producerEpoch and baseSequence are
	// written as -1, as Kafka does for a non-idempotent producer, and the
	// three fields below are ignored.
	Idempotent    bool
	ProducerID    int64
	ProducerEpoch int16
	BaseSequence  int32
	// LastOffsetDelta, when larger than the last record's OffsetDelta, is
	// written instead: re-encoding a batch whose last offsets compaction
	// removed keeps the offsets it covers.
	LastOffsetDelta int32
}

// BatchInfo summarises a batch written by AppendBatch.
type BatchInfo struct {
	Records         int32 // number of records
	LastOffsetDelta int32 // OffsetDelta of the last record, or BatchOptions.LastOffsetDelta if larger
	FirstTimestamp  int64 // timestamp of the first record (the batch's baseTimestamp)
	MaxTimestamp    int64 // largest record timestamp
	Size            int   // encoded bytes appended to dst
}

// maxRecordsSection bounds the uncompressed records section: batchLength is
// an int32 and also counts the 49 header bytes after it.
const maxRecordsSection = math.MaxInt32 - (BatchHeaderSize - batchLengthOverhead)

// ZstdLevel is the zstd compression level of an Encoder.
type ZstdLevel int8

// Levels, fastest first. They map to klauspost/compress/zstd's SpeedFastest
// (roughly zstd level 1), SpeedDefault (level 3, Kafka's default), and
// SpeedBetterCompression (level 7).
const (
	ZstdFastest ZstdLevel = iota
	ZstdDefault
	ZstdBetter
)

// Encoder writes RecordBatches. It owns a zstd encoder and scratch buffers
// that it reuses from call to call, so keep one per flushing goroutine. An
// Encoder is not safe for concurrent use. The zero value is not usable; call
// NewEncoder.
type Encoder struct {
	level   ZstdLevel
	zenc    *zstd.Encoder
	scratch []byte // uncompressed records section, for zstd
	sizes   []int  // per-record body sizes of the batch being written
}

// NewEncoder returns an Encoder that compresses at ZstdFastest, which on
// typical record data is about twice as fast as ZstdDefault for a ratio
// within a few percent. Its zstd encoder is created on first use.
func NewEncoder() *Encoder { return &Encoder{level: ZstdFastest} }

// NewEncoderLevel returns an Encoder that compresses at level.
func NewEncoderLevel(level ZstdLevel) *Encoder { return &Encoder{level: level} }

func (e *Encoder) zstdEncoder() (*zstd.Encoder, error) {
	if e.zenc == nil {
		level := zstd.SpeedFastest
		switch e.level {
		case ZstdDefault:
			level = zstd.SpeedDefault
		case ZstdBetter:
			level = zstd.SpeedBetterCompression
		}
		z, err := zstd.NewWriter(nil,
			zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderLevel(level))
		if err != nil {
			return nil, fmt.Errorf("segment: zstd encoder: %w", err)
		}
		e.zenc = z
	}
	return e.zenc, nil
}

// AppendBatch appends recs to dst as one Kafka RecordBatch v2 (magic 2) and
// returns the extended slice. The batch has baseOffset 0 (the real offset is
// assigned elsewhere and patched in with SetBaseOffset on read),
// partitionLeaderEpoch -1, CreateTime timestamps, baseTimestamp set to the
// first record's timestamp and maxTimestamp to the largest one.
//
// recs must be non-empty with OffsetDelta >= 0 and strictly increasing
// (ErrInvalid otherwise); lastOffsetDelta is the last record's OffsetDelta,
// or opts.LastOffsetDelta when that is larger.
// Record timestamps need not be ordered. On error dst is returned with its
// original length (bytes past it may have been written).
func (e *Encoder) AppendBatch(dst []byte, recs []Record, opts BatchOptions) ([]byte, BatchInfo, error) {
	var info BatchInfo
	if len(recs) == 0 {
		return dst, info, fmt.Errorf("%w: empty batch", ErrInvalid)
	}
	if len(recs) > math.MaxInt32 {
		return dst, info, fmt.Errorf("%w: %d records in one batch", ErrTooLarge, len(recs))
	}
	if opts.Compression != CompressionNone && opts.Compression != CompressionZstd {
		return dst, info, fmt.Errorf("%w: cannot encode compression %v", ErrUnsupported, opts.Compression)
	}

	// Pass 1: validate and size every record so the records are written
	// once, straight into their final place.
	base := recs[0].Timestamp
	maxTS := base
	prev := int32(-1)
	total := 0
	sizes := e.sizes[:0]
	for i := range recs {
		r := &recs[i]
		if r.OffsetDelta <= prev {
			return dst, info, fmt.Errorf("%w: record %d has offset delta %d after %d (must be >= 0 and strictly increasing)", ErrInvalid, i, r.OffsetDelta, prev)
		}
		prev = r.OffsetDelta
		maxTS = max(maxTS, r.Timestamp)
		n, err := recordBodySize(r, base)
		if err != nil {
			return dst, info, fmt.Errorf("record %d: %w", i, err)
		}
		sizes = append(sizes, n)
		total += varintLen(int64(n)) + n
		if total > maxRecordsSection {
			return dst, info, fmt.Errorf("%w: records section exceeds %d bytes", ErrTooLarge, maxRecordsSection)
		}
	}
	e.sizes = sizes

	start := len(dst)
	compression := opts.Compression
	if compression == CompressionNone {
		dst = slices.Grow(dst, BatchHeaderSize+total)
		dst = dst[:start+BatchHeaderSize]
		dst = appendRecords(dst, recs, sizes, base)
	} else {
		z, err := e.zstdEncoder()
		if err != nil {
			return dst, info, err
		}
		e.scratch = appendRecords(slices.Grow(e.scratch[:0], total), recs, sizes, base)
		// Room for the worst case (incompressible records), so that
		// EncodeAll never reallocates dst, which holds the whole segment
		// object built so far when called by Builder.Add.
		dst = slices.Grow(dst, BatchHeaderSize+zstdBound(total))
		dst = z.EncodeAll(e.scratch, dst[:start+BatchHeaderSize])
		if len(dst)-start-BatchHeaderSize > total-total/minCompressionGain {
			// zstd saves too little to be worth its cost on every read
			// (incompressible values: encrypted, already compressed):
			// the records are stored as they are.
			dst = append(dst[:start+BatchHeaderSize], e.scratch...)
			compression = CompressionNone
		}
	}
	size := len(dst) - start
	if size-batchLengthOverhead > math.MaxInt32 {
		return dst[:start], info, fmt.Errorf("%w: batch of %d bytes", ErrTooLarge, size)
	}

	lastDelta := max(prev, opts.LastOffsetDelta)
	producerID, producerEpoch, baseSequence := int64(-1), int16(-1), int32(-1)
	if opts.Idempotent {
		producerID, producerEpoch, baseSequence = opts.ProducerID, opts.ProducerEpoch, opts.BaseSequence
	}
	b := dst[start:]
	be := binary.BigEndian
	be.PutUint64(b[offBaseOffset:], 0)
	be.PutUint32(b[offBatchLength:], uint32(size-batchLengthOverhead))
	be.PutUint32(b[offLeaderEpoch:], math.MaxUint32) // -1: no leader epoch
	b[offMagic] = BatchMagic
	be.PutUint16(b[offAttributes:], uint16(compression))
	be.PutUint32(b[offLastOffsetDelta:], uint32(lastDelta))
	be.PutUint64(b[offBaseTimestamp:], uint64(base))
	be.PutUint64(b[offMaxTimestamp:], uint64(maxTS))
	be.PutUint64(b[offProducerID:], uint64(producerID))
	be.PutUint16(b[offProducerEpoch:], uint16(producerEpoch))
	be.PutUint32(b[offBaseSequence:], uint32(baseSequence))
	be.PutUint32(b[offRecordCount:], uint32(len(recs)))
	be.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], castagnoli))

	info = BatchInfo{
		Records:         int32(len(recs)),
		LastOffsetDelta: lastDelta,
		FirstTimestamp:  base,
		MaxTimestamp:    maxTS,
		Size:            size,
	}
	return dst, info, nil
}

// bytesFieldLen is the encoded size of a nullable length-prefixed field.
func bytesFieldLen(b []byte) int {
	if b == nil {
		return 1 // varint -1
	}
	return varintLen(int64(len(b))) + len(b)
}

// recordBodySize is the encoded size of r after its length prefix.
func recordBodySize(r *Record, base int64) (int, error) {
	if len(r.Key) > math.MaxInt32 || len(r.Value) > math.MaxInt32 || len(r.Headers) > math.MaxInt32 {
		return 0, fmt.Errorf("%w: key, value or header count exceeds int32", ErrTooLarge)
	}
	n := 1 + // attributes
		varintLen(r.Timestamp-base) +
		varintLen(int64(r.OffsetDelta)) +
		bytesFieldLen(r.Key) +
		bytesFieldLen(r.Value) +
		varintLen(int64(len(r.Headers)))
	for i := range r.Headers {
		h := &r.Headers[i]
		if len(h.Key) > math.MaxInt32 || len(h.Value) > math.MaxInt32 {
			return 0, fmt.Errorf("%w: header %d exceeds int32", ErrTooLarge, i)
		}
		n += varintLen(int64(len(h.Key))) + len(h.Key) + bytesFieldLen(h.Value)
	}
	if n > math.MaxInt32 {
		return 0, fmt.Errorf("%w: record of %d bytes", ErrTooLarge, n)
	}
	return n, nil
}

func appendBytesField(dst, b []byte) []byte {
	if b == nil {
		return append(dst, 1) // zigzag(-1)
	}
	dst = appendVarint(dst, int64(len(b)))
	return append(dst, b...)
}

// appendRecords writes the records section; sizes[i] is the body size of
// recs[i] as computed by recordBodySize.
func appendRecords(dst []byte, recs []Record, sizes []int, base int64) []byte {
	for i := range recs {
		r := &recs[i]
		dst = appendVarint(dst, int64(sizes[i]))
		dst = append(dst, 0) // record attributes: unused, always 0
		dst = appendVarint(dst, r.Timestamp-base)
		dst = appendVarint(dst, int64(r.OffsetDelta))
		dst = appendBytesField(dst, r.Key)
		dst = appendBytesField(dst, r.Value)
		dst = appendVarint(dst, int64(len(r.Headers)))
		for j := range r.Headers {
			h := &r.Headers[j]
			dst = appendVarint(dst, int64(len(h.Key)))
			dst = append(dst, h.Key...)
			dst = appendBytesField(dst, h.Value)
		}
	}
	return dst
}

// zstdBound is an upper bound of the zstd frame of n bytes: incompressible
// input is stored in raw blocks of at most 128 KiB with 3-byte headers,
// after a frame header and before a checksum (zstd's ZSTD_compressBound is
// n + n/256 + a little).
func zstdBound(n int) int { return n + n>>8 + 64 }

// minCompressionGain: a zstd batch must be at least 1/minCompressionGain
// (about 3%) smaller than its records, or they are stored uncompressed.
const minCompressionGain = 32
