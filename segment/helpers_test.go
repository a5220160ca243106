package segment

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

// crc32cBitwise is an independent, table-free CRC-32C (reflected polynomial
// 0x82F63B78) used as an oracle for the library's table-driven one.
func crc32cBitwise(b []byte) uint32 {
	crc := ^uint32(0)
	for _, c := range b {
		crc ^= uint32(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0x82F63B78
			} else {
				crc >>= 1
			}
		}
	}
	return ^crc
}

// rawBatch assembles a RecordBatch v2 around an arbitrary records section
// (already compressed if attrs says so) with a correct length and CRC, so
// tests can feed the record parser crafted input.
func rawBatch(attrs int16, count int32, lastOffsetDelta int32, baseTS int64, records []byte) []byte {
	b := make([]byte, BatchHeaderSize, BatchHeaderSize+len(records))
	be := binary.BigEndian
	be.PutUint32(b[8:], uint32(BatchHeaderSize-12+len(records)))
	be.PutUint32(b[12:], 0xffffffff)
	b[16] = 2
	be.PutUint16(b[21:], uint16(attrs))
	be.PutUint32(b[23:], uint32(lastOffsetDelta))
	be.PutUint64(b[27:], uint64(baseTS))
	be.PutUint64(b[35:], uint64(baseTS))
	be.PutUint64(b[43:], 0xffffffffffffffff)
	be.PutUint16(b[51:], 0xffff)
	be.PutUint32(b[53:], 0xffffffff)
	be.PutUint32(b[57:], uint32(count))
	b = append(b, records...)
	fixBatch(b)
	return b
}

// fixBatch rewrites the batch length and CRC of b (if it is long enough to
// have them) so that they match its bytes.
func fixBatch(b []byte) {
	if len(b) < 21 {
		return
	}
	binary.BigEndian.PutUint32(b[8:], uint32(len(b)-12))
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], castagnoli))
}

// nullableEqual compares byte slices, distinguishing nil from empty.
func nullableEqual(a, b []byte) bool {
	return (a == nil) == (b == nil) && bytes.Equal(a, b)
}

// diffRecords describes the first difference between want and got, or "".
func diffRecords(want, got []Record) string {
	if len(want) != len(got) {
		return fmt.Sprintf("record count: want %d, got %d", len(want), len(got))
	}
	for i := range want {
		w, g := &want[i], &got[i]
		switch {
		case w.OffsetDelta != g.OffsetDelta:
			return fmt.Sprintf("record %d offset delta: want %d, got %d", i, w.OffsetDelta, g.OffsetDelta)
		case w.Timestamp != g.Timestamp:
			return fmt.Sprintf("record %d timestamp: want %d, got %d", i, w.Timestamp, g.Timestamp)
		case !nullableEqual(w.Key, g.Key):
			return fmt.Sprintf("record %d key: want %q (nil %v), got %q (nil %v)", i, w.Key, w.Key == nil, g.Key, g.Key == nil)
		case !nullableEqual(w.Value, g.Value):
			return fmt.Sprintf("record %d value: want len %d (nil %v), got len %d (nil %v)", i, len(w.Value), w.Value == nil, len(g.Value), g.Value == nil)
		case len(w.Headers) != len(g.Headers):
			return fmt.Sprintf("record %d header count: want %d, got %d", i, len(w.Headers), len(g.Headers))
		}
		if len(w.Headers) == 0 && g.Headers != nil {
			return fmt.Sprintf("record %d: Headers should be nil when empty", i)
		}
		for j := range w.Headers {
			if w.Headers[j].Key != g.Headers[j].Key || !nullableEqual(w.Headers[j].Value, g.Headers[j].Value) {
				return fmt.Sprintf("record %d header %d: want %q=%q (nil %v), got %q=%q (nil %v)", i, j,
					w.Headers[j].Key, w.Headers[j].Value, w.Headers[j].Value == nil,
					g.Headers[j].Key, g.Headers[j].Value, g.Headers[j].Value == nil)
			}
		}
	}
	return ""
}

// randBytes returns nil, empty, or n random bytes.
func randNullable(rng *rand.Rand, maxLen int) []byte {
	switch rng.IntN(6) {
	case 0:
		return nil
	case 1:
		return []byte{}
	}
	b := make([]byte, rng.IntN(maxLen+1))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// randRecords makes n records with strictly increasing offset deltas (with
// random gaps), timestamps that move in both directions, nil and empty keys
// and values, headers with nil values, and the occasional large value.
func randRecords(rng *rand.Rand, n int, bigValues bool) []Record {
	recs := make([]Record, n)
	off := int32(rng.IntN(3))
	ts := rng.Int64N(1<<42) - 1<<20
	for i := range recs {
		r := &recs[i]
		r.OffsetDelta = off
		off += 1 + int32(rng.IntN(3)/2)
		switch rng.IntN(8) {
		case 0:
			ts -= rng.Int64N(1 << 30) // far back
		case 1:
			ts += rng.Int64N(1 << 30)
		default:
			ts += rng.Int64N(2001) - 1000
		}
		r.Timestamp = ts
		r.Key = randNullable(rng, 40)
		r.Value = randNullable(rng, 300)
		if bigValues && rng.IntN(4) == 0 {
			r.Value = make([]byte, 1<<20-rng.IntN(100))
			for j := 0; j < len(r.Value); j += 64 {
				r.Value[j] = byte(rng.Uint32())
			}
		}
		if nh := rng.IntN(4); nh > 0 {
			r.Headers = make([]Header, nh)
			for j := range r.Headers {
				k := randNullable(rng, 12)
				r.Headers[j] = Header{Key: string(k), Value: randNullable(rng, 20)}
			}
		}
	}
	return recs
}

// mustAppend encodes recs or fails the test.
func mustAppend(t testing.TB, enc *Encoder, dst []byte, recs []Record, opts BatchOptions) ([]byte, BatchInfo) {
	t.Helper()
	out, info, err := enc.AppendBatch(dst, recs, opts)
	if err != nil {
		t.Fatalf("AppendBatch: %v", err)
	}
	return out, info
}
