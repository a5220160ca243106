package client

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net/http"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy"
	"github.com/pierrec/lz4/v4"

	"silt/binformat"
	"silt/segment"
)

// kafkaBatch encodes recs as one RecordBatch compressed with codec c, as a
// Kafka client would send it, with base offset base written in.
func kafkaBatch(t testing.TB, recs []segment.Record, c segment.Compression, base int64) []byte {
	t.Helper()
	enc := segment.NewEncoder()
	opts := segment.BatchOptions{Compression: segment.CompressionNone, LastOffsetDelta: recs[len(recs)-1].OffsetDelta}
	if c == segment.CompressionZstd {
		opts.Compression = c
	}
	b, _, err := enc.AppendBatch(nil, recs, opts)
	if err != nil {
		t.Fatal(err)
	}
	if c != segment.CompressionNone && c != segment.CompressionZstd {
		section := b[segment.BatchHeaderSize:]
		var buf bytes.Buffer
		switch c {
		case segment.CompressionGzip:
			w := gzip.NewWriter(&buf)
			_, _ = w.Write(section)
			_ = w.Close()
		case segment.CompressionLZ4:
			w := lz4.NewWriter(&buf)
			_, _ = w.Write(section)
			_ = w.Close()
		case segment.CompressionSnappy:
			buf.Write(snappy.Encode(nil, section))
		}
		b = append(b[:segment.BatchHeaderSize:segment.BatchHeaderSize], buf.Bytes()...)
		attrs := binary.BigEndian.Uint16(b[21:])
		binary.BigEndian.PutUint16(b[21:], attrs&^uint16(segment.AttrCompressionMask)|uint16(c))
		binary.BigEndian.PutUint32(b[8:], uint32(len(b)-12))
		binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
	}
	segment.SetBaseOffset(b, base)
	if h, err := segment.VerifyBatch(b); err != nil || h.Compression() != c {
		t.Fatalf("built a %v batch: %v, %v", c, h.Compression(), err)
	}
	return b
}

// batchesBody frames batches as the agent sends them.
func batchesBody(h binformat.BatchesHeader, batches ...[]byte) []byte {
	h.Count = len(batches)
	b := binformat.AppendBatchesHeader(nil, &h)
	for _, batch := range batches {
		b = append(binformat.AppendBatchFrame(b, len(batch)), batch...)
	}
	return b
}

// sampleRecords are n records with offset deltas from 0, every field set
// one way or another.
func sampleRecords(n, first int) []segment.Record {
	recs := make([]segment.Record, n)
	for i := range recs {
		v := first + i
		recs[i] = segment.Record{OffsetDelta: int32(i), Timestamp: int64(1000 + v), Value: bytes.Repeat([]byte(fmt.Sprintf("value-%d ", v)), 20)}
		switch v % 3 {
		case 0:
			recs[i].Key = []byte(fmt.Sprintf("k%d", v))
			recs[i].Headers = []segment.Header{{Key: "h", Value: []byte{byte(v)}}, {Key: "null"}}
		case 1:
			recs[i].Key, recs[i].Value = []byte{}, nil
		}
	}
	return recs
}

var everyCodec = []segment.Compression{segment.CompressionNone, segment.CompressionGzip, segment.CompressionSnappy, segment.CompressionLZ4, segment.CompressionZstd}

