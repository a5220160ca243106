package kafka_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/segment"
)

// setupMinIO starts an agent with the Kafka listener on, storing its
// segments in a fresh bucket of the test MinIO.
func setupMinIO(t *testing.T, configure func(*agentd.Config)) *agenttest.Agent {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Postgres and MinIO (make test)")
	}
	return agenttest.Start(t, agenttest.Options{Kafka: true, Bucket: agenttest.MinIOBucket(t), Configure: configure})
}

// fetchOne is a Fetch of one partition from offset.
func fetchOne(topic string, partition int32, offset int64, maxWaitMs, minBytes, maxBytes int32) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis, req.MinBytes, req.MaxBytes, req.SessionEpoch = maxWaitMs, minBytes, maxBytes, -1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = partition, offset, maxBytes
	rt.Partitions = []kmsg.FetchRequestTopicPartition{rp}
	req.Topics = []kmsg.FetchRequestTopic{rt}
	return req
}

// receiveFetch reads the answer to a fetch sent at version v.
func receiveFetch(t *testing.T, c *rawConn, corr int32, v int16) kmsg.FetchResponseTopicPartition {
	t.Helper()
	resp := kmsg.NewPtrFetchResponse()
	resp.SetVersion(v)
	if err := c.receive(corr, resp); err != nil {
		t.Fatalf("fetch answer: %v", err)
	}
	return resp.Topics[0].Partitions[0]
}

// baseOffsets lists the base offsets of the batches in b, checking each.
func baseOffsets(t *testing.T, b []byte) []int64 {
	t.Helper()
	var bases []int64
	for len(b) > 0 {
		h, err := segment.ParseBatchHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := segment.VerifyBatch(b[:h.Size()]); err != nil {
			t.Fatalf("batch at %d: %v", h.BaseOffset, err)
		}
		bases = append(bases, h.BaseOffset)
		b = b[h.Size():]
	}
	return bases
}

// part describes a fetch answer's partition, without its bytes.
func part(t *testing.T, p kmsg.FetchResponseTopicPartition) string {
	t.Helper()
	return fmt.Sprintf("error %d, high watermark %d, log start %d, batches at %v",
		p.ErrorCode, p.HighWatermark, p.LogStartOffset, baseOffsets(t, p.RecordBatches))
}

