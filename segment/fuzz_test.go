package segment

import (
	"errors"
	"math/rand/v2"
	"testing"
)

// fuzzDecodeOptions keeps decompression small so the fuzzer stays fast.
var fuzzDecodeOptions = DecodeOptions{MaxDecompressedSize: 1 << 20}

// smallRecords are like randRecords but tiny, so that seeds stay short and
// mutations stay effective.
func smallRecords(rng *rand.Rand, n int) []Record {
	recs := randRecords(rng, n, false)
	for i := range recs {
		r := &recs[i]
		r.Key = r.Key[:min(len(r.Key), 3)]
		r.Value = r.Value[:min(len(r.Value), 6)]
		r.Headers = r.Headers[:min(len(r.Headers), 1)]
		for j := range r.Headers {
			r.Headers[j].Key = r.Headers[j].Key[:min(len(r.Headers[j].Key), 2)]
			r.Headers[j].Value = r.Headers[j].Value[:min(len(r.Headers[j].Value), 2)]
		}
	}
	return recs
}

func seedBatches(f *testing.F) {
	f.Add(publishedBatch)
	f.Add(rawBatch(0, 0, 0, 0, nil))
	rng := rand.New(rand.NewPCG(20, 20))
	enc := NewEncoder()
	for _, comp := range []Compression{CompressionNone, CompressionZstd} {
		for _, n := range []int{1, 3, 10} {
			chunk, _, err := enc.AppendBatch(nil, smallRecords(rng, n), BatchOptions{Compression: comp})
			if err != nil {
				f.Fatal(err)
			}
			f.Add(chunk)
		}
	}
}

// checkDecoded asserts what a successful decode promises, and that the
// records re-encode to a batch that decodes to the same records.
func checkDecoded(t *testing.T, b *Batch, chunk []byte) {
	if b.Size() != len(chunk) || len(b.Records) != int(b.RecordCount) {
		t.Fatalf("decoded size %d / %d records for %d bytes / count %d", b.Size(), len(b.Records), len(chunk), b.RecordCount)
	}
	opts := BatchOptions{Compression: b.Compression()}
	again, _, err := NewEncoder().AppendBatch(nil, b.Records, opts)
	if err != nil {
		// The decoder accepts what the encoder refuses to write: empty
		// batches and unordered offset deltas (both valid Kafka after
		// compaction or from other writers).
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("re-encode: %v", err)
		}
		return
	}
	b2, err := DecodeBatch(again, fuzzDecodeOptions)
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			return
		}
		t.Fatalf("decode of re-encoded batch: %v", err)
	}
	if d := diffRecords(b.Records, b2.Records); d != "" {
		t.Fatalf("re-encode round trip: %s", d)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	seedBatches(f)
	f.Fuzz(func(t *testing.T, chunk []byte) {
		// As given: mostly stopped by length or CRC checks.
		if b, err := DecodeBatch(chunk, fuzzDecodeOptions); err == nil {
			checkDecoded(t, b, chunk)
		} else if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("unclassified error: %v", err)
		}
		// With length and CRC made valid, so mutations reach the
		// decompressor and the record parser.
		fixed := append([]byte(nil), chunk...)
		fixBatch(fixed)
		if b, err := DecodeBatch(fixed, fuzzDecodeOptions); err == nil {
			checkDecoded(t, b, fixed)
		} else if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("unclassified error: %v", err)
		}
	})
}

func FuzzParseObject(f *testing.F) {
	rng := rand.New(rand.NewPCG(21, 21))
	b := NewBuilder(NewEncoder())
	for _, n := range []int{0, 1, 3} {
		b.Reset()
		for range n {
			if _, err := b.Add(ChunkKey{TopicID: rng.Int64N(3), Partition: int32(rng.IntN(3))},
				smallRecords(rng, 1+rng.IntN(3)),
				BatchOptions{Compression: []Compression{CompressionNone, CompressionZstd}[rng.IntN(2)]}); err != nil {
				f.Fatal(err)
			}
		}
		obj, _, err := b.Finish()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte(nil), obj...))
	}
	f.Add([]byte("SILT\x01\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, obj []byte) {
		check := func(obj []byte) {
			refs, err := ParseObject(obj)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
					t.Fatalf("unclassified error: %v", err)
				}
				return
			}
			// The tail path agrees with the whole-object path.
			need, err := TailSize(obj)
			if err != nil {
				t.Fatalf("TailSize after ParseObject succeeded: %v", err)
			}
			tailRefs, err := ReadFooter(obj[len(obj)-need:], int64(len(obj)))
			if err != nil || len(tailRefs) != len(refs) {
				t.Fatalf("ReadFooter on tail: %v (%d vs %d refs)", err, len(tailRefs), len(refs))
			}
			var b Batch
			for i, r := range refs {
				if tailRefs[i] != r {
					t.Fatalf("ref %d differs between tail and whole object", i)
				}
				if err := b.Decode(r.Bytes(obj), fuzzDecodeOptions); err == nil {
					checkDecoded(t, &b, r.Bytes(obj))
				}
			}
		}
		check(obj)
		// With the footer CRC made valid, so mutations reach the index checks.
		fixed := append([]byte(nil), obj...)
		fixFooterCRC(fixed)
		check(fixed)
	})
}
