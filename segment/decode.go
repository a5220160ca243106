package segment

import (
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// DefaultMaxDecompressedSize is the decompressed records-section limit used
// when DecodeOptions.MaxDecompressedSize is zero.
const DefaultMaxDecompressedSize = 64 << 20

// DecodeOptions tune DecodeBatch.
type DecodeOptions struct {
	// MaxDecompressedSize bounds the size of a compressed batch's records
	// section after decompression; larger ones fail with ErrTooLarge
	// (protection against decompression bombs). Zero or negative means
	// DefaultMaxDecompressedSize. Each distinct value gets its own shared
	// zstd decoder, kept for the life of the process, so use few distinct
	// values (typically one configured limit).
	MaxDecompressedSize int
}

func (o DecodeOptions) maxDecompressed() int {
	if o.MaxDecompressedSize <= 0 {
		return DefaultMaxDecompressedSize
	}
	return o.MaxDecompressedSize
}

// zstdDecoders maps a size limit to a shared *zstd.Decoder built with it.
// DecodeAll on a zstd.Decoder is safe for concurrent use.
var zstdDecoders sync.Map // int -> *zstd.Decoder

func zstdDecoder(limit int) (*zstd.Decoder, error) {
	if d, ok := zstdDecoders.Load(limit); ok {
		return d.(*zstd.Decoder), nil
	}
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0), // up to GOMAXPROCS concurrent DecodeAll
		zstd.WithDecoderMaxMemory(uint64(limit)))
	if err != nil {
		return nil, fmt.Errorf("segment: zstd decoder: %w", err)
	}
	if prev, loaded := zstdDecoders.LoadOrStore(limit, d); loaded {
		d.Close()
		return prev.(*zstd.Decoder), nil
	}
	return d, nil
}

// Batch is a decoded RecordBatch: the header fields (promoted from the
// embedded BatchHeader: BaseOffset, PartitionLeaderEpoch, Attributes,
// LastOffsetDelta, BaseTimestamp, MaxTimestamp, ProducerID, ProducerEpoch,
// BaseSequence, ...) and the records.
//
// Aliasing: record keys, values and header values are sub-slices of the
// chunk passed to Decode when the batch is uncompressed, and of a buffer
// owned by the Batch when it is compressed; Headers slices share one array
// owned by the Batch. All of it stays valid until the next Decode on the
// same Batch (and, uncompressed, while the chunk is not modified). Copy what
// must outlive that. Header keys are strings and never alias.
//
// Record timestamps are the stored ones (baseTimestamp + timestampDelta).
// When LogAppendTime() is set, Kafka clients instead take every record's
// timestamp to be MaxTimestamp; callers that need that view apply it.
type Batch struct {
	BatchHeader
	Records []Record

	buf     []byte   // decompressed records section
	hdrs    []Header // backing array of all records' Headers
	keyBuf  []byte   // header key bytes, concatenated
	keyEnds []int    // end of each header key in keyBuf
}

// DecodeBatch decodes chunk, which must hold exactly one RecordBatch v2. It
// verifies the magic, the batch length and the CRC-32C, decompresses the
// records section, and validates every varint and length. It never panics,
// whatever the input; bad input yields an error wrapping ErrCorrupt,
// ErrUnsupported or ErrTooLarge. See Batch for what the result aliases.
func DecodeBatch(chunk []byte, opts DecodeOptions) (*Batch, error) {
	b := new(Batch)
	if err := b.Decode(chunk, opts); err != nil {
		return nil, err
	}
	return b, nil
}

// Decode is DecodeBatch into b, reusing b's buffers and Records slice; use it
// in loops to avoid allocations. It overwrites (and invalidates) what a
// previous Decode on b returned. On error b.Records is empty.
func (b *Batch) Decode(chunk []byte, opts DecodeOptions) error {
	b.Records = b.Records[:0]
	h, err := VerifyBatch(chunk)
	if err != nil {
		return err
	}
	b.BatchHeader = h
	data := chunk[BatchHeaderSize:]
	switch c := h.Compression(); c {
	case CompressionNone:
	case CompressionZstd:
		limit := opts.maxDecompressed()
		d, err := zstdDecoder(limit)
		if err != nil {
			return err
		}
		out, err := d.DecodeAll(data, b.buf[:0])
		if out != nil {
			b.buf = out[:0]
		}
		if err != nil {
			if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
				return fmt.Errorf("%w: records section decompresses past %d bytes: %v", ErrTooLarge, limit, err)
			}
			return fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
		}
		if len(out) > limit { // zstd enforces the limit; this guards against a change there
			return fmt.Errorf("%w: records section decompresses to %d bytes, limit %d", ErrTooLarge, len(out), limit)
		}
		data = out
	case CompressionGzip, CompressionSnappy, CompressionLZ4:
		limit := opts.maxDecompressed()
		out, err := decompress(c, data, b.buf[:0], limit)
		if out != nil {
			b.buf = out[:0]
		}
		if err != nil {
			return err
		}
		data = out
	default:
		return fmt.Errorf("%w: compression %v", ErrUnsupported, c)
	}
	if err := b.parseRecords(data); err != nil {
		b.Records = b.Records[:0]
		return err
	}
	return nil
}

