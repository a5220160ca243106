package binformat

import (
	"encoding/binary"
	"fmt"
)

// BatchesMediaType is the content type of fetch responses that carry
// stored Kafka RecordBatches (v2) as they are, for the client to decode.
const BatchesMediaType = "application/vnd.silt.batches.v1"

// BatchesMagic opens a batches fetch response.
const BatchesMagic = "SLB1"

// BatchesHeaderSize is the size of a batches response's header; each
// batch then takes BatchFrameSize bytes more than its own.
const (
	BatchesHeaderSize = 4 + 4 + 8 + 8 + 8 + 8 + 4
	BatchFrameSize    = 4
)

// BatchesHeader is what precedes the batches of a batches response.
type BatchesHeader struct {
	Partition int32
	// Offset is the offset the fetch read from (earliest and latest
	// resolved): records of the first batch before it are not part of
	// the answer, and the reader skips them.
	Offset         int64
	NextOffset     int64
	HighWatermark  int64
	LogStartOffset int64
	// Count is the number of batches that follow.
	Count int
}

// AppendBatchesHeader starts a batches response.
func AppendBatchesHeader(dst []byte, h *BatchesHeader) []byte {
	dst = append(dst, BatchesMagic...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(h.Partition))
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.Offset))
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.NextOffset))
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.HighWatermark))
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.LogStartOffset))
	return binary.BigEndian.AppendUint32(dst, uint32(h.Count))
}

// AppendBatchFrame appends the length that precedes a batch of size bytes.
func AppendBatchFrame(dst []byte, size int) []byte {
	return binary.BigEndian.AppendUint32(dst, uint32(size))
}

// Batches is a decoded batches response: its header and the bytes of each
// batch, which alias the body and are not checked here (segment decodes
// and verifies RecordBatches).
type Batches struct {
	BatchesHeader
	Batches [][]byte
}

// DecodeBatches parses the framing of a batches response body.
func DecodeBatches(body []byte) (*Batches, error) {
	if len(body) < len(BatchesMagic) || string(body[:len(BatchesMagic)]) != BatchesMagic {
		return nil, fmt.Errorf("%w: missing magic %q", ErrMalformed, BatchesMagic)
	}
	r := &reader{b: body[len(BatchesMagic):]}
	out := &Batches{}
	out.Partition = int32(r.u32("partition"))
	out.Offset = int64(r.u64("offset"))
	out.NextOffset = int64(r.u64("next offset"))
	out.HighWatermark = int64(r.u64("high watermark"))
	out.LogStartOffset = int64(r.u64("log start offset"))
	out.Count = r.count("batches", BatchFrameSize, 0, ErrTooMany)
	if r.err == nil && out.Count > 0 {
		out.Batches = make([][]byte, out.Count)
	}
	for i := 0; i < out.Count && r.err == nil; i++ {
		n := r.u32("batch length")
		if uint64(n) > uint64(len(r.b)) {
			r.fail(fmt.Sprintf("batch %d of %d bytes exceeds the body", i, n))
			break
		}
		out.Batches[i] = r.take(int(n), "batch")
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Sprintf("%d trailing bytes", len(r.b)))
	}
	if r.err != nil {
		return nil, r.err
	}
	return out, nil
}
