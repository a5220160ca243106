package kafka

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"

	"silt/metadata"
	"silt/segment"
)

// Fuzz targets for what a Kafka client sends: request frames (header and
// body, every API and version) and the record batches of a Produce. Their
// seed corpora run with every go test; make fuzz runs each for FUZZTIME.

// FuzzDecodeRequest: any frame is decoded into a request or refused with
// an error (the connection is then closed); it never panics, and a
// request it serves is one of the listener's.
func FuzzDecodeRequest(f *testing.F) {
	frame := func(r kmsg.Request, version int16) []byte {
		r.SetVersion(version)
		var b []byte
		b = binary.BigEndian.AppendUint16(b, uint16(r.Key()))
		b = binary.BigEndian.AppendUint16(b, uint16(version))
		b = binary.BigEndian.AppendUint32(b, 7)
		b = binary.BigEndian.AppendUint16(b, 4)
		b = append(b, "fuzz"...)
		if r.IsFlexible() {
			b = append(b, 0) // no header tags
		}
		return r.AppendTo(b)
	}
	produce := kmsg.NewPtrProduceRequest()
	pt := kmsg.NewProduceRequestTopic()
	pt.Topic = "t"
	pp := kmsg.NewProduceRequestTopicPartition()
	pp.Records = seedBatch(f)
	pt.Partitions = append(pt.Partitions, pp)
	produce.Topics = append(produce.Topics, pt)
	fetch := kmsg.NewPtrFetchRequest()
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = "t"
	ft.Partitions = append(ft.Partitions, kmsg.NewFetchRequestTopicPartition())
	fetch.Topics = append(fetch.Topics, ft)
	for _, s := range []struct {
		r kmsg.Request
		v int16
	}{
		{kmsg.NewPtrApiVersionsRequest(), 3}, {kmsg.NewPtrMetadataRequest(), 12}, {produce, 9}, {produce, 3},
		{fetch, 12}, {fetch, 4}, {kmsg.NewPtrListOffsetsRequest(), 7}, {kmsg.NewPtrJoinGroupRequest(), 9},
		{kmsg.NewPtrSASLAuthenticateRequest(), 2}, {kmsg.NewPtrCreateTopicsRequest(), 7},
	} {
		f.Add(frame(s.r, s.v))
	}
	f.Add([]byte{0, 18, 0, 99, 0, 0, 0, 1, 255, 255}) // ApiVersions of a future version
	f.Add([]byte{0, 0})
	c := &conn{}
	f.Fuzz(func(t *testing.T, body []byte) {
		cl, err := c.decode(body)
		if err != nil {
			return
		}
		if cl.served && (cl.req == nil || cl.req.Key() != cl.key || cl.req.GetVersion() != cl.version) {
			t.Fatalf("served call %d v%d with request %T", cl.key, cl.version, cl.req)
		}
	})
}

// FuzzProduceBatches: the record batches of a Produce partition are
// stored as sent, re-encoded or refused with a Kafka error code; never a
// panic, and a batch kept holds what its header says.
func FuzzProduceBatches(f *testing.F) {
	b := seedBatch(f)
	f.Add(b)
	f.Add(append(append([]byte(nil), b...), b...))
	f.Add(b[:len(b)/2])
	f.Add([]byte{})
	m, err := newMetrics(prometheus.NewRegistry(), &Server{})
	if err != nil {
		f.Fatal(err)
	}
	s := &Server{cfg: DefaultConfig(), metrics: m}
	topic := metadata.Topic{ID: 1, Name: "t", Partitions: 1, Config: metadata.DefaultTopicConfig()}
	f.Fuzz(func(t *testing.T, records []byte) {
		parts, perr := s.produceParts(topic, 0, records)
		if perr != nil {
			if perr.code == 0 {
				t.Fatalf("refused without an error code: %v", perr)
			}
			return
		}
		if len(parts) == 0 {
			t.Fatal("accepted no batch without an error")
		}
		for _, p := range parts {
			if p.Batch != nil {
				if _, err := segment.ParseBatchHeader(p.Batch); err != nil {
					t.Fatalf("stored a batch whose header does not parse: %v", err)
				}
			}
		}
	})
}

// seedBatch is one valid RecordBatch v2 of two records.
func seedBatch(tb testing.TB) []byte {
	tb.Helper()
	now := time.Now().UnixMilli()
	b, _, err := segment.NewEncoder().AppendBatch(nil, []segment.Record{
		{OffsetDelta: 0, Timestamp: now, Key: []byte("k"), Value: []byte("v"), Headers: []segment.Header{{Key: "h", Value: []byte("x")}}},
		{OffsetDelta: 1, Timestamp: now, Value: []byte("w")},
	}, segment.BatchOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