func corruptRecord(i int, what string) error {
	return fmt.Errorf("%w: record %d: %s", ErrCorrupt, i, what)
}

// readBytesField reads a nullable length-prefixed field at body[p:]: the
// value (nil for length -1, a capacity-limited sub-slice of body otherwise)
// and the new position, or ok=false when malformed.
func readBytesField(body []byte, p int) (v []byte, np int, ok bool) {
	l, k := readVarint32(body[p:])
	if k <= 0 || l < -1 {
		return nil, p, false
	}
	p += k
	if l == -1 {
		return nil, p, true
	}
	if int(l) > len(body)-p {
		return nil, p, false
	}
	end := p + int(l)
	return body[p:end:end], end, true
}

// parseRecords parses the (decompressed) records section into b.Records.
func (b *Batch) parseRecords(data []byte) error {
	n := int(b.RecordCount)
	if n > len(data)/minRecordSize {
		return fmt.Errorf("%w: %d records cannot fit in %d bytes", ErrCorrupt, n, len(data))
	}
	recs := b.Records
	if cap(recs) < n {
		recs = make([]Record, n)
	}
	recs = recs[:n]
	hdrs, keyBuf, keyEnds := b.hdrs[:0], b.keyBuf[:0], b.keyEnds[:0]
	base := b.BaseTimestamp

	p := 0
	for i := range recs {
		l, k := readVarint32(data[p:])
		if k <= 0 {
			return corruptRecord(i, "bad length varint")
		}
		p += k
		if l < 0 || int(l) > len(data)-p {
			return corruptRecord(i, fmt.Sprintf("length %d with %d bytes left", l, len(data)-p))
		}
		body := data[p : p+int(l) : p+int(l)]
		p += int(l)

		r := &recs[i]
		// body[0] is the record attributes byte: unused by Kafka, ignored.
		if len(body) < 1 {
			return corruptRecord(i, "empty body")
		}
		q := 1
		ts, k := readVarint64(body[q:])
		if k <= 0 {
			return corruptRecord(i, "bad timestamp delta")
		}
		q += k
		r.Timestamp = base + ts
		od, k := readVarint32(body[q:])
		if k <= 0 {
			return corruptRecord(i, "bad offset delta")
		}
		q += k
		r.OffsetDelta = od
		var ok bool
		if r.Key, q, ok = readBytesField(body, q); !ok {
			return corruptRecord(i, "bad key")
		}
		if r.Value, q, ok = readBytesField(body, q); !ok {
			return corruptRecord(i, "bad value")
		}
		hc, k := readVarint32(body[q:])
		if k <= 0 || hc < 0 {
			return corruptRecord(i, "bad header count")
		}
		q += k
		if int(hc) > (len(body)-q)/minHeaderSize {
			return corruptRecord(i, fmt.Sprintf("%d headers cannot fit in %d bytes", hc, len(body)-q))
		}
		if hc > 0 && cap(hdrs) == 0 {
			// First headers of a fresh Batch: guess that every record has
			// as many (records usually share a header layout), within
			// what the data can hold.
			est := min(int(hc)*n, len(data)/minHeaderSize)
			hdrs = make([]Header, 0, est)
			keyEnds = make([]int, 0, est)
		}
		for j := 0; j < int(hc); j++ {
			kl, k := readVarint32(body[q:])
			if k <= 0 || kl < 0 || int(kl) > len(body)-q-k {
				return corruptRecord(i, fmt.Sprintf("header %d: bad key length", j))
			}
			q += k
			if cap(keyBuf) == 0 {
				keyBuf = make([]byte, 0, min(int(kl)*int(hc)*n, len(data)))
			}
			keyBuf = append(keyBuf, body[q:q+int(kl)]...)
			keyEnds = append(keyEnds, len(keyBuf))
			q += int(kl)
			var v []byte
			if v, q, ok = readBytesField(body, q); !ok {
				return corruptRecord(i, fmt.Sprintf("header %d: bad value", j))
			}
			hdrs = append(hdrs, Header{Value: v})
		}
		if hc == 0 {
			r.Headers = nil
		} else {
			// Only the length matters until the fix-up below: hdrs may
			// still move.
			r.Headers = hdrs[len(hdrs)-int(hc):]
		}
		if q != len(body) {
			return corruptRecord(i, fmt.Sprintf("%d unread bytes in body", len(body)-q))
		}
	}
	if p != len(data) {
		return fmt.Errorf("%w: %d bytes after the last record", ErrCorrupt, len(data)-p)
	}

	if len(hdrs) > 0 {
		keys := string(keyBuf) // one allocation for every header key
		prev := 0
		for j := range hdrs {
			hdrs[j].Key = keys[prev:keyEnds[j]]
			prev = keyEnds[j]
		}
		pos := 0
		for i := range recs {
			if c := len(recs[i].Headers); c > 0 {
				recs[i].Headers = hdrs[pos : pos+c : pos+c]
				pos += c
			}
		}
	}
	b.Records, b.hdrs, b.keyBuf, b.keyEnds = recs, hdrs, keyBuf, keyEnds
	return nil
}
