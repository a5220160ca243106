package objectstoretest

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
)

// genChunk is the period of the generator's base pattern; every chunk is
// stamped with its index so that chunks (and multipart parts) moved or
// repeated are detected.
const genChunk = 64 << 10

// Generator is an io.Reader of size deterministic bytes that it makes on
// the fly, so tests can stream large objects without holding them.
type Generator struct {
	block []byte
	size  int64
	off   int64
}

// NewGenerator returns a Generator of size bytes derived from seed.
func NewGenerator(seed uint64, size int64) *Generator {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	block := make([]byte, genChunk)
	for i := 0; i < len(block); i += 8 {
		binary.LittleEndian.PutUint64(block[i:], rng.Uint64())
	}
	return &Generator{block: block, size: size}
}

// At returns a Generator positioned at offset, sharing g's pattern: its
// bytes are g's bytes from offset on.
func (g *Generator) At(offset int64) *Generator {
	return &Generator{block: g.block, size: g.size, off: offset}
}

// Read fills p with the next bytes.
func (g *Generator) Read(p []byte) (int, error) {
	if g.off >= g.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && g.off < g.size {
		in := int(g.off % genChunk)
		m := min(len(p)-n, genChunk-in, int(min(g.size-g.off, genChunk)))
		copy(p[n:n+m], g.block[in:in+m])
		if in < 8 {
			var stamp [8]byte
			binary.LittleEndian.PutUint64(stamp[:], uint64(g.off/genChunk))
			copy(p[n:n+m], stamp[in:])
		}
		n += m
		g.off += int64(m)
	}
	return n, nil
}
