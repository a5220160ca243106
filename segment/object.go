package segment

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
)

// Object layout constants. See docs/segment-format.md.
const (
	// ObjectMagic opens every segment object and ends its trailer.
	ObjectMagic = "SILT"
	// ObjectVersion is the object format version written and read here.
	ObjectVersion = 1

	// HeaderSize is the object header: magic "SILT", version byte, three
	// reserved zero bytes.
	HeaderSize = 8
	// TrailerSize is the fixed-size trailer that ends an object: footer
	// length (uint32), version byte, three reserved zero bytes, magic "SILT".
	TrailerSize = 12
	// FooterEntrySize is the size of one chunk entry in the footer index.
	FooterEntrySize = 48
	// footerOverhead is the footer's entry count and CRC.
	footerOverhead = 8
)

// ChunkKey names the partition a chunk belongs to.
type ChunkKey struct {
	TopicID   int64
	Partition int32
}

// ChunkRef locates one chunk (one RecordBatch) in an object and summarises
// it; it is one entry of the footer index.
type ChunkRef struct {
	ChunkKey
	Offset          int64 // byte offset of the chunk in the object
	Length          int64 // chunk length in bytes
	Records         int32 // record count
	LastOffsetDelta int32
	FirstTimestamp  int64
	MaxTimestamp    int64
}

// Bytes returns the chunk's bytes within obj, the whole object. It panics if
// the ref does not lie within obj; refs from ParseObject on obj always do.
func (r ChunkRef) Bytes(obj []byte) []byte {
	return obj[r.Offset : r.Offset+r.Length : r.Offset+r.Length]
}

// Builder assembles one segment object in memory: header, chunks, footer.
// It is not safe for concurrent use.
type Builder struct {
	enc      *Encoder
	buf      []byte
	refs     []ChunkRef
	finished bool
}

// NewBuilder returns an empty Builder that encodes with enc. enc may be nil
// if only AddRaw is used.
func NewBuilder(enc *Encoder) *Builder {
	b := &Builder{enc: enc}
	b.Reset()
	return b
}

// Reset empties the Builder for a new object, keeping its buffers. Bytes and
// refs returned by an earlier Finish must no longer be in use.
func (b *Builder) Reset() {
	b.buf = append(b.buf[:0], ObjectMagic...)
	b.buf = append(b.buf, ObjectVersion, 0, 0, 0)
	b.refs = b.refs[:0]
	b.finished = false
}

// Len is the object's size so far: header plus chunks. Finish adds 8 +
// FooterEntrySize bytes per chunk for the footer and TrailerSize for the
// trailer; see FinishedSize.
func (b *Builder) Len() int { return len(b.buf) }

// Chunks is the number of chunks added so far.
func (b *Builder) Chunks() int { return len(b.refs) }

// FinishedSize is the size the object will have if Finish is called now.
func (b *Builder) FinishedSize() int {
	return len(b.buf) + footerOverhead + FooterEntrySize*len(b.refs) + TrailerSize
}

// Add encodes recs as one RecordBatch (see Encoder.AppendBatch) and appends
// it as a chunk of key. On error the Builder is unchanged.
func (b *Builder) Add(key ChunkKey, recs []Record, opts BatchOptions) (ChunkRef, error) {
	if b.finished {
		return ChunkRef{}, fmt.Errorf("%w: Add after Finish", ErrInvalid)
	}
	if b.enc == nil {
		return ChunkRef{}, fmt.Errorf("%w: Builder has no Encoder", ErrInvalid)
	}
	start := len(b.buf)
	buf, info, err := b.enc.AppendBatch(b.buf, recs, opts)
	if err != nil {
		b.buf = buf[:start]
		return ChunkRef{}, err
	}
	b.buf = buf
	ref := ChunkRef{
		ChunkKey:        key,
		Offset:          int64(start),
		Length:          int64(info.Size),
		Records:         info.Records,
		LastOffsetDelta: info.LastOffsetDelta,
		FirstTimestamp:  info.FirstTimestamp,
		MaxTimestamp:    info.MaxTimestamp,
	}
	b.refs = append(b.refs, ref)
	return ref, nil
}

