package kafka_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"silt/client"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/segment"
)

// testRecords are records with every shape a record can take: keys (null,
// empty, bytes), values (null, empty, binary), headers (several, null
// value, empty value, repeated keys) and producer timestamps.
func testRecords(n int, prefix string) []*kgo.Record {
	base := time.UnixMilli(1_700_000_000_000)
	out := make([]*kgo.Record, n)
	for i := range out {
		r := &kgo.Record{Timestamp: base.Add(time.Duration(i) * time.Millisecond)}
		switch i % 5 {
		case 0:
			r.Key = []byte(fmt.Sprintf("%s-key-%d", prefix, i))
			r.Value = bytes.Repeat([]byte{byte(i), 0, 0xff}, 40+i)
		case 1:
			r.Key = []byte{}
			r.Value = []byte(fmt.Sprintf(`{"i":%d,"p":%q}`, i, prefix))
			r.Headers = []kgo.RecordHeader{{Key: "h1", Value: []byte("v1")}, {Key: "null", Value: nil}, {Key: "h1", Value: []byte{}}}
		case 2:
			r.Key = []byte(fmt.Sprintf("%s-key-%d", prefix, i))
			r.Value = nil // tombstone
		case 3:
			r.Value = []byte{}
			r.Headers = []kgo.RecordHeader{{Key: "trace", Value: []byte{0, 1, 2}}}
		case 4:
			r.Key = []byte{0, 0, 0}
			r.Value = bytes.Repeat([]byte("text "), 200)
		}
		out[i] = r
	}
	return out
}

// sameRecord compares what a Kafka client sees of two records, null and
// empty apart.
func sameRecord(want, got *kgo.Record) string {
	eq := func(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }
	switch {
	case !eq(want.Key, got.Key):
		return fmt.Sprintf("key %q (nil %v), got %q (nil %v)", want.Key, want.Key == nil, got.Key, got.Key == nil)
	case !eq(want.Value, got.Value):
		return fmt.Sprintf("value of %d bytes (nil %v), got %d (nil %v)", len(want.Value), want.Value == nil, len(got.Value), got.Value == nil)
	case !want.Timestamp.Equal(got.Timestamp):
		return fmt.Sprintf("timestamp %v, got %v", want.Timestamp, got.Timestamp)
	case len(want.Headers) != len(got.Headers):
		return fmt.Sprintf("%d headers, got %d", len(want.Headers), len(got.Headers))
	}
	for i := range want.Headers {
		if want.Headers[i].Key != got.Headers[i].Key || !eq(want.Headers[i].Value, got.Headers[i].Value) {
			return fmt.Sprintf("header %d %q=%q, got %q=%q", i, want.Headers[i].Key, want.Headers[i].Value, got.Headers[i].Key, got.Headers[i].Value)
		}
	}
	return ""
}

// consumeAll reads n records of topic from the start with a fresh
// client, in offset order per partition.
func consumeAll(t *testing.T, a *agenttest.Agent, topic string, n int, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	cl := newClient(t, a, append([]kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500 * time.Millisecond)}, opts...)...)
	ctx := ctxT(t, time.Minute)
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(out), n, err)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
		out = append(out, fs.Records()...)
	}
	if len(out) != n {
		t.Fatalf("consumed %d records, want %d", len(out), n)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Partition != out[j].Partition {
			return out[i].Partition < out[j].Partition
		}
		return out[i].Offset < out[j].Offset
	})
	return out
}

