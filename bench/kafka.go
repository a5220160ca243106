package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"silt/auth"
)

// The Kafka protocol runs the same workload through franz-go's kgo: each
// producer is a client of its own (its own connection), keeping up to
// Batch x Inflight records buffered and letting kgo batch them per
// partition; consumers are clients that each read a share of the
// partitions.

func kgoCodec(name string) kgo.CompressionCodec {
	switch name {
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	}
	return kgo.NoCompression()
}

func (r *siltRun) kafkaClient(t *Target, opts ...kgo.Opt) (*kgo.Client, error) {
	if t.KafkaAddr == "" {
		return nil, errors.New("the agent's Kafka address is unknown (give --kafka-addr with --url)")
	}
	base := []kgo.Opt{kgo.SeedBrokers(t.KafkaAddr), kgo.RetryTimeout(time.Minute), kgo.ClientID("silt-bench")}
	if t.Token != "" {
		// SASL PLAIN: the key's id and the key.
		id, _ := auth.ParseToken(t.Token)
		base = append(base, kgo.SASL(plain.Auth{User: id, Pass: t.Token}.AsMechanism()))
	}
	if t.TLS != nil {
		base = append(base, kgo.DialTLSConfig(t.TLS.Clone()))
	}
	return kgo.NewClient(append(base, opts...)...)
}

// kafkaProduce runs the producers over Kafka; latency is per record, from
// its scheduled send time to its acknowledgement.
func (r *siltRun) kafkaProduce(ctx context.Context) []*producerStats {
	o := r.o
	inflight := o.effectiveInflight()
	var interval time.Duration // between one producer's batches
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(o.Batch) * float64(o.Producers) / o.Rate)
	}
	var all []*producerStats
	var wg sync.WaitGroup
	var rr atomic.Int64
	for range o.Producers {
		s := &producerStats{hist: NewHistogram()}
		all = append(all, s)
		opts := []kgo.Opt{
			kgo.ProducerBatchCompression(kgoCodec(o.kafkaCodec())),
			kgo.MaxBufferedRecords(o.Batch * inflight),
			kgo.ProducerBatchMaxBytes(4 << 20),
			kgo.RecordRetries(20),
		}
		if !o.Idempotent {
			opts = append(opts, kgo.DisableIdempotentWrite(), kgo.MaxProduceRequestsInflightPerBroker(inflight))
		}
		cl, err := r.kafkaClient(r.t, opts...)
		if err != nil {
			s.errors, s.firstErr = 1, err
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			r.kafkaProduceLoop(ctx, cl, &rr, interval, s)
		}()
	}
	wg.Wait()
	return all
}

func (r *siltRun) kafkaProduceLoop(ctx context.Context, cl *kgo.Client, rr *atomic.Int64, interval time.Duration, s *producerStats) {
	o := r.o
	g := newGenerator(o)
	var mu sync.Mutex // s, from kgo's callbacks
	var pending sync.WaitGroup
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	next := r.win.start
	for ctx.Err() == nil {
		sched := time.Now()
		if interval > 0 {
			sched = next
			next = next.Add(interval)
			if d := time.Until(sched); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-ctx.Done():
				}
			}
		}
		if !sched.Before(r.win.end) || !time.Now().Before(r.win.end) {
			break
		}
		topic := r.topics[int(rr.Add(1))%len(r.topics)]
		g.arena = nil // kgo holds the records until they are acknowledged
		g.reset(o.Batch)
		measured := r.win.measured(sched)
		for range o.Batch {
			rec := &kgo.Record{Topic: topic, Key: g.key(), Value: g.value(sched)}
			size := int64(len(rec.Key) + len(rec.Value))
			pending.Add(1)
			cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
				defer pending.Done()
				done := time.Now()
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					if ctx.Err() == nil {
						r.live.errors.Add(1)
						s.errors++
						if s.firstErr == nil {
							s.firstErr = err
						}
					}
					return
				}
				r.live.acked.Add(1)
				r.live.ackedBytes.Add(size)
				if measured {
					s.hist.Record(done.Sub(sched))
					s.records++
					s.bytes += size
				}
			})
		}
		if measured {
			mu.Lock()
			s.requests++ // batches handed to the client, for comparison with HTTP requests
			mu.Unlock()
		}
	}
	if err := cl.Flush(context.WithoutCancel(ctx)); err != nil && ctx.Err() == nil {
		mu.Lock()
		s.errors++
		s.firstErr = cmpErr(s.firstErr, err)
		mu.Unlock()
	}
	pending.Wait()
}

// kafkaShares splits the partitions among n consumers: consumer i gets
// partitions i, i+n, ...
func (r *siltRun) kafkaShares(n int, at func(partitionRef) kgo.Offset) []map[string]map[int32]kgo.Offset {
	parts := r.partitions()
	shares := make([]map[string]map[int32]kgo.Offset, min(n, len(parts)))
	for i, p := range parts {
		sh := &shares[i%len(shares)]
		if *sh == nil {
			*sh = map[string]map[int32]kgo.Offset{}
		}
		if (*sh)[p.topic] == nil {
			(*sh)[p.topic] = map[int32]kgo.Offset{}
		}
		(*sh)[p.topic][p.partition] = at(p)
	}
	return shares
}

// endOffsets returns every partition's high watermark.
func (r *siltRun) endOffsets(ctx context.Context, t *Target) (map[partitionRef]int64, error) {
	cl, err := r.kafkaClient(t)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, r.topics...)
	if err != nil {
		return nil, err
	}
	out := map[partitionRef]int64{}
	var errs []error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			errs = append(errs, o.Err)
		}
		out[partitionRef{o.Topic, o.Partition}] = o.Offset
	})
	return out, errors.Join(errs...)
}

