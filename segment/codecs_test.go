package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy"
	"github.com/pierrec/lz4/v4"
)

// compressSection compresses an uncompressed records section as a Kafka
// client would with codec c.
func compressSection(t *testing.T, c Compression, section []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch c {
	case CompressionGzip:
		w := gzip.NewWriter(&buf)
		if _, err := w.Write(section); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	case CompressionLZ4:
		w := lz4.NewWriter(&buf)
		if _, err := w.Write(section); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	case CompressionSnappy:
		return snappy.Encode(nil, section)
	default:
		t.Fatalf("codec %v", c)
	}
	return buf.Bytes()
}

// xerial frames section in snappy-java's stream format, in blocks of at
// most blockSize input bytes.
func xerial(section []byte, blockSize int) []byte {
	out := append([]byte(nil), xerialMagic...)
	out = binary.BigEndian.AppendUint32(out, 1)
	out = binary.BigEndian.AppendUint32(out, 1)
	for len(section) > 0 {
		n := min(blockSize, len(section))
		block := snappy.Encode(nil, section[:n])
		out = binary.BigEndian.AppendUint32(out, uint32(len(block)))
		out = append(out, block...)
		section = section[n:]
	}
	return out
}

// recompress turns an uncompressed batch into one whose records section is
// compressed: header fields kept, codec bits, length and CRC rewritten.
func recompress(plain []byte, c Compression, section []byte) []byte {
	out := append([]byte(nil), plain[:BatchHeaderSize]...)
	attrs := binary.BigEndian.Uint16(out[offAttributes:])
	binary.BigEndian.PutUint16(out[offAttributes:], attrs&^uint16(AttrCompressionMask)|uint16(c))
	out = append(out, section...)
	fixBatch(out)
	return out
}

func TestDecodeKafkaCodecs(t *testing.T) {
	recs := randRecords(rand.New(rand.NewPCG(11, 12)), 40, true)
	plain, _ := mustAppend(t, NewEncoder(), nil, recs, BatchOptions{Compression: CompressionNone})
	section := plain[BatchHeaderSize:]
	cases := map[string][]byte{
		"gzip":          recompress(plain, CompressionGzip, compressSection(t, CompressionGzip, section)),
		"lz4":           recompress(plain, CompressionLZ4, compressSection(t, CompressionLZ4, section)),
		"snappy block":  recompress(plain, CompressionSnappy, compressSection(t, CompressionSnappy, section)),
		"snappy xerial": recompress(plain, CompressionSnappy, xerial(section, 4096)),
	}
	for name, chunk := range cases {
		var b Batch
		for round := range 2 { // the second round reuses the Batch's buffers
			if err := b.Decode(chunk, DecodeOptions{}); err != nil {
				t.Fatalf("%s round %d: %v", name, round, err)
			}
			if d := diffRecords(recs, b.Records); d != "" {
				t.Fatalf("%s round %d: %s", name, round, d)
			}
		}
		// Past the decompression limit: ErrTooLarge, never a panic.
		if _, err := DecodeBatch(chunk, DecodeOptions{MaxDecompressedSize: len(section) / 2}); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: limit %d: err = %v, want ErrTooLarge", name, len(section)/2, err)
		}
		// A truncated compressed section with a valid CRC is corrupt.
		cut := append([]byte(nil), chunk[:BatchHeaderSize+(len(chunk)-BatchHeaderSize)/2]...)
		fixBatch(cut)
		if _, err := DecodeBatch(cut, DecodeOptions{}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: truncated: err = %v, want ErrCorrupt", name, err)
		}
	}
	for _, garbage := range [][]byte{nil, {1, 2, 3}, append(append([]byte(nil), xerialMagic...), 0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff)} {
		for _, c := range []Compression{CompressionGzip, CompressionSnappy, CompressionLZ4} {
			chunk := rawBatch(int16(c), 1, 0, 0, garbage)
			if _, err := DecodeBatch(chunk, DecodeOptions{}); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%v garbage %x: err = %v, want ErrCorrupt", c, garbage, err)
			}
		}
	}
}