// httpRecords reads a partition over HTTP from offset 0.
func httpRecords(t *testing.T, a *agenttest.Agent, topic string, partition int32, n int) []client.Record {
	t.Helper()
	hc, err := client.New(a.URL)
	if err != nil {
		t.Fatal(err)
	}
	var out []client.Record
	off := int64(0)
	ctx := ctxT(t, 30*time.Second)
	for len(out) < n {
		res, err := hc.Fetch(ctx, topic, partition, off, client.FetchOptions{Wait: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, res.Records...)
		off = res.NextOffset
	}
	return out
}

func produceSync(t *testing.T, cl *kgo.Client, topic string, recs []*kgo.Record) {
	t.Helper()
	for _, r := range recs {
		r.Topic = topic
	}
	if err := cl.ProduceSync(ctxT(t, 30*time.Second), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// Every codec, stored as sent and re-encoded, reads back the same over
// Kafka and over HTTP.
func TestProduceFetchEveryCodec(t *testing.T) {
	for _, path := range []struct {
		name string
		min  int
	}{{"stored as sent", 0}, {"re-encoded", 1 << 30}} {
		t.Run(path.name, func(t *testing.T) {
			a := setup(t, func(c *agentd.Config) { c.Kafka.RawBatchMinBytes = path.min })
			adm := newAdmin(t, a)
			for _, codec := range []struct {
				name string
				c    kgo.CompressionCodec
			}{{"none", kgo.NoCompression()}, {"gzip", kgo.GzipCompression()}, {"snappy", kgo.SnappyCompression()},
				{"lz4", kgo.Lz4Compression()}, {"zstd", kgo.ZstdCompression()}} {
				topic := topicName(t)
				createTopic(t, adm, topic, 1, nil)
				p := newClient(t, a, kgo.ProducerBatchCompression(codec.c), kgo.ProducerLinger(50*time.Millisecond))
				want := testRecords(25, codec.name)
				produceSync(t, p, topic, want)
				got := consumeAll(t, a, topic, len(want))
				for i := range want {
					if got[i].Offset != int64(i) {
						t.Fatalf("%s: record %d at offset %d", codec.name, i, got[i].Offset)
					}
					if d := sameRecord(want[i], got[i]); d != "" {
						t.Fatalf("%s: record %d: %s", codec.name, i, d)
					}
				}
				// The same records over HTTP.
				hs := httpRecords(t, a, topic, 0, len(want))
				for i, h := range hs {
					hr := &kgo.Record{Key: h.Key, Value: h.Value, Timestamp: h.Timestamp}
					for _, hh := range h.Headers {
						hr.Headers = append(hr.Headers, kgo.RecordHeader{Key: hh.Key, Value: hh.Value})
					}
					if d := sameRecord(want[i], hr); d != "" {
						t.Fatalf("%s over HTTP: record %d: %s", codec.name, i, d)
					}
				}
			}
			stored := producedBatches(t, a)
			// Stored as sent: the compressed batches (four codecs, one
			// batch each at least); uncompressed ones are compressed.
			if path.min == 0 && (stored["raw"] < 4 || stored["reencoded"] < 1) {
				t.Fatalf("batches stored %v, want the compressed ones as sent", stored)
			}
			if path.min > 0 && (stored["reencoded"] == 0 || stored["raw"] != 0) {
				t.Fatalf("batches stored %v, want all re-encoded", stored)
			}
		})
	}
}

// waitGauge waits until a gauge of the agent reads want.
func waitGauge(t *testing.T, a *agenttest.Agent, name string, want float64) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for {
		mfs, err := a.Metrics().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name && len(mf.GetMetric()) == 1 && mf.GetMetric()[0].GetGauge().GetValue() == want {
				return
			}
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s never read %v", name, want)
		}
	}
}

// producedBatches reads silt_kafka_produced_batches_total by label.
func producedBatches(t *testing.T, a *agenttest.Agent) map[string]float64 {
	t.Helper()
	mfs, err := a.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "silt_kafka_produced_batches_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	return out
}

// One log, two doors: records produced over HTTP read back over Kafka
// byte for byte, and a key lands on the same partition either way.
func TestHTTPAndKafkaShareTheLog(t *testing.T) {
	a := setup(t, nil)
	topic := topicName(t)
	hc, err := client.New(a.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, time.Minute)
	if _, err := hc.CreateTopic(ctx, client.NewTopic{Name: topic, Partitions: 8}); err != nil {
		t.Fatal(err)
	}
	ts := time.UnixMilli(1_650_000_000_123)
	var msgs []client.Message
	for i := range 40 {
		m := client.Message{Key: []byte(fmt.Sprintf("user-%d", i)), Value: []byte(fmt.Sprintf("v%d", i)), Timestamp: ts.Add(time.Duration(i) * time.Second)}
		if i%3 == 0 {
			m.Headers = []client.Header{{Key: "a", Value: []byte("1")}, {Key: "n", Value: nil}}
		}
		if i%7 == 0 {
			m.Value = nil
		}
		msgs = append(msgs, m)
	}
	res, err := hc.ProduceBinary(ctx, topic, msgs)
	if err != nil {
		t.Fatal(err)
	}
	got := consumeAll(t, a, topic, len(msgs))
	byKey := map[string]*kgo.Record{}
	for _, r := range got {
		byKey[string(r.Key)] = r
	}
	for i, m := range msgs {
		r := byKey[string(m.Key)]
		if r == nil || r.Partition != res.Offsets[i].Partition || r.Offset != res.Offsets[i].Offset {
			t.Fatalf("record %d: HTTP put it at %+v, Kafka reads %+v", i, res.Offsets[i], r)
		}
		want := &kgo.Record{Key: m.Key, Value: m.Value, Timestamp: m.Timestamp}
		for _, h := range m.Headers {
			want.Headers = append(want.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		if d := sameRecord(want, r); d != "" {
			t.Fatalf("record %d: %s", i, d)
		}
	}
	// The other way: the same keys produced over Kafka (franz-go's
	// default partitioner is Kafka's murmur2) land where HTTP put them.
	p := newClient(t, a)
	var recs []*kgo.Record
	for _, m := range msgs {
		recs = append(recs, &kgo.Record{Key: m.Key, Value: []byte("again")})
	}
	produceSync(t, p, topic, recs)
	for i, r := range recs {
		if r.Partition != res.Offsets[i].Partition {
			t.Fatalf("key %q: Kafka partition %d, HTTP partition %d", r.Key, r.Partition, res.Offsets[i].Partition)
		}
	}
}

// franz-go's producer is idempotent by default: InitProducerId, then
// sequenced batches; every record lands once, in order.
func TestIdempotentProduceWithFranz(t *testing.T) {
	a := setup(t, nil)
	adm := newAdmin(t, a)
	topic := topicName(t)
	createTopic(t, adm, topic, 3, nil)
	p := newClient(t, a, kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5*time.Millisecond))
	const n = 600
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range n {
		wg.Add(1)
		p.Produce(context.Background(), &kgo.Record{Key: []byte(fmt.Sprint(i % 17)), Value: []byte(fmt.Sprint(i))}, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				firstErr = cmpErr(firstErr, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	got := consumeAll(t, a, topic, n)
	seen := map[string]bool{}
	last := map[string]int{} // per key, values must increase: one producer, in order
	for _, r := range got {
		if seen[string(r.Value)] {
			t.Fatalf("value %s twice", r.Value)
		}
		seen[string(r.Value)] = true
		var v int
		fmt.Sscan(string(r.Value), &v)
		if prev, ok := last[string(r.Key)]; ok && v < prev {
			t.Fatalf("key %s: %d after %d", r.Key, v, prev)
		}
		last[string(r.Key)] = v
	}
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// batch encodes records as a client would, for hand-made requests.
func batch(t *testing.T, n int, producerID int64, epoch int16, seq int32, keyed bool) []byte {
	t.Helper()
	recs := make([]segment.Record, n)
	for i := range recs {
		recs[i] = segment.Record{OffsetDelta: int32(i), Timestamp: 1_700_000_000_000 + int64(i), Value: []byte(fmt.Sprint("v", i))}
		if keyed {
			recs[i].Key = []byte(fmt.Sprint("k", i))
		}
	}
	opts := segment.BatchOptions{Compression: segment.CompressionNone}
	if producerID >= 0 {
		opts.Idempotent, opts.ProducerID, opts.ProducerEpoch, opts.BaseSequence = true, producerID, epoch, seq
	}
	b, _, err := segment.NewEncoder().AppendBatch(nil, recs, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func produceReq(topic string, partition int32, records []byte) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 10000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition, rp.Records = partition, records
	rt.Partitions = []kmsg.ProduceRequestTopicPartition{rp}
	req.Topics = []kmsg.ProduceRequestTopic{rt}
	return req
}

func producePart(t *testing.T, c *rawConn, req *kmsg.ProduceRequest, v int16) kmsg.ProduceResponseTopicPartition {
	t.Helper()
	resp := c.do(req, v).(*kmsg.ProduceResponse)
	return resp.Topics[0].Partitions[0]
}

// Sequence checks as Kafka makes them: a retried batch answers with its
// first offsets and no error, a gap is OUT_OF_ORDER_SEQUENCE_NUMBER, an
// epoch that is not the producer's is refused; a bumped epoch (KIP-360)
// starts its sequences over and fences the old one; an id never issued is
// UNKNOWN_PRODUCER_ID.
func TestIdempotentSequences(t *testing.T) {
	a := setup(t, nil)
	topic := topicName(t)
	createTopic(t, newAdmin(t, a), topic, 1, nil)
	c := dialRaw(t, a.KafkaAddr)
	ip := c.do(kmsg.NewPtrInitProducerIDRequest(), 4).(*kmsg.InitProducerIDResponse)
	if ip.ErrorCode != 0 || ip.ProducerID <= 0 || ip.ProducerEpoch != 0 {
		t.Fatalf("init producer id: %+v", ip)
	}
	pid := ip.ProducerID
	first := producePart(t, c, produceReq(topic, 0, batch(t, 3, pid, 0, 0, false)), 9)
	if first.ErrorCode != 0 || first.BaseOffset != 0 {
		t.Fatalf("first: %+v", first)
	}
	retry := producePart(t, c, produceReq(topic, 0, batch(t, 3, pid, 0, 0, false)), 9)
	if retry.ErrorCode != 0 || retry.BaseOffset != 0 {
		t.Fatalf("retry of the first batch: %+v", retry)
	}
	next := producePart(t, c, produceReq(topic, 0, batch(t, 2, pid, 0, 3, false)), 12)
	if next.ErrorCode != 0 || next.BaseOffset != 3 {
		t.Fatalf("next: %+v", next)
	}
	gap := producePart(t, c, produceReq(topic, 0, batch(t, 2, pid, 0, 9, false)), 12)
	if gap.ErrorCode != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("gap: %+v", gap)
	}
	epoch := producePart(t, c, produceReq(topic, 0, batch(t, 2, pid, 1, 5, false)), 12)
	if epoch.ErrorCode != kerr.InvalidProducerEpoch.Code {
		t.Fatalf("epoch 1 before a bump: %+v", epoch)
	}
	bump := kmsg.NewPtrInitProducerIDRequest()
	bump.ProducerID, bump.ProducerEpoch = pid, 0
	if r := c.do(bump, 4).(*kmsg.InitProducerIDResponse); r.ErrorCode != 0 || r.ProducerID != pid || r.ProducerEpoch != 1 {
		t.Fatalf("epoch bump: %+v", r)
	}
	if r := c.do(bump, 4).(*kmsg.InitProducerIDResponse); r.ErrorCode != kerr.InvalidProducerEpoch.Code {
		t.Fatalf("a second bump from the old epoch: %+v", r)
	}
	if p := producePart(t, c, produceReq(topic, 0, batch(t, 1, pid, 1, 0, false)), 12); p.ErrorCode != 0 || p.BaseOffset != 5 {
		t.Fatalf("epoch 1 from sequence 0: %+v", p)
	}
	if p := producePart(t, c, produceReq(topic, 0, batch(t, 1, pid, 0, 5, false)), 12); p.ErrorCode != kerr.InvalidProducerEpoch.Code {
		t.Fatalf("the fenced epoch 0: %+v", p)
	}
	if p := producePart(t, c, produceReq(topic, 0, batch(t, 1, 12345, 0, 0, false)), 12); p.ErrorCode != kerr.UnknownProducerID.Code {
		t.Fatalf("an id never issued: %+v", p)
	}
	txn := kmsg.NewPtrInitProducerIDRequest()
	txn.TransactionalID = ptr("tx")
	if r := c.do(txn, 4).(*kmsg.InitProducerIDResponse); r.ErrorCode == 0 {
		t.Fatalf("transactional id accepted: %+v", r)
	}
	ends, err := newAdmin(t, a).ListEndOffsets(ctxT(t, 10*time.Second), topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup(topic, 0); o.Offset != 6 {
		t.Fatalf("high watermark %d, want 6 (no duplicate written)", o.Offset)
	}
}

// Bad produce requests get Kafka's codes for their partitions, and the
// connection keeps serving.
func TestProduceErrors(t *testing.T) {
	a := setup(t, func(c *agentd.Config) { c.Kafka.MaxRecordBytes = 1000 })
	adm := newAdmin(t, a)
	topic, compacted := topicName(t), topicName(t)
	createTopic(t, adm, topic, 2, nil)
	createTopic(t, adm, compacted, 1, map[string]*string{"cleanup.policy": ptr("compact")})
	c := dialRaw(t, a.KafkaAddr)
	corrupt := batch(t, 2, -1, -1, -1, false)
	corrupt[len(corrupt)-1] ^= 0xff
	big := func() []byte {
		b, _, err := segment.NewEncoder().AppendBatch(nil, []segment.Record{{Value: make([]byte, 2000)}}, segment.BatchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}()
	txn := batch(t, 1, 7, 0, 0, false)
	txn[22] |= 0x10 // transactional attribute
	for name, tc := range map[string]struct {
		topic string
		part  int32
		recs  []byte
		code  int16
	}{
		"unknown topic":      {topic + "-no", 0, batch(t, 1, -1, -1, -1, false), kerr.UnknownTopicOrPartition.Code},
		"unknown partition":  {topic, 2, batch(t, 1, -1, -1, -1, false), kerr.UnknownTopicOrPartition.Code},
		"corrupt":            {topic, 0, corrupt, kerr.CorruptMessage.Code},
		"truncated":          {topic, 0, batch(t, 2, -1, -1, -1, false)[:70], kerr.CorruptMessage.Code},
		"too large":          {topic, 0, big, kerr.MessageTooLarge.Code},
		"compacted, no key":  {compacted, 0, batch(t, 1, -1, -1, -1, false), kerr.InvalidRecord.Code},
		"transactional":      {topic, 0, txn, kerr.InvalidRequest.Code},
		"unissued producer":  {topic, 0, batch(t, 1, 0, 0, 0, false), kerr.UnknownProducerID.Code},
		"empty":              {topic, 0, nil, kerr.InvalidRecord.Code},
		"compacted, keyed":   {compacted, 0, batch(t, 1, -1, -1, -1, true), 0},
		"partition 1, fine!": {topic, 1, batch(t, 1, -1, -1, -1, false), 0},
	} {
		got := producePart(t, c, produceReq(tc.topic, tc.part, tc.recs), 8)
		if got.ErrorCode != tc.code {
			t.Errorf("%s: code %d (%v), want %d", name, got.ErrorCode, got.ErrorMessage, tc.code)
		}
	}
	acks := produceReq(topic, 0, batch(t, 1, -1, -1, -1, false))
	acks.Acks = 2
	if got := producePart(t, c, acks, 8); got.ErrorCode != kerr.InvalidRequiredAcks.Code {
		t.Errorf("acks=2: code %d", got.ErrorCode)
	}
}

// acks=0: no answer, the records still commit, and a failed request
// closes the connection as Kafka does.
func TestAcksZero(t *testing.T) {
	a := setup(t, nil)
	topic := topicName(t)
	createTopic(t, newAdmin(t, a), topic, 1, nil)
	p := newClient(t, a, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite(), kgo.DefaultProduceTopic(topic))
	recs := testRecords(30, "acks0")
	produceSync(t, p, topic, recs)
	got := consumeAll(t, a, topic, len(recs))
	for i := range recs {
		if d := sameRecord(recs[i], got[i]); d != "" {
			t.Fatalf("record %d: %s", i, d)
		}
	}
	c := dialRaw(t, a.KafkaAddr)
	bad := produceReq(topic+"-no", 0, batch(t, 1, -1, -1, -1, false))
	bad.Acks = 0
	bad.SetVersion(9)
	c.send(bad)
	probe := kmsg.NewPtrApiVersionsRequest()
	corr := c.send(probe)
	if err := c.receive(corr, probe.ResponseKind()); err == nil {
		t.Fatal("the connection kept serving after a failed acks=0 request")
	}
}

// Fetch honours partition and response limits (the first batch is sent
// whole, however large) and reports offsets past the end.
func TestFetchLimitsAndOutOfRange(t *testing.T) {
	a := setup(t, nil)
	topic := topicName(t)
	createTopic(t, newAdmin(t, a), topic, 2, nil)
	c := dialRaw(t, a.KafkaAddr)
	for i := range 3 {
		if got := producePart(t, c, produceReq(topic, 0, batch(t, 10, -1, -1, -1, false)), 9); got.ErrorCode != 0 || got.BaseOffset != int64(10*i) {
			t.Fatalf("produce %d: %+v", i, got)
		}
	}
	if got := producePart(t, c, produceReq(topic, 1, batch(t, 10, -1, -1, -1, false)), 9); got.ErrorCode != 0 {
		t.Fatalf("produce to partition 1: %+v", got)
	}
	fetchReq := func(maxBytes, partMax int32, offsets ...int64) *kmsg.FetchRequest {
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 0, 1, maxBytes
		req.SessionEpoch = -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = topic
		for p, off := range offsets {
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = int32(p), off, partMax
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = []kmsg.FetchRequestTopic{rt}
		return req
	}
	batches := func(b []byte) []int64 { return baseOffsets(t, b) }
	for _, v := range []int16{4, 7, 11, 12} {
		all := c.do(fetchReq(1<<20, 1<<20, 0, 0), v).(*kmsg.FetchResponse)
		p0 := all.Topics[0].Partitions[0]
		if p0.ErrorCode != 0 || p0.HighWatermark != 30 || !slices.Equal(batches(p0.RecordBatches), []int64{0, 10, 20}) {
			t.Fatalf("v%d: all: %+v %v", v, p0, batches(p0.RecordBatches))
		}
		if v >= 7 && all.SessionID != 0 {
			t.Fatalf("v%d: session %d; sessions are not kept", v, all.SessionID)
		}
		one := c.do(fetchReq(1<<20, 1, 15, 0), v).(*kmsg.FetchResponse)
		if got := batches(one.Topics[0].Partitions[0].RecordBatches); !slices.Equal(got, []int64{10}) {
			t.Fatalf("v%d: partition max 1 from offset 15: batches %v, want the one holding 15", v, got)
		}
		if v >= 3 {
			tiny := c.do(fetchReq(1, 1<<20, 0, 0), v).(*kmsg.FetchResponse)
			if got := batches(tiny.Topics[0].Partitions[0].RecordBatches); !slices.Equal(got, []int64{0}) {
				t.Fatalf("v%d: response max 1: batches %v", v, got)
			}
			// The answer is full: partition 1 gets no records, but its offsets.
			if p1 := tiny.Topics[0].Partitions[1]; p1.ErrorCode != 0 || len(p1.RecordBatches) != 0 || p1.HighWatermark != 10 {
				t.Fatalf("v%d: response max 1, partition 1: %+v", v, p1)
			}
		}
		past := c.do(fetchReq(1<<20, 1<<20, 31, 0), v).(*kmsg.FetchResponse)
		if p := past.Topics[0].Partitions[0]; p.ErrorCode != kerr.OffsetOutOfRange.Code || p.HighWatermark != 30 {
			t.Fatalf("v%d: past the end: %+v", v, p)
		}
		end := c.do(fetchReq(1<<20, 1<<20, 30, 0), v).(*kmsg.FetchResponse)
		if p := end.Topics[0].Partitions[0]; p.ErrorCode != 0 || len(p.RecordBatches) != 0 {
			t.Fatalf("v%d: at the end: %+v", v, p)
		}
	}
	incremental := fetchReq(1<<20, 1<<20, 0)
	incremental.SessionID, incremental.SessionEpoch = 99, 1
	if r := c.do(incremental, 12).(*kmsg.FetchResponse); r.ErrorCode != kerr.FetchSessionIDNotFound.Code {
		t.Fatalf("incremental fetch: code %d", r.ErrorCode)
	}
}

// A fetch waits for a commit (NOTIFY) up to max_wait_ms, and for min_bytes.
func TestFetchLongPoll(t *testing.T) {
	a := setup(t, nil)
	topic := topicName(t)
	createTopic(t, newAdmin(t, a), topic, 1, nil)
	c := dialRaw(t, a.KafkaAddr)
	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis, req.MinBytes, req.MaxBytes, req.SessionEpoch = 4000, 1, 1<<20, -1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.PartitionMaxBytes = 1 << 20
	rt.Partitions = []kmsg.FetchRequestTopicPartition{rp}
	req.Topics = []kmsg.FetchRequestTopic{rt}
	req.SetVersion(11)
	corr := c.send(req)
	waitGauge(t, a, "silt_kafka_fetches_waiting", 1) // parked: the partition is empty
	p := newClient(t, a)
	produceSync(t, p, topic, []*kgo.Record{{Value: []byte("wake up")}})
	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(11)
	if err := c.receive(corr, resp); err != nil {
		t.Fatal(err)
	}
	if part := resp.Topics[0].Partitions[0]; part.ErrorCode != 0 || part.HighWatermark != 1 || len(part.RecordBatches) == 0 {
		t.Fatalf("long-poll answer: %+v", part)
	}

	// franz-go's consumer, parked in its fetch, sees a record produced
	// after it started.
	// At offset 1, not the end: a consumer that resolved the end after
	// the record below was committed would start past it.
	cons := newClient(t, a, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().At(1)), kgo.FetchMaxWait(3*time.Second))
	ctx := ctxT(t, 30*time.Second)
	got := make(chan []*kgo.Record, 1)
	go func() {
		for ctx.Err() == nil {
			if rs := cons.PollFetches(ctx).Records(); len(rs) > 0 {
				got <- rs
				return
			}
		}
	}()
	produceSync(t, p, topic, []*kgo.Record{{Value: []byte("second")}})
	select {
	case rs := <-got:
		if string(rs[0].Value) != "second" || rs[0].Offset != 1 {
			t.Fatalf("consumer got %q at %d", rs[0].Value, rs[0].Offset)
		}
	case <-ctx.Done():
		t.Fatal("the consumer never saw the record")
	}
}

// ListOffsets: start, end and by timestamp.
func TestListOffsets(t *testing.T) {
	a := setup(t, nil)
	adm := newAdmin(t, a)
	topic := topicName(t)
	createTopic(t, adm, topic, 1, nil)
	recs := testRecords(20, "lo") // timestamps base+0ms .. base+19ms
	produceSync(t, newClient(t, a), topic, recs)
	ctx := ctxT(t, 30*time.Second)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	s0, _ := starts.Lookup(topic, 0)
	e0, _ := ends.Lookup(topic, 0)
	if s0.Offset != 0 || e0.Offset != 20 {
		t.Fatalf("start %+v end %+v", s0, e0)
	}
	at, err := adm.ListOffsetsAfterMilli(ctx, recs[7].Timestamp.UnixMilli(), topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := at.Lookup(topic, 0); o.Err != nil || o.Offset != 7 || o.Timestamp != recs[7].Timestamp.UnixMilli() {
		t.Fatalf("after %d: %+v", recs[7].Timestamp.UnixMilli(), o)
	}
	later, err := adm.ListOffsetsAfterMilli(ctx, recs[19].Timestamp.UnixMilli()+1, topic)
	if err != nil {
		t.Fatal(err)
	}
	// No record that late: franz-go reports the end, as Kafka's -1 means.
	if o, _ := later.Lookup(topic, 0); o.Err != nil || (o.Offset != -1 && o.Offset != 20) {
		t.Fatalf("after the last: %+v", o)
	}
}

// A request larger than the bound closes the connection.
func TestRequestSizeBound(t *testing.T) {
	a := setup(t, func(c *agentd.Config) { c.Kafka.MaxRequestBytes = 4096 })
	topic := topicName(t)
	createTopic(t, newAdmin(t, a), topic, 1, nil)
	c := dialRaw(t, a.KafkaAddr)
	big, _, err := segment.NewEncoder().AppendBatch(nil, []segment.Record{{Value: make([]byte, 8000)}}, segment.BatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	req := produceReq(topic, 0, big)
	req.SetVersion(9)
	// The agent closes the connection once it reads the size: a write may
	// already fail, which is the answer too.
	if _, err := c.trySend(req); err != nil {
		return
	}
	probe := kmsg.NewPtrApiVersionsRequest()
	corr, err := c.trySend(probe)
	if err != nil {
		return
	}
	if err := c.receive(corr, probe.ResponseKind()); err == nil {
		t.Fatal("an oversized request did not close the connection")
	}
}

// Stopping the agent answers a parked fetch rather than cutting it off.
func TestShutdownAnswersParkedFetch(t *testing.T) {
	a := setup(t, func(c *agentd.Config) { c.Kafka.MaxWait = time.Minute })
	topic := topicName(t)
	createTopic(t, newAdmin(t, a), topic, 1, nil)
	c := dialRaw(t, a.KafkaAddr)
	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis, req.MinBytes, req.MaxBytes, req.SessionEpoch = 60000, 1, 1<<20, -1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.PartitionMaxBytes = 1 << 20
	rt.Partitions = []kmsg.FetchRequestTopicPartition{rp}
	req.Topics = []kmsg.FetchRequestTopic{rt}
	req.SetVersion(12)
	corr := c.send(req)
	waitGauge(t, a, "silt_kafka_fetches_waiting", 1)
	stopped := make(chan struct{})
	go func() { a.Stop(t); close(stopped) }()
	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(12)
	if err := c.receive(corr, resp); err != nil {
		t.Fatalf("parked fetch at shutdown: %v", err)
	}
	if p := resp.Topics[0].Partitions[0]; p.ErrorCode != 0 || len(p.RecordBatches) != 0 {
		t.Fatalf("parked fetch answer: %+v", p)
	}
	<-stopped
}

// Clients fetching with a version before 10 predate zstd: Silt's zstd
// batches reach them re-encoded uncompressed, with the same records and
// offsets; newer versions get the stored bytes.
func TestFetchDownConvertsZstdForOldVersions(t *testing.T) {
	a := setup(t, nil)
	topic := topicName(t)
	hc, err := client.New(a.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 30*time.Second)
	if _, err := hc.CreateTopic(ctx, client.NewTopic{Name: topic}); err != nil {
		t.Fatal(err)
	}
	var msgs []client.Message
	for i := range 20 {
		msgs = append(msgs, client.Message{Key: []byte(fmt.Sprint("k", i)), Value: bytes.Repeat([]byte("zstd "), 50), Timestamp: time.UnixMilli(int64(1000 + i))})
	}
	for range 2 { // two chunks
		if _, err := hc.ProduceBinary(ctx, topic, msgs); err != nil {
			t.Fatal(err)
		}
	}
	c := dialRaw(t, a.KafkaAddr)
	for _, v := range []int16{4, 9, 10, 12} {
		req := kmsg.NewPtrFetchRequest()
		req.MaxBytes, req.MinBytes, req.SessionEpoch = 1<<20, 1, -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.PartitionMaxBytes = 1 << 20
		rt.Partitions = []kmsg.FetchRequestTopicPartition{rp}
		req.Topics = []kmsg.FetchRequestTopic{rt}
		data := c.do(req, v).(*kmsg.FetchResponse).Topics[0].Partitions[0].RecordBatches
		var bases []int64
		var n int
		for len(data) > 0 {
			h, err := segment.ParseBatchHeader(data)
			if err != nil {
				t.Fatal(err)
			}
			b, err := segment.DecodeBatch(data[:h.Size()], segment.DecodeOptions{})
			if err != nil {
				t.Fatalf("v%d: %v", v, err)
			}
			if want := segment.CompressionZstd; (v >= 10) != (h.Compression() == want) {
				t.Fatalf("v%d: batch at %d compressed %v", v, h.BaseOffset, h.Compression())
			}
			for i, r := range b.Records {
				if string(r.Key) != fmt.Sprint("k", i) || r.Timestamp != int64(1000+i) {
					t.Fatalf("v%d: record %d: %q at %d", v, i, r.Key, r.Timestamp)
				}
			}
			bases = append(bases, h.BaseOffset)
			n += len(b.Records)
			data = data[h.Size():]
		}
		if !slices.Equal(bases, []int64{0, 20}) || n != 40 {
			t.Fatalf("v%d: batches at %v, %d records", v, bases, n)
		}
	}
}
