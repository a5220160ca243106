package segment

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// castagnoli is the CRC-32C table used for batch and footer checksums.
// hash/crc32 uses the CPU's CRC32 instruction for it where available.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is one record header. A nil Value is a null header value; an empty
// non-nil Value is an empty one.
type Header struct {
	Key   string
	Value []byte
}

// Record is one record of a batch.
type Record struct {
	// OffsetDelta is the record's offset relative to the batch's base
	// offset: 0..n-1 for a freshly produced batch; compaction may leave gaps.
	OffsetDelta int32
	// Timestamp is the record timestamp in Unix milliseconds.
	Timestamp int64
	// Key and Value: nil is null (a nil Value is a tombstone); an empty
	// non-nil slice is an empty value, distinct from null.
	Key, Value []byte
	// Headers in order. Decoding leaves it nil when there are none.
	Headers []Header
}

// Compression is the batch compression codec, numbered as in Kafka's
// attributes bits 0-2.
type Compression int8

// Codecs this package reads and writes. Kafka's gzip (1), snappy (2) and
// lz4 (3) are read too (see codecs.go) but never written.
const (
	CompressionNone Compression = 0
	CompressionZstd Compression = 4
)

func (c Compression) String() string {
	switch c {
	case CompressionNone:
		return "none"
	case 1:
		return "gzip"
	case 2:
		return "snappy"
	case 3:
		return "lz4"
	case CompressionZstd:
		return "zstd"
	}
	return fmt.Sprintf("compression(%d)", int8(c))
}

// Attribute bits of a RecordBatch.
const (
	AttrCompressionMask int16 = 0x07
	AttrLogAppendTime   int16 = 0x08 // timestamp type: 0 CreateTime, 1 LogAppendTime
	AttrTransactional   int16 = 0x10
	AttrControl         int16 = 0x20
)

// RecordBatch v2 layout constants.
const (
	// BatchHeaderSize is the size of the fixed part of a RecordBatch, from
	// baseOffset to recordCount inclusive; the records section follows.
	BatchHeaderSize = 61
	// BatchMagic is the RecordBatch format version ("magic") handled here.
	BatchMagic = 2

	// batchLengthOverhead is the number of bytes not counted by batchLength
	// (baseOffset and batchLength themselves).
	batchLengthOverhead = 12

	offBaseOffset      = 0
	offBatchLength     = 8
	offLeaderEpoch     = 12
	offMagic           = 16
	offCRC             = 17
	offAttributes      = 21 // CRC covers from here to the end
	offLastOffsetDelta = 23
	offBaseTimestamp   = 27
	offMaxTimestamp    = 35
	offProducerID      = 43
	offProducerEpoch   = 51
	offBaseSequence    = 53
	offRecordCount     = 57

	// minRecordSize is the smallest encoded record: a 1-byte length and a
	// 6-byte body (attributes, timestampDelta, offsetDelta, keyLength,
	// valueLength, headerCount, each 1 byte).
	minRecordSize = 7
	// minHeaderSize is the smallest encoded header: two 1-byte lengths.
	minHeaderSize = 2
)

// BatchHeader holds the fixed fields of a RecordBatch v2, everything but
// the records.
type BatchHeader struct {
	BaseOffset           int64
	Length               int32 // batchLength: bytes after the Length field
	PartitionLeaderEpoch int32
	Magic                int8
	CRC                  uint32
	Attributes           int16
	LastOffsetDelta      int32
	BaseTimestamp        int64
	MaxTimestamp         int64
	ProducerID           int64
	ProducerEpoch        int16
	BaseSequence         int32
	RecordCount          int32
}

// Size is the whole batch's size in bytes, header and records.
func (h BatchHeader) Size() int { return int(h.Length) + batchLengthOverhead }

// Compression is the codec from the attributes.
func (h BatchHeader) Compression() Compression {
	return Compression(h.Attributes & AttrCompressionMask)
}

// LogAppendTime reports the timestamp-type attribute bit.
func (h BatchHeader) LogAppendTime() bool { return h.Attributes&AttrLogAppendTime != 0 }

// Transactional reports the transactional attribute bit.
func (h BatchHeader) Transactional() bool { return h.Attributes&AttrTransactional != 0 }

// Control reports the control-batch attribute bit.
func (h BatchHeader) Control() bool { return h.Attributes&AttrControl != 0 }

// LastOffset is BaseOffset + LastOffsetDelta.
func (h BatchHeader) LastOffset() int64 { return h.BaseOffset + int64(h.LastOffsetDelta) }

