package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
)

type added struct {
	key  ChunkKey
	recs []Record
	comp Compression
}

// buildObject adds random chunks to b and returns what was added.
func buildObject(t *testing.T, rng *rand.Rand, b *Builder, chunks int, big bool) []added {
	t.Helper()
	var out []added
	for i := range chunks {
		a := added{
			key:  ChunkKey{TopicID: rng.Int64N(5) - 1, Partition: int32(rng.IntN(4))},
			recs: randRecords(rng, 1+rng.IntN(30), big && i == 1),
			comp: []Compression{CompressionNone, CompressionZstd}[rng.IntN(2)],
		}
		before := b.Len()
		ref, err := b.Add(a.key, a.recs, BatchOptions{Compression: a.comp})
		if err != nil {
			t.Fatal(err)
		}
		if ref.Offset != int64(before) || ref.Offset+ref.Length != int64(b.Len()) || ref.ChunkKey != a.key ||
			ref.Records != int32(len(a.recs)) || ref.LastOffsetDelta != a.recs[len(a.recs)-1].OffsetDelta ||
			ref.FirstTimestamp != a.recs[0].Timestamp {
			t.Fatalf("chunk %d: ref %+v", i, ref)
		}
		out = append(out, a)
	}
	return out
}

func checkObject(t *testing.T, obj []byte, refs []ChunkRef, want []added) {
	t.Helper()
	parsed, err := ParseObject(obj)
	if err != nil {
		t.Fatal(err)
	}
	if len(parsed) != len(refs) || len(refs) != len(want) {
		t.Fatalf("%d parsed refs, %d from Finish, %d added", len(parsed), len(refs), len(want))
	}
	var b Batch
	for i := range parsed {
		if parsed[i] != refs[i] {
			t.Fatalf("ref %d: parsed %+v, Finish %+v", i, parsed[i], refs[i])
		}
		if err := b.Decode(parsed[i].Bytes(obj), DecodeOptions{}); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if d := diffRecords(want[i].recs, b.Records); d != "" {
			t.Fatalf("chunk %d: %s", i, d)
		}
		if !storedAs(want[i].comp, b.Compression()) || parsed[i].ChunkKey != want[i].key {
			t.Fatalf("chunk %d: compression %v key %+v", i, b.Compression(), parsed[i].ChunkKey)
		}
	}
}

func TestObjectRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 10))
	b := NewBuilder(NewEncoder())
	for _, n := range []int{0, 1, 5, 40} {
		want := buildObject(t, rng, b, n, n == 5)
		size := b.FinishedSize()
		obj, refs, err := b.Finish()
		if err != nil {
			t.Fatal(err)
		}
		if len(obj) != size {
			t.Fatalf("object %d bytes, FinishedSize said %d", len(obj), size)
		}
		checkObject(t, obj, refs, want)

		// Range-read the tail as a reader would: a short read first, then
		// exactly what TailSize asks for.
		need, err := TailSize(obj[len(obj)-TrailerSize:])
		if err != nil {
			t.Fatal(err)
		}
		if need != TrailerSize+footerOverhead+FooterEntrySize*n {
			t.Fatalf("TailSize = %d for %d chunks", need, n)
		}
		if n > 0 {
			if _, err := ReadFooter(obj[len(obj)-need+1:], int64(len(obj))); !errors.Is(err, ErrInvalid) {
				t.Fatalf("short tail: err = %v", err)
			}
		}
		tailRefs, err := ReadFooter(obj[len(obj)-need:], int64(len(obj)))
		if err != nil {
			t.Fatal(err)
		}
		if len(tailRefs) != len(refs) {
			t.Fatalf("tail gave %d refs", len(tailRefs))
		}
		for i := range refs {
			if tailRefs[i] != refs[i] {
				t.Fatalf("tail ref %d = %+v, want %+v", i, tailRefs[i], refs[i])
			}
		}
		if _, err := b.Add(ChunkKey{}, want0(), BatchOptions{}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Add after Finish: %v", err)
		}
		if _, _, err := b.Finish(); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Finish twice: %v", err)
		}
		b.Reset()
		if b.Len() != HeaderSize || b.Chunks() != 0 {
			t.Fatalf("after Reset: Len %d, Chunks %d", b.Len(), b.Chunks())
		}
	}
}

