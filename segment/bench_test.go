package segment

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchRecords makes n records with 16-byte keys and size-byte values of
// log-like, moderately compressible text (zstd shrinks it roughly 3x).
func benchRecords(n, size int) ([]Record, int64) {
	rng := rand.New(rand.NewPCG(99, 99))
	words := []string{"user", "order", "created", "updated", "deleted", "payment", "eu-west", "us-east",
		"status", "ok", "retry", "timeout", "sku", "cart", "session", "click"}
	recs := make([]Record, n)
	var total int64
	ts := int64(1_700_000_000_000)
	for i := range recs {
		v := make([]byte, 0, size)
		for len(v) < size {
			switch rng.IntN(3) {
			case 0:
				v = append(v, words[rng.IntN(len(words))]...)
			case 1:
				v = fmt.Appendf(v, "%d", rng.Uint32())
			default:
				for range 6 {
					v = append(v, 'a'+byte(rng.IntN(26)))
				}
			}
			v = append(v, ' ')
		}
		v = v[:size]
		ts += int64(rng.IntN(3))
		recs[i] = Record{
			OffsetDelta: int32(i),
			Timestamp:   ts,
			Key:         fmt.Appendf(nil, "key-%012d", rng.IntN(1e9)),
			Value:       v,
			Headers:     []Header{{Key: "trace", Value: []byte("0123456789abcdef")}},
		}
		total += int64(len(recs[i].Key) + len(v))
	}
	return recs, total
}

var benchCompressions = []Compression{CompressionZstd, CompressionNone}

// BenchmarkEncode: 1000 records of 1 KiB per batch. MB/s counts key and
// value bytes.
func BenchmarkEncode(b *testing.B) {
	recs, total := benchRecords(1000, 1024)
	for _, comp := range benchCompressions {
		b.Run(comp.String(), func(b *testing.B) {
			enc := NewEncoder()
			opts := BatchOptions{Compression: comp}
			dst, info, err := enc.AppendBatch(nil, recs, opts)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(total)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				dst, _, err = enc.AppendBatch(dst[:0], recs, opts)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(info.Size)/float64(total), "size/input")
		})
	}
}

// BenchmarkEncodeLevels compares the zstd levels on the same batch.
func BenchmarkEncodeLevels(b *testing.B) {
	recs, total := benchRecords(1000, 1024)
	for _, l := range []struct {
		name  string
		level ZstdLevel
	}{{"fastest", ZstdFastest}, {"default", ZstdDefault}, {"better", ZstdBetter}} {
		b.Run(l.name, func(b *testing.B) {
			enc := NewEncoderLevel(l.level)
			opts := BatchOptions{Compression: CompressionZstd}
			var dst []byte
			var info BatchInfo
			var err error
			b.SetBytes(total)
			b.ReportAllocs()
			for b.Loop() {
				dst, info, err = enc.AppendBatch(dst[:0], recs, opts)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(info.Size)/float64(total), "size/input")
		})
	}
}

// BenchmarkDecode: the same batches, decoded into a reused Batch
// (steady state) and with DecodeBatch (fresh result each time).
func BenchmarkDecode(b *testing.B) {
	recs, total := benchRecords(1000, 1024)
	for _, comp := range benchCompressions {
		chunk, _, err := NewEncoder().AppendBatch(nil, recs, BatchOptions{Compression: comp})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(comp.String()+"/reuse", func(b *testing.B) {
			var batch Batch
			b.SetBytes(total)
			b.ReportAllocs()
			for b.Loop() {
				if err := batch.Decode(chunk, DecodeOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(comp.String()+"/fresh", func(b *testing.B) {
			b.SetBytes(total)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeBatch(chunk, DecodeOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBuilder: an object of 50 chunks of 200 records each.
func BenchmarkBuilder(b *testing.B) {
	recs, total := benchRecords(200, 1024)
	bld := NewBuilder(NewEncoder())
	b.SetBytes(total * 50)
	b.ReportAllocs()
	for b.Loop() {
		bld.Reset()
		for i := range 50 {
			if _, err := bld.Add(ChunkKey{TopicID: 1, Partition: int32(i)}, recs, BatchOptions{Compression: CompressionZstd}); err != nil {
				b.Fatal(err)
			}
		}
		obj, _, err := bld.Finish()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ParseObject(obj); err != nil {
			b.Fatal(err)
		}
	}
}