// consumeKafka reads the consumer's partitions until stop says so, calling
// got for each polled page. It returns the first fetch error.
func (r *siltRun) consumeKafka(ctx context.Context, t *Target, share map[string]map[int32]kgo.Offset, opts []kgo.Opt,
	got func(kgo.Fetches) (done bool)) error {
	cl, err := r.kafkaClient(t, append([]kgo.Opt{kgo.ConsumePartitions(share)}, opts...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for ctx.Err() == nil {
		// A bounded poll: a consumer already at the end must still get
		// to ask whether it is done.
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		var ferr error
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				ferr = cmpErr(ferr, fmt.Errorf("fetch %s/%d: %w", topic, p, err))
			}
		})
		if ferr != nil {
			return ferr
		}
		if got(fs) {
			return nil
		}
	}
	return ctx.Err()
}

// kafkaTail follows every partition from offset 0 while the producers
// run, then until the consumers reach the high watermarks, recording the
// end-to-end latency of records sent in the measured window.
func (r *siltRun) kafkaTail(ctx context.Context, producersDone <-chan struct{}) (*Histogram, error) {
	shares := r.kafkaShares(r.o.Consumers, func(partitionRef) kgo.Offset { return kgo.NewOffset().At(0) })
	hists := make([]*Histogram, len(shares))
	errs := make([]error, len(shares))
	var ends map[partitionRef]int64 // once the producers are done
	var endsOnce sync.Once
	var endsErr error
	var wg sync.WaitGroup
	for i, share := range shares {
		hists[i] = NewHistogram()
		next := map[partitionRef]int64{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.consumeKafka(ctx, r.t, share, []kgo.Opt{kgo.FetchMaxWait(time.Second), kgo.FetchMaxPartitionBytes(4 << 20)}, func(fs kgo.Fetches) bool {
				now := time.Now()
				n := 0
				fs.EachRecord(func(rec *kgo.Record) {
					if ts, ok := sendTime(rec.Value); ok && r.win.measuredNanos(ts) {
						hists[i].Record(now.Sub(time.Unix(0, ts)))
					}
					next[partitionRef{rec.Topic, rec.Partition}] = rec.Offset + 1
					n++
				})
				r.live.consumed.Add(int64(n))
				select {
				case <-producersDone:
				default:
					return false
				}
				endsOnce.Do(func() { ends, endsErr = r.endOffsets(ctx, r.t) })
				if endsErr != nil {
					return true
				}
				for topic, ps := range share {
					for p := range ps {
						k := partitionRef{topic, p}
						if next[k] < ends[k] {
							return false
						}
					}
				}
				return true
			})
		}()
	}
	wg.Wait()
	total := NewHistogram()
	for _, h := range hists {
		total.Merge(h)
	}
	return total, errors.Join(append(errs, endsErr)...)
}

// kafkaCatchUp reads every partition from offset 0 to its high watermark
// over Kafka: each consumer client fetches its share of the partitions
// together, as Kafka consumers do.
func (r *siltRun) kafkaCatchUp(ctx context.Context, t *Target, pr *Progress) (*CatchUpFigures, error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.CatchUpTimeout)
	defer cancel()
	ends, err := r.endOffsets(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("catch-up read: %w", err)
	}
	shares := r.kafkaShares(r.o.Consumers, func(partitionRef) kgo.Offset { return kgo.NewOffset().At(0) })
	before, _ := readCounters(t.Metrics)
	var records, byteCount atomic.Int64
	start := time.Now()
	stopTrack := pr.TrackCatchUp(start, &records, " (Kafka)")
	errs := make([]error, len(shares))
	var wg sync.WaitGroup
	for i, share := range shares {
		left := 0
		for topic, ps := range share {
			for p := range ps {
				if ends[partitionRef{topic, p}] > 0 {
					left++
				}
			}
		}
		next := map[partitionRef]int64{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if left == 0 {
				return
			}
			opts := []kgo.Opt{kgo.FetchMaxWait(100 * time.Millisecond), kgo.FetchMaxPartitionBytes(8 << 20), kgo.FetchMaxBytes(64 << 20)}
			errs[i] = r.consumeKafka(ctx, t, share, opts, func(fs kgo.Fetches) bool {
				var n, b int64
				fs.EachRecord(func(rec *kgo.Record) {
					k := partitionRef{rec.Topic, rec.Partition}
					if rec.Offset >= ends[k] {
						return // produced after the catch-up began: none here
					}
					b += int64(len(rec.Key) + len(rec.Value))
					n++
					if rec.Offset+1 == ends[k] {
						left--
					}
					next[k] = rec.Offset + 1
				})
				records.Add(n)
				byteCount.Add(b)
				return left == 0
			})
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopTrack()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("catch-up read: %w", err)
	}
	var want int64
	for _, e := range ends {
		want += e
	}
	after, _ := readCounters(t.Metrics)
	d := after.sub(before)
	cu := &CatchUpFigures{
		Records:       records.Load(),
		Bytes:         byteCount.Load(),
		Seconds:       elapsed.Seconds(),
		RecordsPerSec: perSec(float64(records.Load()), elapsed),
		MBPerSec:      perSec(float64(byteCount.Load()), elapsed) / mb,
		Complete:      records.Load() == want,
	}
	if t.Metrics != nil {
		cu.Gets = int64(d.Gets + d.GetRanges)
		cu.GetsPerGiB = ratio(d.Gets+d.GetRanges, float64(cu.Bytes)/gib)
		cu.ObjectBytesRead = d.ReadBytes
		cu.ReadAmplification = ratio(d.ReadBytes, float64(cu.Bytes))
	}
	return cu, nil
}