// AddRaw appends chunk, an already-encoded RecordBatch v2 (for example one
// taken from another object when merging), unchanged. chunk must be exactly
// one batch with a valid CRC (see VerifyBatch); the index entry is taken
// from its header, with FirstTimestamp = baseTimestamp. On error the Builder
// is unchanged.
func (b *Builder) AddRaw(key ChunkKey, chunk []byte) (ChunkRef, error) {
	if b.finished {
		return ChunkRef{}, fmt.Errorf("%w: AddRaw after Finish", ErrInvalid)
	}
	h, err := VerifyBatch(chunk)
	if err != nil {
		return ChunkRef{}, err
	}
	ref := ChunkRef{
		ChunkKey:        key,
		Offset:          int64(len(b.buf)),
		Length:          int64(len(chunk)),
		Records:         h.RecordCount,
		LastOffsetDelta: h.LastOffsetDelta,
		FirstTimestamp:  h.BaseTimestamp,
		MaxTimestamp:    h.MaxTimestamp,
	}
	b.buf = append(b.buf, chunk...)
	b.refs = append(b.refs, ref)
	return ref, nil
}

// Finish appends the footer and trailer and returns the complete object and
// its index (in Add order). Both alias the Builder's buffers: they stay
// valid until Reset. After Finish, Add and AddRaw fail until Reset.
func (b *Builder) Finish() ([]byte, []ChunkRef, error) {
	if b.finished {
		return nil, nil, fmt.Errorf("%w: Finish called twice", ErrInvalid)
	}
	footerLen := footerOverhead + FooterEntrySize*len(b.refs)
	if int64(footerLen) > math.MaxUint32 {
		return nil, nil, fmt.Errorf("%w: %d chunks in one object", ErrTooLarge, len(b.refs))
	}
	b.buf = appendFooter(b.buf, b.refs)
	b.finished = true
	return b.buf, b.refs, nil
}

// appendFooter appends the footer index and the trailer.
func appendFooter(dst []byte, refs []ChunkRef) []byte {
	be := binary.BigEndian
	start := len(dst)
	dst = be.AppendUint32(dst, uint32(len(refs)))
	for i := range refs {
		r := &refs[i]
		dst = be.AppendUint64(dst, uint64(r.TopicID))
		dst = be.AppendUint32(dst, uint32(r.Partition))
		dst = be.AppendUint64(dst, uint64(r.Offset))
		dst = be.AppendUint32(dst, uint32(r.Length))
		dst = be.AppendUint32(dst, uint32(r.Records))
		dst = be.AppendUint32(dst, uint32(r.LastOffsetDelta))
		dst = be.AppendUint64(dst, uint64(r.FirstTimestamp))
		dst = be.AppendUint64(dst, uint64(r.MaxTimestamp))
	}
	dst = be.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
	footerLen := len(dst) - start
	dst = be.AppendUint32(dst, uint32(footerLen))
	dst = append(dst, ObjectVersion, 0, 0, 0)
	return append(dst, ObjectMagic...)
}

// TailSize reads the trailer at the end of tail (the last bytes of an
// object, at least TrailerSize of them) and returns how many bytes at the
// end of the object hold the footer and trailer. A reader that fetched
// fewer than that range-reads that many bytes from the end and calls
// ReadFooter.
func TailSize(tail []byte) (int, error) {
	if len(tail) < TrailerSize {
		return 0, fmt.Errorf("%w: tail of %d bytes is shorter than the %d-byte trailer", ErrInvalid, len(tail), TrailerSize)
	}
	t := tail[len(tail)-TrailerSize:]
	if string(t[8:12]) != ObjectMagic {
		return 0, fmt.Errorf("%w: trailer magic %q (want %q)", ErrUnsupported, t[8:12], ObjectMagic)
	}
	if t[4] != ObjectVersion || t[5] != 0 || t[6] != 0 || t[7] != 0 {
		return 0, fmt.Errorf("%w: trailer version %d, reserved %x", ErrUnsupported, t[4], t[5:8])
	}
	footerLen := int64(binary.BigEndian.Uint32(t[0:4]))
	if footerLen < footerOverhead || (footerLen-footerOverhead)%FooterEntrySize != 0 {
		return 0, fmt.Errorf("%w: footer length %d", ErrCorrupt, footerLen)
	}
	return int(footerLen) + TrailerSize, nil
}