func want0() []Record { return []Record{{}} }

// TestAddRaw merges chunks of one object into another without re-encoding.
func TestAddRaw(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	src := NewBuilder(NewEncoder())
	want := buildObject(t, rng, src, 6, false)
	obj, refs, err := src.Finish()
	if err != nil {
		t.Fatal(err)
	}
	dst := NewBuilder(nil)
	var merged []added
	for i := len(refs) - 1; i >= 0; i -= 2 {
		ref, err := dst.AddRaw(refs[i].ChunkKey, refs[i].Bytes(obj))
		if err != nil {
			t.Fatal(err)
		}
		if ref.Length != refs[i].Length || ref.Records != refs[i].Records || ref.LastOffsetDelta != refs[i].LastOffsetDelta ||
			ref.FirstTimestamp != refs[i].FirstTimestamp || ref.MaxTimestamp != refs[i].MaxTimestamp {
			t.Fatalf("AddRaw ref %+v, source %+v", ref, refs[i])
		}
		merged = append(merged, want[i])
	}
	if _, err := dst.Add(ChunkKey{}, want0(), BatchOptions{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Add without encoder: %v", err)
	}
	// Rejected chunks leave the builder unchanged.
	before := dst.Len()
	bad := append([]byte(nil), refs[0].Bytes(obj)...)
	bad[len(bad)-1] ^= 1
	for _, c := range [][]byte{bad, bad[:40], append(refs[0].Bytes(obj), 0)} {
		if _, err := dst.AddRaw(ChunkKey{}, c); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("AddRaw(bad): %v", err)
		}
	}
	if dst.Len() != before {
		t.Fatal("failed AddRaw changed the builder")
	}
	out, outRefs, err := dst.Finish()
	if err != nil {
		t.Fatal(err)
	}
	checkObject(t, out, outRefs, merged)
}

func TestAddFailureLeavesBuilderUnchanged(t *testing.T) {
	b := NewBuilder(NewEncoder())
	if _, err := b.Add(ChunkKey{TopicID: 1}, []Record{{Value: []byte("x")}}, BatchOptions{}); err != nil {
		t.Fatal(err)
	}
	n := b.Len()
	bad := []Record{{OffsetDelta: 0, Value: bytes.Repeat([]byte("y"), 1000)}, {OffsetDelta: 0}}
	for _, comp := range []Compression{CompressionNone, CompressionZstd, 2} {
		if _, err := b.Add(ChunkKey{}, bad, BatchOptions{Compression: comp}); err == nil {
			t.Fatal("Add accepted duplicate offset deltas")
		}
	}
	if b.Len() != n || b.Chunks() != 1 {
		t.Fatalf("Len %d (was %d), Chunks %d", b.Len(), n, b.Chunks())
	}
	obj, _, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if refs, err := ParseObject(obj); err != nil || len(refs) != 1 {
		t.Fatalf("ParseObject: %v, %d refs", err, len(refs))
	}
}

