package segment

import (
	"math/rand/v2"
	"testing"
)

// RecordSize bounds a record's encoded size in a batch from above, and by
// no more than the widest deltas and length prefix (21 bytes) minus the
// narrowest (3).
func TestRecordSizeBoundsTheEncodedRecord(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	bytesOf := func(n int) []byte {
		if n < 0 {
			return nil
		}
		return make([]byte, n)
	}
	enc := NewEncoder()
	for i := range 2000 {
		r := Record{
			OffsetDelta: 1 + int32(rng.IntN(1<<20)),
			Timestamp:   rng.Int64N(1 << 45),
			Key:         bytesOf(rng.IntN(300) - 1),
			Value:       bytesOf(rng.IntN(70000) - 1),
		}
		for range rng.IntN(200) {
			r.Headers = append(r.Headers, Header{Key: string(make([]byte, rng.IntN(200))), Value: bytesOf(rng.IntN(200) - 1)})
		}
		base := r.Timestamp - rng.Int64N(1<<40)
		first := Record{Timestamp: base}
		b, _, err := enc.AppendBatch(nil, []Record{first, r}, BatchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b1, _, err := enc.AppendBatch(nil, []Record{first}, BatchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		encoded := int64(len(b) - len(b1))
		if got := RecordSize(&r); got < encoded || got > encoded+18 {
			t.Fatalf("record %d: RecordSize %d, encoded %d", i, got, encoded)
		}
		if RecordMemory(&r) < RecordSize(&r)+int64(len(r.Headers))*40 {
			t.Fatalf("record %d: RecordMemory %d does not charge its headers", i, RecordMemory(&r))
		}
	}
	empty := Record{Headers: make([]Header, 1000)}
	if got := RecordSize(&empty); got != 21+1+1+2+2000 {
		t.Fatalf("1000 empty headers: RecordSize %d", got)
	}
}
