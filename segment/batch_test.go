package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/quick"

	"github.com/klauspost/compress/zstd"
)

// TestKnownBytes encodes a tiny uncompressed batch and compares it with
// bytes written out field by field from the Kafka RecordBatch v2 spec.
func TestKnownBytes(t *testing.T) {
	recs := []Record{
		{OffsetDelta: 0, Timestamp: 1000, Key: []byte("ab"), Value: []byte("xyz"),
			Headers: []Header{{Key: "h", Value: nil}}},
		{OffsetDelta: 1, Timestamp: 990, Key: nil, Value: []byte{}},
	}
	want := []byte{
		0, 0, 0, 0, 0, 0, 0, 0, // baseOffset 0 (patched on read)
		0, 0, 0, 71, // batchLength = 83 total - 12
		0xff, 0xff, 0xff, 0xff, // partitionLeaderEpoch -1
		2,          // magic
		0, 0, 0, 0, // crc, filled in below
		0, 0, // attributes: no compression, CreateTime
		0, 0, 0, 1, // lastOffsetDelta 1
		0, 0, 0, 0, 0, 0, 0x03, 0xe8, // baseTimestamp 1000
		0, 0, 0, 0, 0, 0, 0x03, 0xe8, // maxTimestamp 1000
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // producerId -1
		0xff, 0xff, // producerEpoch -1
		0xff, 0xff, 0xff, 0xff, // baseSequence -1
		0, 0, 0, 2, // recordCount 2

		// record 0
		0x1c,     // length 14 (zigzag 28)
		0,        // attributes
		0,        // timestampDelta 0
		0,        // offsetDelta 0
		0x04,     // keyLength 2
		'a', 'b', // key
		0x06,          // valueLength 3
		'x', 'y', 'z', // value
		0x02, // headerCount 1
		0x02, // header keyLength 1
		'h',  // header key
		0x01, // header valueLength -1 (null)

		// record 1
		0x0c, // length 6
		0,    // attributes
		0x13, // timestampDelta -10 (zigzag 19)
		0x02, // offsetDelta 1
		0x01, // keyLength -1 (null)
		0x00, // valueLength 0 (empty, not null)
		0x00, // headerCount 0
	}
	// CRC-32C over attributes..end, by an independent bitwise CRC-32C, and
	// pinned as a literal.
	crc := crc32cBitwise(want[21:])
	const wantCRC = 0x480912a7
	if crc != wantCRC {
		t.Fatalf("bitwise crc32c = %#08x, pinned %#08x", crc, uint32(wantCRC))
	}
	binary.BigEndian.PutUint32(want[17:], crc)

	got, info, err := NewEncoder().AppendBatch(nil, recs, BatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoded batch differs:\n got %x\nwant %x", got, want)
	}
	wantInfo := BatchInfo{Records: 2, LastOffsetDelta: 1, FirstTimestamp: 1000, MaxTimestamp: 1000, Size: len(want)}
	if info != wantInfo {
		t.Fatalf("info = %+v, want %+v", info, wantInfo)
	}
	b, err := DecodeBatch(want, DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d := diffRecords(recs, b.Records); d != "" {
		t.Fatal(d)
	}
}

// publishedBatch is the "uncompressed record" RecordBatch v2 test vector
// from the Sarama Kafka client's test suite (one record, timestamp delta
// 5 ms, key 01020304, value 050607, one header 08090a=0b0c; producer fields
// and leader epoch 0, maxTimestamp 0). Its CRC was computed by another
// implementation, so it checks our CRC coverage and record layout.
var publishedBatch = []byte{
	0, 0, 0, 0, 0, 0, 0, 0, // baseOffset
	0, 0, 0, 0x46, // batchLength 70
	0, 0, 0, 0, // partitionLeaderEpoch 0
	2,                      // magic
	0x54, 0x79, 0x61, 0xfd, // crc
	0, 0, // attributes
	0, 0, 0, 0, // lastOffsetDelta
	0, 0, 0x01, 0x58, 0x8d, 0xcd, 0x59, 0x38, // baseTimestamp 1479847795000
	0, 0, 0, 0, 0, 0, 0, 0, // maxTimestamp 0
	0, 0, 0, 0, 0, 0, 0, 0, // producerId 0
	0, 0, // producerEpoch 0
	0, 0, 0, 0, // baseSequence 0
	0, 0, 0, 1, // recordCount 1
	0x28, 0, 0x0a, 0, // length 20, attributes, timestampDelta 5, offsetDelta 0
	0x08, 1, 2, 3, 4, // key
	0x06, 5, 6, 7, // value
	0x02,           // 1 header
	0x06, 8, 9, 10, // header key
	0x04, 11, 12, // header value
}

func TestPublishedVector(t *testing.T) {
	b, err := DecodeBatch(publishedBatch, DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const base = 1479847795000
	if b.BaseTimestamp != base || b.MaxTimestamp != 0 || b.ProducerID != 0 || b.RecordCount != 1 || b.CRC != 0x547961fd {
		t.Fatalf("header = %+v", b.BatchHeader)
	}
	want := []Record{{OffsetDelta: 0, Timestamp: base + 5, Key: []byte{1, 2, 3, 4}, Value: []byte{5, 6, 7},
		Headers: []Header{{Key: "\x08\x09\x0a", Value: []byte{11, 12}}}}}
	if d := diffRecords(want, b.Records); d != "" {
		t.Fatal(d)
	}

	// Encode the same record with the same producer fields. Silt's encoder
	// differs from the vector's writer in four fields: leader epoch (-1),
	// baseTimestamp (the first record's: base+5, so timestampDelta is 0)
	// and maxTimestamp (the true maximum). Set those to the vector's
	// values, recompute the CRC, and every byte must match, CRC included.
	got, _ := mustAppend(t, NewEncoder(), nil, want, BatchOptions{Idempotent: true})
	if len(got) != len(publishedBatch) {
		t.Fatalf("encoded %d bytes, vector has %d", len(got), len(publishedBatch))
	}
	if got[BatchHeaderSize+2] != 0 { // timestampDelta of the only record
		t.Fatalf("timestampDelta byte = %#x, want 0", got[BatchHeaderSize+2])
	}
	SetPartitionLeaderEpoch(got, 0)
	binary.BigEndian.PutUint64(got[27:], base)
	binary.BigEndian.PutUint64(got[35:], 0)
	got[BatchHeaderSize+2] = 0x0a // timestampDelta 5
	fixBatch(got)
	if !bytes.Equal(got, publishedBatch) {
		t.Fatalf("encoded:\n got %x\nwant %x", got, publishedBatch)
	}
}

func TestVarint(t *testing.T) {
	check := func(v int64) bool {
		enc := appendVarint(nil, v)
		if len(enc) != varintLen(v) || !bytes.Equal(enc, binary.AppendVarint(nil, v)) {
			return false
		}
		got, n := readVarint64(enc)
		if got != v || n != len(enc) {
			return false
		}
		got32, n32 := readVarint32(enc)
		if v == int64(int32(v)) {
			return got32 == int32(v) && n32 == len(enc)
		}
		return n32 < 0
	}
	if err := quick.Check(check, &quick.Config{MaxCount: 20000}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []int64{0, 1, -1, 63, -64, 64, -65, math.MaxInt32, math.MinInt32, math.MaxInt32 + 1,
		math.MinInt32 - 1, math.MaxInt64, math.MinInt64} {
		if !check(v) {
			t.Fatalf("varint %d", v)
		}
	}
	// Truncated and over-long encodings are rejected.
	for _, tc := range []struct {
		in       []byte
		n32, n64 int
	}{
		{nil, 0, 0},
		{[]byte{0x80}, 0, 0},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, 5, 5},  // zigzag 2^32-1 = MinInt32
		{[]byte{0xfe, 0xff, 0xff, 0xff, 0x1f}, -1, 5}, // 2^33-2: too big for int32
		{[]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, -1, 6},
		{bytes.Repeat([]byte{0xff}, 10), -1, -1},
		{append(bytes.Repeat([]byte{0xff}, 9), 0x01), -1, 10},
		{append(bytes.Repeat([]byte{0xff}, 9), 0x02), -1, -1},
	} {
		if _, n := readVarint32(tc.in); n != tc.n32 {
			t.Errorf("readVarint32(%x) n = %d, want %d", tc.in, n, tc.n32)
		}
		if _, n := readVarint64(tc.in); n != tc.n64 {
			t.Errorf("readVarint64(%x) n = %d, want %d", tc.in, n, tc.n64)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	enc := NewEncoder()
	for _, comp := range []Compression{CompressionNone, CompressionZstd} {
		for _, n := range []int{1, 2, 17, 500} {
			recs := randRecords(rng, n, n == 17)
			opts := BatchOptions{Compression: comp}
			chunk, info := mustAppend(t, enc, nil, recs, opts)
			b, err := DecodeBatch(chunk, DecodeOptions{})
			if err != nil {
				t.Fatalf("%v n=%d: %v", comp, n, err)
			}
			if d := diffRecords(recs, b.Records); d != "" {
				t.Fatalf("%v n=%d: %s", comp, n, d)
			}
			if !storedAs(comp, b.Compression()) || b.RecordCount != info.Records || b.LastOffsetDelta != info.LastOffsetDelta ||
				b.BaseTimestamp != info.FirstTimestamp || b.MaxTimestamp != info.MaxTimestamp || b.Size() != info.Size {
				t.Fatalf("%v n=%d: header %+v vs info %+v", comp, n, b.BatchHeader, info)
			}
			if b.ProducerID != -1 || b.ProducerEpoch != -1 || b.BaseSequence != -1 || b.PartitionLeaderEpoch != -1 || b.BaseOffset != 0 {
				t.Fatalf("defaults: %+v", b.BatchHeader)
			}
		}
	}
}

func TestZstdCompresses(t *testing.T) {
	recs := make([]Record, 100)
	for i := range recs {
		recs[i] = Record{OffsetDelta: int32(i), Value: bytes.Repeat([]byte("silt event payload "), 20)}
	}
	plain := recordsSectionOf(t, recs)
	chunk, _ := mustAppend(t, NewEncoder(), nil, recs, BatchOptions{Compression: CompressionZstd})
	if len(chunk)-BatchHeaderSize > len(plain)/10 {
		t.Fatalf("zstd section %d bytes for %d plain", len(chunk)-BatchHeaderSize, len(plain))
	}
	h, _ := VerifyBatch(chunk)
	if h.Attributes != int16(CompressionZstd) {
		t.Fatalf("attributes %#x", h.Attributes)
	}
}

// recordsSectionOf returns the uncompressed records section for recs.
func recordsSectionOf(t *testing.T, recs []Record) []byte {
	chunk, _ := mustAppend(t, NewEncoder(), nil, recs, BatchOptions{})
	return chunk[BatchHeaderSize:]
}

// TestProperty: random batches, options and pre-existing dst contents.
func TestProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	enc := NewEncoder()
	var b Batch
	var dst []byte
	for iter := range 400 {
		recs := randRecords(rng, 1+rng.IntN(40), false)
		opts := BatchOptions{Compression: []Compression{CompressionNone, CompressionZstd}[rng.IntN(2)]}
		if rng.IntN(2) == 0 {
			opts.Idempotent = true
			opts.ProducerID = rng.Int64()
			opts.ProducerEpoch = int16(rng.Uint32())
			opts.BaseSequence = int32(rng.Uint32())
		}
		prefix := randNullable(rng, 50)
		dst = append(dst[:0], prefix...)
		dst, info := mustAppend(t, enc, dst, recs, opts)
		if !bytes.Equal(dst[:len(prefix)], prefix) || len(dst) != len(prefix)+info.Size {
			t.Fatalf("iter %d: AppendBatch disturbed dst or misreported size", iter)
		}
		chunk := dst[len(prefix):]
		base := rng.Int64()
		SetBaseOffset(chunk, base)
		if err := b.Decode(chunk, DecodeOptions{}); err != nil {
			t.Fatalf("iter %d: %v", iter, err)
		}
		if d := diffRecords(recs, b.Records); d != "" {
			t.Fatalf("iter %d: %s", iter, d)
		}
		h := b.BatchHeader
		if h.BaseOffset != base || h.LastOffset() != base+int64(recs[len(recs)-1].OffsetDelta) {
			t.Fatalf("iter %d: base offset %d, want %d", iter, h.BaseOffset, base)
		}
		wantPID, wantEpoch, wantSeq := int64(-1), int16(-1), int32(-1)
		if opts.Idempotent {
			wantPID, wantEpoch, wantSeq = opts.ProducerID, opts.ProducerEpoch, opts.BaseSequence
		}
		if h.ProducerID != wantPID || h.ProducerEpoch != wantEpoch || h.BaseSequence != wantSeq {
			t.Fatalf("iter %d: producer fields %d/%d/%d", iter, h.ProducerID, h.ProducerEpoch, h.BaseSequence)
		}
		maxTS := recs[0].Timestamp
		for _, r := range recs {
			maxTS = max(maxTS, r.Timestamp)
		}
		if h.BaseTimestamp != recs[0].Timestamp || h.MaxTimestamp != maxTS {
			t.Fatalf("iter %d: timestamps %d/%d", iter, h.BaseTimestamp, h.MaxTimestamp)
		}
		// Re-encoding the decoded records reproduces the batch exactly.
		again, _ := mustAppend(t, enc, nil, b.Records, opts)
		SetBaseOffset(again, base)
		if opts.Compression == CompressionNone && !bytes.Equal(again, chunk) {
			t.Fatalf("iter %d: re-encoding differs", iter)
		}
	}
}

func TestEncodeInvalid(t *testing.T) {
	enc := NewEncoder()
	prefix := []byte("keep")
	for name, tc := range map[string]struct {
		recs []Record
		opts BatchOptions
		want error
	}{
		"empty":              {nil, BatchOptions{}, ErrInvalid},
		"negative delta":     {[]Record{{OffsetDelta: -1}}, BatchOptions{}, ErrInvalid},
		"duplicate delta":    {[]Record{{OffsetDelta: 0}, {OffsetDelta: 0}}, BatchOptions{}, ErrInvalid},
		"decreasing delta":   {[]Record{{OffsetDelta: 3}, {OffsetDelta: 2}}, BatchOptions{}, ErrInvalid},
		"gzip (read only)":   {[]Record{{}}, BatchOptions{Compression: 1}, ErrUnsupported},
		"unknown compressor": {[]Record{{}}, BatchOptions{Compression: 9}, ErrUnsupported},
	} {
		out, _, err := enc.AppendBatch(prefix, tc.recs, tc.opts)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", name, err, tc.want)
		}
		if string(out) != "keep" {
			t.Errorf("%s: dst = %q", name, out)
		}
	}
}

func TestTimestampExtremes(t *testing.T) {
	// Deltas that overflow int64 wrap, and wrap back on decode.
	recs := []Record{
		{OffsetDelta: 0, Timestamp: math.MinInt64},
		{OffsetDelta: 1, Timestamp: math.MaxInt64},
		{OffsetDelta: math.MaxInt32, Timestamp: -1},
	}
	for _, comp := range []Compression{CompressionNone, CompressionZstd} {
		chunk, info := mustAppend(t, NewEncoder(), nil, recs, BatchOptions{Compression: comp})
		b, err := DecodeBatch(chunk, DecodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d := diffRecords(recs, b.Records); d != "" {
			t.Fatal(d)
		}
		if info.MaxTimestamp != math.MaxInt64 || info.LastOffsetDelta != math.MaxInt32 {
			t.Fatalf("info %+v", info)
		}
	}
}

func TestSetBaseOffsetKeepsCRC(t *testing.T) {
	chunk, _ := mustAppend(t, NewEncoder(), nil, randRecords(rand.New(rand.NewPCG(3, 3)), 5, false), BatchOptions{})
	SetBaseOffset(chunk, 1<<40)
	SetPartitionLeaderEpoch(chunk, 7)
	h, err := VerifyBatch(chunk)
	if err != nil {
		t.Fatal(err)
	}
	if h.BaseOffset != 1<<40 || h.PartitionLeaderEpoch != 7 {
		t.Fatalf("header %+v", h)
	}
	b, err := DecodeBatch(chunk, DecodeOptions{})
	if err != nil || b.BaseOffset != 1<<40 {
		t.Fatalf("decode: %v %+v", err, b)
	}
}

func TestParseBatchHeader(t *testing.T) {
	recs := randRecords(rand.New(rand.NewPCG(4, 4)), 9, false)
	chunk, info := mustAppend(t, NewEncoder(), nil, recs, BatchOptions{Compression: CompressionZstd,
		Idempotent: true, ProducerID: 42, ProducerEpoch: 3, BaseSequence: 100})
	// A prefix of the header size is enough.
	h, err := ParseBatchHeader(chunk[:BatchHeaderSize])
	if err != nil {
		t.Fatal(err)
	}
	if h.Size() != len(chunk) || h.RecordCount != 9 || h.LastOffsetDelta != info.LastOffsetDelta ||
		!storedAs(CompressionZstd, h.Compression()) || h.ProducerID != 42 || h.ProducerEpoch != 3 || h.BaseSequence != 100 ||
		h.Transactional() || h.Control() || h.LogAppendTime() {
		t.Fatalf("header %+v", h)
	}
	if _, err := ParseBatchHeader(chunk[:BatchHeaderSize-1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short header: %v", err)
	}
	if _, err := VerifyBatch(chunk[:len(chunk)-1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short batch: %v", err)
	}
	if _, err := VerifyBatch(append(chunk[:len(chunk):len(chunk)], 0)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("trailing byte: %v", err)
	}
	old := append([]byte(nil), chunk...)
	old[16] = 1
	if _, err := ParseBatchHeader(old); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("magic 1: %v", err)
	}
}

// TestCorruption flips every byte of a batch, one at a time.
func TestCorruption(t *testing.T) {
	recs := randRecords(rand.New(rand.NewPCG(5, 5)), 6, false)
	for _, comp := range []Compression{CompressionNone, CompressionZstd} {
		chunk, _ := mustAppend(t, NewEncoder(), nil, recs, BatchOptions{Compression: comp})
		for i := range chunk {
			for _, mask := range []byte{0x01, 0x80, 0xff} {
				bad := append([]byte(nil), chunk...)
				bad[i] ^= mask
				b, err := DecodeBatch(bad, DecodeOptions{})
				switch {
				case i < 8 || (i >= 12 && i < 16): // baseOffset, leader epoch: not covered by the CRC
					if err != nil {
						t.Fatalf("%v: byte %d: %v", comp, i, err)
					}
					if d := diffRecords(recs, b.Records); d != "" {
						t.Fatalf("%v: byte %d: %s", comp, i, d)
					}
				case i == 16:
					if !errors.Is(err, ErrUnsupported) {
						t.Fatalf("%v: magic byte: err = %v", comp, err)
					}
				default:
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("%v: byte %d ^%#x: err = %v, want ErrCorrupt", comp, i, mask, err)
					}
				}
			}
		}
	}
}

// TestTruncation decodes every prefix, raw and with length and CRC fixed up
// so that the record parser itself sees the truncated data.
func TestTruncation(t *testing.T) {
	recs := randRecords(rand.New(rand.NewPCG(6, 6)), 8, false)
	for _, comp := range []Compression{CompressionNone, CompressionZstd} {
		chunk, _ := mustAppend(t, NewEncoder(), nil, recs, BatchOptions{Compression: comp})
		for n := range len(chunk) {
			if _, err := DecodeBatch(chunk[:n], DecodeOptions{}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v: prefix %d: err = %v", comp, n, err)
			}
			if n < BatchHeaderSize {
				continue
			}
			fixed := append([]byte(nil), chunk[:n]...)
			fixBatch(fixed)
			if _, err := DecodeBatch(fixed, DecodeOptions{}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v: fixed-up prefix %d: err = %v", comp, n, err)
			}
		}
	}
}

// TestCraftedRecords feeds the record parser malformed records with a
// valid CRC.
func TestCraftedRecords(t *testing.T) {
	rec := func(body ...byte) []byte { return append([]byte{byte(len(body) * 2)}, body...) }
	for name, tc := range map[string]struct {
		count   int32
		records []byte
		ok      bool
	}{
		"minimal":              {1, rec(0, 0, 0, 1, 1, 0), true},
		"empty batch":          {0, nil, true},
		"count too big":        {2, rec(0, 0, 0, 1, 1, 0), false},
		"count absurd":         {math.MaxInt32, rec(0, 0, 0, 1, 1, 0), false},
		"count negative":       {-1, rec(0, 0, 0, 1, 1, 0), false},
		"extra bytes":          {1, append(rec(0, 0, 0, 1, 1, 0), 0), false},
		"length negative":      {1, []byte{0x01, 0, 0, 0, 1, 1, 0}, false},
		"length past end":      {1, []byte{0x10, 0, 0, 0, 1, 1, 0}, false},
		"length short":         {1, []byte{0x0a, 0, 0, 0, 1, 1, 0}, false},
		"body trailing":        {1, rec(0, 0, 0, 1, 1, 0, 0), false},
		"key length -2":        {1, rec(0, 0, 0, 3, 1, 0), false},
		"key past body":        {1, rec(0, 0, 0, 8, 1, 0), false},
		"value past body":      {1, rec(0, 0, 0, 1, 8, 0), false},
		"header count -1":      {1, rec(0, 0, 0, 1, 1, 1), false},
		"header count huge":    {1, rec(0, 0, 0, 1, 1, 0xfe, 0xff, 0xff, 0xff, 0x0f), false},
		"header key null":      {1, rec(0, 0, 0, 1, 1, 2, 1, 1), false},
		"header key past end":  {1, rec(0, 0, 0, 1, 1, 2, 8, 1), false},
		"header value bad":     {1, rec(0, 0, 0, 1, 1, 2, 0, 3), false},
		"header ok":            {1, rec(0, 0, 0, 1, 1, 2, 0, 1), true},
		"offset delta 6 byte":  {1, rec(0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0, 1, 1, 0), false},
		"timestamp truncated":  {1, rec(0, 0x80), false},
		"record attrs ignored": {1, rec(0x7f, 0, 0, 1, 1, 0), true},
	} {
		chunk := rawBatch(0, tc.count, 0, 0, tc.records)
		_, err := DecodeBatch(chunk, DecodeOptions{})
		if tc.ok && err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if !tc.ok && !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}

func TestUnsupportedCompression(t *testing.T) {
	for _, codec := range []int16{5, 6, 7} {
		chunk := rawBatch(codec, 0, 0, 0, nil)
		if _, err := DecodeBatch(chunk, DecodeOptions{}); !errors.Is(err, ErrUnsupported) {
			t.Errorf("codec %d: err = %v", codec, err)
		}
	}
	// Attribute bits other than the codec do not stop decoding.
	chunk := rawBatch(AttrTransactional|AttrControl|AttrLogAppendTime, 0, 0, 0, nil)
	b, err := DecodeBatch(chunk, DecodeOptions{})
	if err != nil || !b.Transactional() || !b.Control() || !b.LogAppendTime() {
		t.Fatalf("flags: %v %+v", err, b)
	}
}

// TestDecompressionLimit checks the zip-bomb bound, for frames with and
// without a declared content size.
func TestDecompressionLimit(t *testing.T) {
	const limit = 1 << 20
	big := []Record{{OffsetDelta: 0, Value: make([]byte, 4<<20)}}
	chunk, _ := mustAppend(t, NewEncoder(), nil, big, BatchOptions{Compression: CompressionZstd})
	if len(chunk) > 4096 {
		t.Fatalf("zeros compressed to %d bytes", len(chunk))
	}
	if _, err := DecodeBatch(chunk, DecodeOptions{MaxDecompressedSize: limit}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("declared size: err = %v, want ErrTooLarge", err)
	}
	if _, err := DecodeBatch(chunk, DecodeOptions{}); err != nil {
		t.Fatalf("default limit: %v", err)
	}

	// A streamed frame does not declare its size up front.
	section := recordsSectionOf(t, big)
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(section)
	zw.Close()
	streamed := rawBatch(int16(CompressionZstd), 1, 0, 0, buf.Bytes())
	if _, err := DecodeBatch(streamed, DecodeOptions{MaxDecompressedSize: limit}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("streamed: err = %v, want ErrTooLarge", err)
	}
	b, err := DecodeBatch(streamed, DecodeOptions{})
	if err != nil {
		t.Fatalf("streamed, default limit: %v", err)
	}
	if d := diffRecords(big, b.Records); d != "" {
		t.Fatal(d)
	}

	// Garbage in a zstd batch is corrupt, not a panic.
	junk := rawBatch(int16(CompressionZstd), 1, 0, 0, []byte("definitely not zstd"))
	if _, err := DecodeBatch(junk, DecodeOptions{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("junk: err = %v", err)
	}
}

// TestDecodeReuse decodes different batches into one Batch.
func TestDecodeReuse(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	enc := NewEncoder()
	var b Batch
	for i := range 50 {
		recs := randRecords(rng, 1+rng.IntN(60), false)
		chunk, _ := mustAppend(t, enc, nil, recs, BatchOptions{Compression: Compression(4 * (i % 2))})
		if err := b.Decode(chunk, DecodeOptions{}); err != nil {
			t.Fatal(err)
		}
		if d := diffRecords(recs, b.Records); d != "" {
			t.Fatalf("iter %d: %s", i, d)
		}
		// A failed decode leaves no stale records behind.
		if err := b.Decode(chunk[:len(chunk)-1], DecodeOptions{}); err == nil || len(b.Records) != 0 {
			t.Fatalf("iter %d: failed decode left %d records (err %v)", i, len(b.Records), err)
		}
	}
}

// TestDecodedSlicesAreCapped checks that appending to a decoded value
// cannot overwrite the bytes of the next field.
func TestDecodedSlicesAreCapped(t *testing.T) {
	recs := []Record{{Key: []byte("k"), Value: []byte("v"), Headers: []Header{{Key: "a", Value: []byte("b")}}},
		{OffsetDelta: 1, Key: []byte("k2")}}
	chunk, _ := mustAppend(t, NewEncoder(), nil, recs, BatchOptions{})
	b, err := DecodeBatch(chunk, DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := b.Records[0]
	if cap(r.Key) != len(r.Key) || cap(r.Value) != len(r.Value) || cap(r.Headers) != len(r.Headers) ||
		cap(r.Headers[0].Value) != len(r.Headers[0].Value) {
		t.Fatal("decoded slices have spare capacity into the shared buffer")
	}
}

func TestConcurrentDecode(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	recs := randRecords(rng, 200, false)
	chunk, _ := mustAppend(t, NewEncoder(), nil, recs, BatchOptions{Compression: CompressionZstd})
	done := make(chan string)
	for g := range 8 {
		go func() {
			var b Batch
			for range 20 {
				if err := b.Decode(chunk, DecodeOptions{MaxDecompressedSize: 1<<20 + g%2}); err != nil {
					done <- err.Error()
					return
				}
				if d := diffRecords(recs, b.Records); d != "" {
					done <- d
					return
				}
			}
			done <- ""
		}()
	}
	for range 8 {
		if msg := <-done; msg != "" {
			t.Fatal(msg)
		}
	}
}

func TestEncoderLevels(t *testing.T) {
	recs := randRecords(rand.New(rand.NewPCG(13, 13)), 50, false)
	for _, l := range []ZstdLevel{ZstdFastest, ZstdDefault, ZstdBetter} {
		chunk, _ := mustAppend(t, NewEncoderLevel(l), nil, recs, BatchOptions{Compression: CompressionZstd})
		b, err := DecodeBatch(chunk, DecodeOptions{})
		if err != nil {
			t.Fatalf("level %d: %v", l, err)
		}
		if d := diffRecords(recs, b.Records); d != "" {
			t.Fatalf("level %d: %s", l, d)
		}
	}
}

// storedAs reports whether a batch asked to be compressed with asked may be
// stored with got: zstd batches fall back to none when zstd saves too
// little (random test data).
func storedAs(asked, got Compression) bool {
	return got == asked || (asked == CompressionZstd && got == CompressionNone)
}

// A zstd batch whose records do not compress is stored uncompressed and
// never larger; one that compresses is stored compressed.
func TestIncompressibleBatchesAreStoredAsTheyAre(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	enc := NewEncoder()
	random := make([]Record, 50)
	text := make([]Record, 50)
	for i := range random {
		v := make([]byte, 1000)
		for j := range v {
			v[j] = byte(rng.Uint32())
		}
		random[i] = Record{OffsetDelta: int32(i), Value: v}
		text[i] = Record{OffsetDelta: int32(i), Value: []byte(strings.Repeat("an event that compresses well; ", 30))}
	}
	for _, tc := range []struct {
		name string
		recs []Record
		want Compression
	}{{"random", random, CompressionNone}, {"text", text, CompressionZstd}} {
		z, _ := mustAppend(t, enc, nil, tc.recs, BatchOptions{Compression: CompressionZstd})
		plain, _ := mustAppend(t, enc, nil, tc.recs, BatchOptions{Compression: CompressionNone})
		b, err := DecodeBatch(z, DecodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if b.Compression() != tc.want || len(z) > len(plain) {
			t.Fatalf("%s: stored %v in %d bytes (%d uncompressed)", tc.name, b.Compression(), len(z), len(plain))
		}
		if d := diffRecords(tc.recs, b.Records); d != "" {
			t.Fatalf("%s: %s", tc.name, d)
		}
	}
}

// A batch re-encoded after compaction removed its last records keeps the
// offsets it covered.
func TestAppendBatchKeepsLastOffsetDelta(t *testing.T) {
	recs := []Record{{OffsetDelta: 0, Value: []byte("a")}, {OffsetDelta: 3, Value: []byte("b")}}
	chunk, info := mustAppend(t, NewEncoder(), nil, recs, BatchOptions{LastOffsetDelta: 9})
	b, err := DecodeBatch(chunk, DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b.LastOffsetDelta != 9 || info.LastOffsetDelta != 9 || len(b.Records) != 2 {
		t.Fatalf("last offset delta %d (info %d), %d records", b.LastOffsetDelta, info.LastOffsetDelta, len(b.Records))
	}
	chunk, _ = mustAppend(t, NewEncoder(), nil, recs, BatchOptions{LastOffsetDelta: 1}) // smaller: the records win
	if h, _ := ParseBatchHeader(chunk); h.LastOffsetDelta != 3 {
		t.Fatalf("last offset delta %d, want 3", h.LastOffsetDelta)
	}
}

// NextBatch walks batches stored back to back.
func TestNextBatch(t *testing.T) {
	enc := NewEncoder()
	var data []byte
	for i := range 3 {
		chunk, _ := mustAppend(t, enc, nil, []Record{{Value: []byte{byte(i)}}}, BatchOptions{})
		SetBaseOffset(chunk, int64(10*i))
		data = append(data, chunk...)
	}
	var bases []int64
	for rest := data; len(rest) > 0; {
		h, b, r, err := NextBatch(rest)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := VerifyBatch(b); err != nil {
			t.Fatal(err)
		}
		bases = append(bases, h.BaseOffset)
		rest = r
	}
	if len(bases) != 3 || bases[2] != 20 {
		t.Fatalf("bases %v", bases)
	}
	if _, _, _, err := NextBatch(data[:len(data)-1][len(data)/3*2:]); err == nil {
		t.Fatal("a cut batch was accepted")
	}
}