// The batches form decodes with every codec: records before the offset
// read are left out, MaxRecords ends the page early, every field and the
// null/empty distinction survive.
func TestDecodeBatchesEveryCodec(t *testing.T) {
	for _, c := range everyCodec {
		body := batchesBody(binformat.BatchesHeader{Partition: 2, Offset: 12, NextOffset: 20, HighWatermark: 21, LogStartOffset: 3},
			kafkaBatch(t, sampleRecords(5, 10), c, 10), kafkaBatch(t, sampleRecords(5, 15), c, 15))
		for _, maxRecords := range []int{0, 4} {
			res, err := decodeBatchesFetch(body, 2, maxRecords)
			if err != nil {
				t.Fatalf("%v: %v", c, err)
			}
			want := 8
			next := int64(20)
			if maxRecords > 0 {
				want, next = maxRecords, 16
			}
			if len(res.Records) != want || res.NextOffset != next || res.HighWatermark != 21 || res.LogStartOffset != 3 {
				t.Fatalf("%v, max %d: %d records, %+v", c, maxRecords, len(res.Records), res)
			}
			all := append(sampleRecords(5, 10), sampleRecords(5, 15)...)
			for i, r := range res.Records {
				w := all[i+2]
				if r.Offset != int64(12+i) || r.Partition != 2 || r.Timestamp.UnixMilli() != w.Timestamp ||
					!sameNull(r.Key, w.Key) || !sameNull(r.Value, w.Value) || len(r.Headers) != len(w.Headers) {
					t.Fatalf("%v: record %d is %+v, want %+v", c, i, r, w)
				}
				for j, h := range r.Headers {
					if h.Key != w.Headers[j].Key || !sameNull(h.Value, w.Headers[j].Value) {
						t.Fatalf("%v: record %d header %d is %+v", c, i, j, h)
					}
				}
			}
		}
	}
}

func sameNull(a, b []byte) bool { return bytes.Equal(a, b) && (a == nil) == (b == nil) }

// A damaged or inconsistent response is an error, never records.
func TestDecodeBatchesRefusesBadResponses(t *testing.T) {
	good := kafkaBatch(t, sampleRecords(3, 0), segment.CompressionZstd, 0)
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 1
	h := binformat.BatchesHeader{NextOffset: 3, HighWatermark: 3}
	for name, body := range map[string][]byte{
		"bad framing":           batchesBody(h, good)[:40],
		"bad crc":               batchesBody(h, flipped),
		"not a batch":           batchesBody(h, []byte("hello")),
		"past the next offset":  batchesBody(binformat.BatchesHeader{NextOffset: 2}, good),
		"offsets going back":    batchesBody(binformat.BatchesHeader{NextOffset: 3}, good, good),
		"next before the start": batchesBody(binformat.BatchesHeader{Offset: 5, NextOffset: 3}),
	} {
		if res, err := decodeBatchesFetch(body, 0, 0); err == nil {
			t.Errorf("%s: decoded %+v", name, res)
		}
	}
}

// Fetch asks for batches by default, with the records form as a fallback,
// and reads whichever form the agent chose.
func TestFetchAsksForBatches(t *testing.T) {
	var accept string
	body := batchesBody(binformat.BatchesHeader{Offset: 1, NextOffset: 3, HighWatermark: 3}, kafkaBatch(t, sampleRecords(3, 0), segment.CompressionLZ4, 0))
	c := fakeClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		accept = r.Header.Get("Accept")
		w.Header().Set("Content-Type", binformat.BatchesMediaType)
		w.Write(body)
	}))
	res, err := c.Fetch(ctxFor(t), "t", 0, 1, FetchOptions{})
	if err != nil || len(res.Records) != 2 || res.Records[0].Offset != 1 || res.NextOffset != 3 {
		t.Fatalf("%+v, %v", res, err)
	}
	if accept != binformat.BatchesMediaType+", "+binformat.MediaType+";q=0.5" {
		t.Fatalf("Accept %q", accept)
	}
}

func FuzzDecodeBatchesFetch(f *testing.F) {
	for _, c := range everyCodec {
		f.Add(batchesBody(binformat.BatchesHeader{Offset: 1, NextOffset: 10, HighWatermark: 10}, kafkaBatch(f, sampleRecords(5, 0), c, 0), kafkaBatch(f, sampleRecords(5, 5), c, 5)), 0)
	}
	f.Add(batchesBody(binformat.BatchesHeader{}), 3)
	f.Fuzz(func(t *testing.T, body []byte, maxRecords int) {
		res, err := decodeBatchesFetch(body, 0, maxRecords)
		if err != nil {
			return
		}
		if maxRecords > 0 && len(res.Records) > maxRecords {
			t.Fatalf("%d records with max %d", len(res.Records), maxRecords)
		}
		for i, r := range res.Records {
			if r.Offset >= res.NextOffset || i > 0 && r.Offset <= res.Records[i-1].Offset {
				t.Fatalf("record %d at %d (next offset %d)", i, r.Offset, res.NextOffset)
			}
		}
	})
}