// TestObjectLayout pins the object header, footer entry and trailer bytes.
func TestObjectLayout(t *testing.T) {
	b := NewBuilder(NewEncoder())
	recs := []Record{{OffsetDelta: 0, Timestamp: 5, Value: []byte("a")}, {OffsetDelta: 2, Timestamp: 9}}
	ref, err := b.Add(ChunkKey{TopicID: 0x0102030405060708, Partition: 9}, recs, BatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	obj, _, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	chunkLen := int(ref.Length)
	wantHeader := []byte{'S', 'I', 'L', 'T', 1, 0, 0, 0}
	footer := []byte{
		0, 0, 0, 1, // entry count
		1, 2, 3, 4, 5, 6, 7, 8, // topic id
		0, 0, 0, 9, // partition
		0, 0, 0, 0, 0, 0, 0, 8, // byte offset = HeaderSize
		0, 0, 0, byte(chunkLen), // length
		0, 0, 0, 2, // records
		0, 0, 0, 2, // last offset delta
		0, 0, 0, 0, 0, 0, 0, 5, // first timestamp
		0, 0, 0, 0, 0, 0, 0, 9, // max timestamp
	}
	footer = binary.BigEndian.AppendUint32(footer, crc32cBitwise(footer))
	trailer := []byte{0, 0, 0, byte(len(footer)), 1, 0, 0, 0, 'S', 'I', 'L', 'T'}
	if len(obj) != HeaderSize+chunkLen+len(footer)+TrailerSize {
		t.Fatalf("object is %d bytes", len(obj))
	}
	if !bytes.Equal(obj[:HeaderSize], wantHeader) {
		t.Fatalf("header %x", obj[:HeaderSize])
	}
	if !bytes.Equal(obj[HeaderSize+chunkLen:len(obj)-TrailerSize], footer) {
		t.Fatalf("footer\n got %x\nwant %x", obj[HeaderSize+chunkLen:len(obj)-TrailerSize], footer)
	}
	if !bytes.Equal(obj[len(obj)-TrailerSize:], trailer) {
		t.Fatalf("trailer %x", obj[len(obj)-TrailerSize:])
	}
	if _, err := VerifyBatch(obj[HeaderSize : HeaderSize+chunkLen]); err != nil {
		t.Fatal(err)
	}
}

// TestObjectCorruption flips every byte outside the chunks and truncates.
func TestObjectCorruption(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 12))
	b := NewBuilder(NewEncoder())
	buildObject(t, rng, b, 3, false)
	obj, refs, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	chunksEnd := int(refs[len(refs)-1].Offset + refs[len(refs)-1].Length)
	for i := range obj {
		if i >= HeaderSize && i < chunksEnd {
			continue // chunk bytes are guarded by the batch CRC, checked by DecodeBatch
		}
		bad := append([]byte(nil), obj...)
		bad[i] ^= 0x10
		_, err := ParseObject(bad)
		if err == nil {
			t.Fatalf("byte %d flipped: no error", i)
		}
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("byte %d flipped: err = %v", i, err)
		}
	}
	for n := range len(obj) {
		if _, err := ParseObject(obj[:n]); err == nil {
			t.Fatalf("prefix %d parsed", n)
		}
	}
	// A footer rewritten with a valid CRC but entries that do not tile the
	// object is still rejected.
	bad := append([]byte(nil), obj...)
	footerStart := chunksEnd
	binary.BigEndian.PutUint64(bad[footerStart+4+12:], uint64(HeaderSize+1)) // first entry's offset
	fixFooterCRC(bad)
	if _, err := ParseObject(bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("misplaced chunk: %v", err)
	}
	// So is an entry that disagrees with its batch header.
	bad = append(bad[:0], obj...)
	binary.BigEndian.PutUint32(bad[footerStart+4+24:], 999) // first entry's record count
	fixFooterCRC(bad)
	if _, err := ParseObject(bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong record count: %v", err)
	}
}

// fixFooterCRC recomputes the footer CRC of obj if its trailer is readable.
func fixFooterCRC(obj []byte) {
	need, err := TailSize(obj)
	if err != nil || need > len(obj) {
		return
	}
	footer := obj[len(obj)-need : len(obj)-TrailerSize]
	binary.BigEndian.PutUint32(footer[len(footer)-4:], crc32cBitwise(footer[:len(footer)-4]))
}

func TestReadFooterArguments(t *testing.T) {
	b := NewBuilder(nil)
	obj, _, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFooter(obj, int64(len(obj))-1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("tail longer than object: %v", err)
	}
	if _, err := TailSize(obj[len(obj)-TrailerSize+1:]); !errors.Is(err, ErrInvalid) {
		t.Fatalf("short trailer: %v", err)
	}
	// A tail from an object whose footer claims more bytes than exist.
	tail := append([]byte(nil), obj[HeaderSize:]...)
	binary.BigEndian.PutUint32(tail[len(tail)-TrailerSize:], 8+48*1000)
	if _, err := ReadFooter(tail, int64(len(tail))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("oversized footer: %v", err)
	}
	other := append([]byte(nil), obj...)
	copy(other, "KAFK")
	if _, err := ParseObject(other); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("bad magic: %v", err)
	}
	other = append(other[:0], obj...)
	other[len(other)-TrailerSize+4] = 2
	if _, err := ParseObject(other); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("trailer version 2: %v", err)
	}
}
