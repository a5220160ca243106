package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy"
	"github.com/pierrec/lz4/v4"
)

// Kafka's other codecs, which Silt reads (clients' batches are stored as
// they came) but never writes.
const (
	CompressionGzip   Compression = 1
	CompressionSnappy Compression = 2
	CompressionLZ4    Compression = 3
)

// xerialMagic opens a snappy records section framed the way Kafka's Java
// client frames it (snappy-java's stream format); librdkafka and franz-go
// send a bare snappy block instead. Both are read.
var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

// xerialHeaderSize is the magic plus a version and a compatible-version
// int32.
const xerialHeaderSize = 16

var (
	gzipReaders sync.Pool // *gzip.Reader
	lz4Readers  sync.Pool // *lz4.Reader
)

// decompress appends the decompressed records section data, compressed
// with c (gzip, snappy or lz4), to dst, reading at most limit bytes.
func decompress(c Compression, data, dst []byte, limit int) ([]byte, error) {
	switch c {
	case CompressionGzip:
		zr, _ := gzipReaders.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(bytes.NewReader(data))
		} else {
			err = zr.Reset(bytes.NewReader(data))
		}
		if err != nil {
			return dst, fmt.Errorf("%w: gzip: %v", ErrCorrupt, err)
		}
		defer gzipReaders.Put(zr)
		return readLimited(zr, dst, limit, "gzip")
	case CompressionLZ4:
		zr, _ := lz4Readers.Get().(*lz4.Reader)
		if zr == nil {
			zr = lz4.NewReader(bytes.NewReader(data))
		} else {
			zr.Reset(bytes.NewReader(data))
		}
		defer lz4Readers.Put(zr)
		return readLimited(zr, dst, limit, "lz4")
	case CompressionSnappy:
		if bytes.HasPrefix(data, xerialMagic) {
			return decodeXerial(data, dst, limit)
		}
		return decodeSnappyBlock(data, dst, limit)
	}
	return dst, fmt.Errorf("%w: compression %v", ErrUnsupported, c)
}

// readLimited appends r's bytes to dst, failing with ErrTooLarge past limit.
func readLimited(r io.Reader, dst []byte, limit int, codec string) ([]byte, error) {
	start := len(dst)
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if len(dst)-start > limit {
			return dst, fmt.Errorf("%w: records section decompresses past %d bytes", ErrTooLarge, limit)
		}
		if errors.Is(err, io.EOF) {
			return dst, nil
		}
		if err != nil {
			return dst, fmt.Errorf("%w: %s: %v", ErrCorrupt, codec, err)
		}
	}
}

func decodeSnappyBlock(block, dst []byte, limit int) ([]byte, error) {
	n, err := snappy.DecodedLen(block)
	if err != nil {
		return dst, fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
	}
	if n > limit-len(dst) {
		return dst, fmt.Errorf("%w: records section decompresses past %d bytes", ErrTooLarge, limit)
	}
	start := len(dst)
	if cap(dst)-start < n {
		grown := make([]byte, start, start+n)
		copy(grown, dst)
		dst = grown
	}
	out, err := snappy.Decode(dst[start:start+n], block)
	if err != nil {
		return dst, fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
	}
	return dst[:start+len(out)], nil
}

// decodeXerial reads snappy-java's framing: the 16-byte header, then
// blocks, each a big-endian int32 length and a snappy block.
func decodeXerial(data, dst []byte, limit int) ([]byte, error) {
	if len(data) < xerialHeaderSize {
		return dst, fmt.Errorf("%w: snappy: truncated xerial header", ErrCorrupt)
	}
	start := len(dst)
	p := xerialHeaderSize
	for p < len(data) {
		if len(data)-p < 4 {
			return dst, fmt.Errorf("%w: snappy: truncated xerial block length", ErrCorrupt)
		}
		n := int(binary.BigEndian.Uint32(data[p:]))
		p += 4
		if n < 0 || n > len(data)-p {
			return dst, fmt.Errorf("%w: snappy: xerial block of %d bytes with %d left", ErrCorrupt, n, len(data)-p)
		}
		var err error
		if dst, err = decodeSnappyBlock(data[p:p+n], dst, limit+start); err != nil {
			return dst, err
		}
		p += n
	}
	return dst, nil
}