// ReadFooter parses the footer index from tail, the last bytes of an object
// of objectSize bytes (tail may be the whole object). tail must hold at
// least TailSize bytes. It checks the trailer, the footer CRC-32C, and that
// the chunks tile the space between the header and the footer exactly, in
// order. It never panics.
func ReadFooter(tail []byte, objectSize int64) ([]ChunkRef, error) {
	if int64(len(tail)) > objectSize {
		return nil, fmt.Errorf("%w: tail of %d bytes longer than the %d-byte object", ErrInvalid, len(tail), objectSize)
	}
	need, err := TailSize(tail)
	if err != nil {
		return nil, err
	}
	if len(tail) < need {
		if int64(need) > objectSize {
			return nil, fmt.Errorf("%w: footer and trailer of %d bytes in a %d-byte object", ErrCorrupt, need, objectSize)
		}
		return nil, fmt.Errorf("%w: tail of %d bytes, footer and trailer need %d", ErrInvalid, len(tail), need)
	}
	footerLen := need - TrailerSize
	footerStart := objectSize - int64(need) // within the object
	if footerStart < HeaderSize {
		return nil, fmt.Errorf("%w: footer of %d bytes overlaps the object header", ErrCorrupt, footerLen)
	}
	footer := tail[len(tail)-need : len(tail)-TrailerSize]
	be := binary.BigEndian
	body := footer[:footerLen-4]
	if stored, crc := be.Uint32(footer[footerLen-4:]), crc32.Checksum(body, castagnoli); stored != crc {
		return nil, fmt.Errorf("%w: footer crc %08x, computed %08x", ErrCorrupt, stored, crc)
	}
	n := int(be.Uint32(body[0:4]))
	if n != (footerLen-footerOverhead)/FooterEntrySize {
		return nil, fmt.Errorf("%w: footer holds %d entries, count says %d", ErrCorrupt, (footerLen-footerOverhead)/FooterEntrySize, n)
	}
	refs := make([]ChunkRef, n)
	next := int64(HeaderSize)
	for i := range refs {
		e := body[4+i*FooterEntrySize : 4+(i+1)*FooterEntrySize]
		r := &refs[i]
		r.TopicID = int64(be.Uint64(e[0:]))
		r.Partition = int32(be.Uint32(e[8:]))
		r.Offset = int64(be.Uint64(e[12:]))
		r.Length = int64(be.Uint32(e[20:]))
		r.Records = int32(be.Uint32(e[24:]))
		r.LastOffsetDelta = int32(be.Uint32(e[28:]))
		r.FirstTimestamp = int64(be.Uint64(e[32:]))
		r.MaxTimestamp = int64(be.Uint64(e[40:]))
		if r.Offset != next {
			return nil, fmt.Errorf("%w: chunk %d at byte %d, expected %d", ErrCorrupt, i, r.Offset, next)
		}
		if r.Length < BatchHeaderSize || r.Length > footerStart-r.Offset {
			return nil, fmt.Errorf("%w: chunk %d length %d at byte %d (chunks end at %d)", ErrCorrupt, i, r.Length, r.Offset, footerStart)
		}
		if r.Records < 0 {
			return nil, fmt.Errorf("%w: chunk %d record count %d", ErrCorrupt, i, r.Records)
		}
		next = r.Offset + r.Length
	}
	if next != footerStart {
		return nil, fmt.Errorf("%w: chunks end at byte %d, footer starts at %d", ErrCorrupt, next, footerStart)
	}
	return refs, nil
}

// ParseObject checks the header of obj, a whole segment object, reads its
// footer index, and checks that each chunk starts with a RecordBatch v2
// header that agrees with its index entry (length, record count, last offset
// delta, timestamps). It does not verify chunk
// CRCs or decode records (DecodeBatch does). It never panics.
func ParseObject(obj []byte) ([]ChunkRef, error) {
	if len(obj) < HeaderSize+footerOverhead+TrailerSize {
		return nil, fmt.Errorf("%w: object of %d bytes is too short", ErrCorrupt, len(obj))
	}
	if string(obj[0:4]) != ObjectMagic {
		return nil, fmt.Errorf("%w: object magic %q (want %q)", ErrUnsupported, obj[0:4], ObjectMagic)
	}
	if obj[4] != ObjectVersion || obj[5] != 0 || obj[6] != 0 || obj[7] != 0 {
		return nil, fmt.Errorf("%w: object version %d, reserved %x", ErrUnsupported, obj[4], obj[5:8])
	}
	refs, err := ReadFooter(obj, int64(len(obj)))
	if err != nil {
		return nil, err
	}
	for i, r := range refs {
		h, err := ParseBatchHeader(r.Bytes(obj))
		if err != nil {
			return nil, fmt.Errorf("chunk %d: %w", i, err)
		}
		if int64(h.Size()) != r.Length {
			return nil, fmt.Errorf("%w: chunk %d: batch length says %d bytes, index says %d", ErrCorrupt, i, h.Size(), r.Length)
		}
		if h.RecordCount != r.Records || h.LastOffsetDelta != r.LastOffsetDelta ||
			h.BaseTimestamp != r.FirstTimestamp || h.MaxTimestamp != r.MaxTimestamp {
			return nil, fmt.Errorf("%w: chunk %d: batch header disagrees with its index entry", ErrCorrupt, i)
		}
	}
	return refs, nil
}