// valueBatch is one uncompressed batch of one record of size random
// bytes (which compression, when stored, leaves about as large).
func valueBatch(t *testing.T, size int) []byte {
	t.Helper()
	v := make([]byte, size)
	_, _ = rand.Read(v)
	b, _, err := segment.NewEncoder().AppendBatch(nil, []segment.Record{{Timestamp: time.Now().UnixMilli(), Value: v}},
		segment.BatchOptions{Compression: segment.CompressionNone})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// --kafka-max-inflight-bytes: a fetch parked for min_bytes holds the
// whole bound (its answer's reservation), so a produce sent meanwhile on
// another connection is not read: it waits, and commits only once the
// fetch has answered. The fetch's answer, made when its max_wait ran
// out, shows that the produce had not committed by then (were the bound
// ignored, the produce would have woken the fetch with its record). The
// produce is then answered, and its record is in the log.
func TestInflightBoundHoldsRequests(t *testing.T) {
	const bound = 1 << 20
	a := setupMinIO(t, func(c *agentd.Config) {
		c.Kafka.MaxInflightBytes, c.Kafka.MaxRequestBytes, c.Kafka.MaxFetchBytes = bound, 256<<10, bound
	})
	topic := topicName(t)
	createTopic(t, newAdmin(t, a), topic, 1, nil)

	fetcher := dialRaw(t, a.KafkaAddr)
	req := fetchOne(topic, 0, 0, 3000, 1, bound)
	req.SetVersion(12)
	fcorr := fetcher.send(req)
	waitGauge(t, a, "silt_kafka_fetches_waiting", 1)
	waitGauge(t, a, "silt_kafka_inflight_bytes", bound) // the whole bound, reserved for the answer

	producer := dialRaw(t, a.KafkaAddr)
	preq := produceReq(topic, 0, valueBatch(t, 100<<10))
	preq.SetVersion(9)
	pcorr := producer.send(preq)

	got := receiveFetch(t, fetcher, fcorr, 12)
	if got.ErrorCode != 0 || got.HighWatermark != 0 || len(got.RecordBatches) != 0 {
		t.Fatalf("the parked fetch answered %s: the produce committed while the fetch held the in-flight bound", part(t, got))
	}
	presp := kmsg.NewPtrProduceResponse()
	presp.SetVersion(9)
	if err := producer.receive(pcorr, presp); err != nil {
		t.Fatalf("the waiting produce: %v", err)
	}
	if p := presp.Topics[0].Partitions[0]; p.ErrorCode != 0 || p.BaseOffset != 0 {
		t.Fatalf("the waiting produce answered %+v", p)
	}
	after := fetcher.do(fetchOne(topic, 0, 0, 0, 1, bound), 12).(*kmsg.FetchResponse).Topics[0].Partitions[0]
	if after.ErrorCode != 0 || after.HighWatermark != 1 || !slices.Equal(baseOffsets(t, after.RecordBatches), []int64{0}) {
		t.Fatalf("after the wait: %s", part(t, after))
	}
	waitGauge(t, a, "silt_kafka_inflight_bytes", 0)
}

// Many producers sending more than the in-flight bound at once: the
// listener reads what fits and holds the rest back, every record is
// acknowledged and read back, and the bytes held never exceed the bound.
func TestInflightBoundUnderConcurrentProduce(t *testing.T) {
	const bound = 1 << 20
	a := setupMinIO(t, func(c *agentd.Config) {
		c.Kafka.MaxInflightBytes, c.Kafka.MaxRequestBytes, c.Kafka.MaxFetchBytes = bound, 512<<10, bound
	})
	topic := topicName(t)
	createTopic(t, newAdmin(t, a), topic, 4, nil)

	// A sampler of the gauge, while the producers run.
	ctx, stop := context.WithCancel(context.Background())
	var peak float64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			if v := gaugeValue(t, a, "silt_kafka_inflight_bytes"); v > peak {
				peak = v
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	const producers, perProducer = 6, 8
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for i := range producers {
		cl := newClient(t, a, kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.ProducerBatchMaxBytes(200<<10),
			kgo.BrokerMaxWriteBytes(500<<10),
			kgo.MaxBufferedBytes(4<<20))
		wg.Go(func() {
			var recs []*kgo.Record
			for j := range perProducer {
				v := make([]byte, 150<<10)
				copy(v, fmt.Sprintf("p%d-%d", i, j))
				recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(j % 4), Value: v})
			}
			if err := cl.ProduceSync(ctxT(t, time.Minute), recs...).FirstErr(); err != nil {
				errs <- fmt.Errorf("producer %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	stop()
	<-sampled
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if peak > bound {
		t.Fatalf("in-flight bytes reached %v, past the bound of %d", peak, bound)
	}
	seen := map[string]bool{}
	for _, r := range consumeAll(t, a, topic, producers*perProducer, kgo.FetchMaxBytes(bound), kgo.FetchMaxPartitionBytes(bound)) {
		seen[string(r.Value[:clen(r.Value)])] = true
	}
	for i := range producers {
		for j := range perProducer {
			if k := fmt.Sprintf("p%d-%d", i, j); !seen[k] {
				t.Fatalf("record %s was acknowledged and is not in the log", k)
			}
		}
	}
	waitGauge(t, a, "silt_kafka_inflight_bytes", 0)
}

// clen is the length of the text at the start of a zero-padded value.
func clen(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}

// gaugeValue reads a gauge of the agent (-1 when absent).
func gaugeValue(t *testing.T, a *agenttest.Agent, name string) float64 {
	mfs, err := a.Metrics().Gather()
	if err != nil {
		t.Error(err)
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// A fetch with min_bytes above what the partition holds waits, though
// records are there, through commits that still leave it short, and is
// answered as soon as a commit from another producer brings it to
// min_bytes, with every batch from its offset on.
func TestFetchWaitsForMinBytes(t *testing.T) {
	a := setupMinIO(t, func(c *agentd.Config) { c.Kafka.MaxWait = time.Minute })
	topic := topicName(t)
	createTopic(t, newAdmin(t, a), topic, 1, nil)
	producer := dialRaw(t, a.KafkaAddr)
	produce := func(size int, want int64) {
		t.Helper()
		if p := producePart(t, producer, produceReq(topic, 0, valueBatch(t, size)), 9); p.ErrorCode != 0 || p.BaseOffset != want {
			t.Fatalf("produce at %d: %+v", want, p)
		}
	}
	produce(100, 0)

	fetcher := dialRaw(t, a.KafkaAddr)
	req := fetchOne(topic, 0, 0, 60000, 20_000, 1<<20)
	req.SetVersion(12)
	corr := fetcher.send(req)
	waitGauge(t, a, "silt_kafka_fetches_waiting", 1) // parked with a batch there: short of min_bytes
	produce(100, 1)
	// Still short: the fetch wakes, reads, and parks again. Whatever the
	// moment it is answered, it may hold only all three batches.
	produce(30_000, 2)
	got := receiveFetch(t, fetcher, corr, 12)
	if got.ErrorCode != 0 || got.HighWatermark != 3 || !slices.Equal(baseOffsets(t, got.RecordBatches), []int64{0, 1, 2}) {
		t.Fatalf("fetch with min_bytes: %s; want all three batches", part(t, got))
	}

	// max_wait runs out first: the answer holds what there is.
	req = fetchOne(topic, 0, 0, 200, 1<<20, 1<<20)
	got = fetcher.do(req, 12).(*kmsg.FetchResponse).Topics[0].Partitions[0]
	if got.ErrorCode != 0 || !slices.Equal(baseOffsets(t, got.RecordBatches), []int64{0, 1, 2}) {
		t.Fatalf("fetch past max_wait: %s", part(t, got))
	}

	// franz-go's consumer with FetchMinBytes gets the records too.
	cons := newClient(t, a, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMinBytes(1<<20), kgo.FetchMaxWait(300*time.Millisecond))
	ctx := ctxT(t, 30*time.Second)
	var n int
	for n < 3 {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumer with min bytes got %d of 3 records", n)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
		n += len(fs.Records())
	}
}

// A fetch below the log start (after retention dropped a prefix) is
// answered OFFSET_OUT_OF_RANGE with the log start offset, and a franz-go
// consumer at that offset resets to the earliest and reads on from the
// log start.
func TestFetchBelowLogStart(t *testing.T) {
	a := setupMinIO(t, func(c *agentd.Config) { c.Ownership.Janitor.RetentionInterval = 100 * time.Millisecond })
	topic := topicName(t)
	// Each batch is a chunk of its own (one produce per flush); keeping
	// 5 KB drops the oldest ones.
	createTopic(t, newAdmin(t, a), topic, 1, map[string]*string{"retention.bytes": ptr("5000")})
	producer := dialRaw(t, a.KafkaAddr)
	for i := range 10 {
		if p := producePart(t, producer, produceReq(topic, 0, valueBatch(t, 2000)), 9); p.ErrorCode != 0 || p.BaseOffset != int64(i) {
			t.Fatalf("produce %d: %+v", i, p)
		}
	}
	adm := newAdmin(t, a)
	var start int64
	waitFor(t, "retention to drop a prefix", 30*time.Second, func() bool {
		starts, err := adm.ListStartOffsets(ctxT(t, 10*time.Second), topic)
		if err != nil {
			t.Fatal(err)
		}
		o, _ := starts.Lookup(topic, 0)
		start = o.Offset
		return o.Err == nil && start > 0
	})
	if start >= 10 {
		t.Fatalf("retention dropped everything (log start %d) under retention.bytes 5000", start)
	}

	c := dialRaw(t, a.KafkaAddr)
	for _, v := range []int16{4, 11, 12} {
		got := c.do(fetchOne(topic, 0, 0, 0, 1, 1<<20), v).(*kmsg.FetchResponse).Topics[0].Partitions[0]
		if got.ErrorCode != kerr.OffsetOutOfRange.Code || got.HighWatermark != 10 || len(got.RecordBatches) != 0 ||
			(v >= 5 && got.LogStartOffset < start) {
			t.Fatalf("v%d: fetch below the log start %d: %s", v, start, part(t, got))
		}
	}

	cons := newClient(t, a, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(0)}}),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(300*time.Millisecond))
	ctx := ctxT(t, 30*time.Second)
	var offsets []int64
	for len(offsets) == 0 || offsets[len(offsets)-1] < 9 {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumer read %v", offsets)
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
		for _, r := range fs.Records() {
			offsets = append(offsets, r.Offset)
		}
	}
	// It resumed at the log start as it was when it reset (retention may
	// have moved it on since our look), and read on without gaps.
	if offsets[0] < start || offsets[0] >= 10 {
		t.Fatalf("the consumer resumed at %d; the log starts at %d", offsets[0], start)
	}
	for i := 1; i < len(offsets); i++ {
		if offsets[i] != offsets[i-1]+1 {
			t.Fatalf("offsets read: %v", offsets)
		}
	}
}