// ParseBatchHeader reads the fixed header of the RecordBatch at the start of
// chunk without touching the records. It checks the magic (ErrUnsupported),
// that batchLength covers at least the fixed header, and that recordCount
// is not negative (ErrCorrupt). chunk may be a prefix of the batch (at least
// BatchHeaderSize bytes) or hold more bytes after it; the CRC is not
// verified. Use VerifyBatch to check a complete chunk.
func ParseBatchHeader(chunk []byte) (BatchHeader, error) {
	var h BatchHeader
	if len(chunk) < BatchHeaderSize {
		return h, fmt.Errorf("%w: batch header needs %d bytes, have %d", ErrCorrupt, BatchHeaderSize, len(chunk))
	}
	h.Magic = int8(chunk[offMagic])
	if h.Magic != BatchMagic {
		return h, fmt.Errorf("%w: record batch magic %d (want %d)", ErrUnsupported, h.Magic, BatchMagic)
	}
	be := binary.BigEndian
	h.BaseOffset = int64(be.Uint64(chunk[offBaseOffset:]))
	h.Length = int32(be.Uint32(chunk[offBatchLength:]))
	h.PartitionLeaderEpoch = int32(be.Uint32(chunk[offLeaderEpoch:]))
	h.CRC = be.Uint32(chunk[offCRC:])
	h.Attributes = int16(be.Uint16(chunk[offAttributes:]))
	h.LastOffsetDelta = int32(be.Uint32(chunk[offLastOffsetDelta:]))
	h.BaseTimestamp = int64(be.Uint64(chunk[offBaseTimestamp:]))
	h.MaxTimestamp = int64(be.Uint64(chunk[offMaxTimestamp:]))
	h.ProducerID = int64(be.Uint64(chunk[offProducerID:]))
	h.ProducerEpoch = int16(be.Uint16(chunk[offProducerEpoch:]))
	h.BaseSequence = int32(be.Uint32(chunk[offBaseSequence:]))
	h.RecordCount = int32(be.Uint32(chunk[offRecordCount:]))
	if h.Length < BatchHeaderSize-batchLengthOverhead {
		return h, fmt.Errorf("%w: batch length %d shorter than the batch header", ErrCorrupt, h.Length)
	}
	if h.RecordCount < 0 {
		return h, fmt.Errorf("%w: negative record count %d", ErrCorrupt, h.RecordCount)
	}
	return h, nil
}

// VerifyBatch checks that chunk is exactly one complete RecordBatch v2 with
// a valid CRC-32C, and returns its header. It does not decompress or parse
// the records.
func VerifyBatch(chunk []byte) (BatchHeader, error) {
	h, err := ParseBatchHeader(chunk)
	if err != nil {
		return h, err
	}
	if h.Size() != len(chunk) {
		return h, fmt.Errorf("%w: batch length field says %d bytes, chunk has %d", ErrCorrupt, h.Size(), len(chunk))
	}
	if crc := crc32.Checksum(chunk[offAttributes:], castagnoli); crc != h.CRC {
		return h, fmt.Errorf("%w: batch crc %08x, computed %08x", ErrCorrupt, h.CRC, crc)
	}
	return h, nil
}

// SetBaseOffset writes base into the baseOffset field of the RecordBatch at
// the start of chunk, in place. The CRC does not cover this field, so the
// batch stays valid. Silt stores batches with baseOffset 0 and patches the
// real offset when serving. It panics if chunk is shorter than 8 bytes.
func SetBaseOffset(chunk []byte, base int64) {
	binary.BigEndian.PutUint64(chunk[offBaseOffset:offBaseOffset+8], uint64(base))
}

// SetPartitionLeaderEpoch writes epoch into the partitionLeaderEpoch field
// of the RecordBatch at the start of chunk, in place (not covered by the
// CRC). It panics if chunk is shorter than 16 bytes.
func SetPartitionLeaderEpoch(chunk []byte, epoch int32) {
	binary.BigEndian.PutUint32(chunk[offLeaderEpoch:offLeaderEpoch+4], uint32(epoch))
}

// NextBatch splits the RecordBatch at the start of data from the batches
// after it: a merged index entry covers several batches back to back. It
// checks the batch's header and that data holds all of it, not its CRC.
func NextBatch(data []byte) (h BatchHeader, batch, rest []byte, err error) {
	h, err = ParseBatchHeader(data)
	if err != nil {
		return h, nil, nil, err
	}
	if h.Size() > len(data) {
		return h, nil, nil, fmt.Errorf("%w: batch of %d bytes, %d left", ErrCorrupt, h.Size(), len(data))
	}
	return h, data[:h.Size():h.Size()], data[h.Size():], nil
}
