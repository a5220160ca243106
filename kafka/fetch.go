package kafka

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/errgroup"

	"silt/auth"
	"silt/fetch"
	"silt/metadata"
	"silt/segment"
)

// fetchConcurrency bounds the partitions one fetch reads at once.
const fetchConcurrency = 8

// fetchPart is one partition of a fetch request and what was read for it.
type fetchPart struct {
	out      *kmsg.FetchResponseTopicPartition
	topicID  int64
	offset   int64
	maxBytes int64
	ok       bool // a partition to read (no error before reading)
}

// fetch answers Fetch: stored batches with their base offsets patched,
// partition by partition in request order, within the partition and
// response byte limits; when fewer than min_bytes are ready it waits for
// commits to the partitions, up to max_wait_ms.
func (s *Server) fetch(ctx context.Context, cl *call, req *kmsg.FetchRequest) *kmsg.FetchResponse {
	resp := req.ResponseKind().(*kmsg.FetchResponse)
	if req.Version >= 7 && req.SessionID != 0 {
		// Sessions are never created (every answer says session 0), so
		// an incremental fetch names one this agent does not know.
		resp.ErrorCode = errFetchSessionIDNotFound
		return resp
	}
	maxBytes := s.cfg.MaxFetchBytes
	if req.Version >= 3 && req.MaxBytes > 0 {
		maxBytes = min(maxBytes, int64(req.MaxBytes))
	}
	var parts []*fetchPart
	var budget int64 // bytes the answer may need, within maxBytes
	for _, rt := range req.Topics {
		ot := kmsg.NewFetchResponseTopic()
		ot.Topic = rt.Topic
		ot.Partitions = make([]kmsg.FetchResponseTopicPartition, len(rt.Partitions))
		ok := allowed(ctx, auth.OpConsume, auth.ResourceTopic, rt.Topic)
		var topic metadata.Topic
		var terr error
		if ok {
			topic, terr = s.topics.get(ctx, rt.Topic)
		}
		for j, rp := range rt.Partitions {
			p := &ot.Partitions[j]
			*p = kmsg.NewFetchResponseTopicPartition()
			p.Partition = rp.Partition
			p.HighWatermark, p.LastStableOffset, p.LogStartOffset = -1, -1, -1
			p.RecordBatches = []byte{} // empty, not null: librdkafka refuses a null record set
			fp := &fetchPart{out: p, topicID: topic.ID, offset: rp.FetchOffset, maxBytes: int64(rp.PartitionMaxBytes)}
			switch {
			case !ok:
				p.ErrorCode = errTopicAuthorizationFailed
			case terr != nil:
				p.ErrorCode = errorCode(terr)
			case rp.Partition < 0 || rp.Partition >= topic.Partitions:
				p.ErrorCode = errUnknownTopicOrPartition
			case fp.maxBytes <= 0:
				p.ErrorCode = errInvalidRequest
			default:
				fp.ok = true
				budget += fp.maxBytes
			}
			parts = append(parts, fp)
		}
		resp.Topics = append(resp.Topics, ot)
	}
	// Reserve the answer's bytes in the in-flight bound; the writer
	// gives them back once the answer is sent.
	cl.extra = min(budget, maxBytes)
	if err := s.acquire(ctx, cl.extra); err != nil {
		cl.extra = 0
		return resp
	}

	wait := min(msDuration(req.MaxWaitMillis), s.cfg.MaxWait)
	deadline := time.Now().Add(wait)
	minBytes := int64(max(req.MinBytes, 1))
	for {
		var wake chan struct{}
		var stopWatch func()
		if wait > 0 {
			wake, stopWatch = s.watch(parts)
		}
		got, failed := s.readParts(ctx, parts, maxBytes, req.Version < 10)
		left := time.Until(deadline)
		if got >= minBytes || failed || wait <= 0 || left <= 0 {
			if stopWatch != nil {
				stopWatch()
			}
			break
		}
		t := time.NewTimer(left)
		s.metrics.waiting.Inc()
		select {
		case <-wake:
		case <-t.C:
		case <-s.stopping:
		case <-ctx.Done():
		}
		s.metrics.waiting.Dec()
		t.Stop()
		stopWatch()
		if ctx.Err() != nil {
			break
		}
		select {
		case <-s.stopping:
			wait = 0 // one last read, then answer
		default:
		}
	}
	// Account for what the answer really holds: a first batch larger
	// than the limits is sent whole, as Kafka does. Taking more without
	// waiting: a fetch holding its reservation must not wait for others
	// holding theirs (past the bound by at most that one batch).
	var size int64
	for _, fp := range parts {
		size += int64(len(fp.out.RecordBatches))
	}
	if size > cl.extra {
		if s.tryAcquire(size - cl.extra) {
			cl.extra = size
		}
	} else {
		s.releaseBytes(cl.extra - size)
		cl.extra = size
	}
	return resp
}

// watch subscribes to the next commit of every partition read; wake is
// closed at the first one. stop ends the subscription's goroutines.
func (s *Server) watch(parts []*fetchPart) (wake chan struct{}, stop func()) {
	wake = make(chan struct{})
	done := make(chan struct{})
	var once sync.Once
	seen := map[fetch.PartitionKey]bool{}
	for _, fp := range parts {
		k := fetch.PartitionKey{TopicID: fp.topicID, Partition: fp.out.Partition}
		if !fp.ok || seen[k] {
			continue
		}
		seen[k] = true
		ch := s.deps.Watcher.Watch(k)
		go func() {
			select {
			case <-ch:
				once.Do(func() { close(wake) })
			case <-done:
			}
		}()
	}
	return wake, func() { close(done) }
}

// readParts reads every partition, in waves of fetchConcurrency, giving
// each at most its own limit and what is left of maxBytes; partitions
// past the limit get nothing this time. It returns the bytes read and
// whether a partition failed (which ends any wait: clients act on errors).
func (s *Server) readParts(ctx context.Context, parts []*fetchPart, maxBytes int64, noZstd bool) (int64, bool) {
	var total int64
	failed := false
	for start := 0; start < len(parts); start += fetchConcurrency {
		wave := parts[start:min(start+fetchConcurrency, len(parts))]
		left := maxBytes - total
		results := make([]*fetch.ChunkResponse, len(wave))
		errs := make([]error, len(wave))
		g, gctx := errgroup.WithContext(ctx)
		for i, fp := range wave {
			if !fp.ok {
				continue
			}
			fp.out.RecordBatches = []byte{}
			if left <= 0 && total > 0 {
				// The answer is full: no records for this partition this
				// time, but its offsets, as Kafka gives them.
				g.Go(func() error {
					st, err := s.deps.Fetcher.Offsets(gctx, fp.topicID, fp.out.Partition)
					if err != nil {
						errs[i] = err
						return nil
					}
					results[i] = &fetch.ChunkResponse{HighWatermark: st.HighWatermark, LogStartOffset: st.LogStartOffset, NextOffset: fp.offset}
					return nil
				})
				continue
			}
			g.Go(func() error {
				results[i], errs[i] = s.deps.Fetcher.FetchChunks(gctx, fetch.Request{
					TopicID: fp.topicID, Partition: fp.out.Partition, Offset: fp.offset,
					MaxBytes: max(1, min(fp.maxBytes, left)),
				})
				return nil
			})
		}
		_ = g.Wait()
		for i, fp := range wave {
			if !fp.ok {
				continue
			}
			p := fp.out
			var oor *fetch.OutOfRangeError
			switch err := errs[i]; {
			case errors.As(err, &oor):
				p.ErrorCode = errOffsetOutOfRange
				p.HighWatermark, p.LastStableOffset, p.LogStartOffset = oor.HighWatermark, oor.HighWatermark, oor.LogStartOffset
				failed = true
			case err != nil:
				p.ErrorCode = errorCode(err)
				failed = true
				s.logger.Debug("kafka fetch: partition read failed", "partition", p.Partition, "err", err)
			case results[i] != nil:
				r := results[i]
				if noZstd {
					if err := withoutZstd(r); err != nil {
						p.ErrorCode = errorCode(err)
						failed = true
						s.logger.Warn("kafka fetch: re-encoding a zstd batch for an old client", "partition", p.Partition, "err", err)
						continue
					}
				}
				p.ErrorCode = errNone
				p.HighWatermark, p.LastStableOffset, p.LogStartOffset = r.HighWatermark, r.HighWatermark, r.LogStartOffset
				// Past what the answer may hold, only the first
				// partition with data is sent, whole (KIP-74).
				if n := int64(len(r.Data)); n > 0 && (total+n <= maxBytes || total == 0) {
					p.RecordBatches = r.Data
					total += n
				}
			}
		}
	}
	return total, failed
}

// withoutZstd re-encodes the zstd batches of r uncompressed, for a client
// fetching with a version before 10, which predates zstd (Kafka would
// answer it UNSUPPORTED_COMPRESSION_TYPE; Silt stores most records zstd,
// so it down-converts instead, as Kafka does for older message formats).
// Offsets, timestamps and producer fields are kept.
func withoutZstd(r *fetch.ChunkResponse) error {
	zstd := false
	data := r.Data
	for _, c := range r.Chunks {
		h, err := segment.ParseBatchHeader(data[:c.Size])
		if err != nil {
			return err
		}
		zstd = zstd || h.Compression() == segment.CompressionZstd
		data = data[c.Size:]
	}
	if !zstd {
		return nil
	}
	enc := segment.NewEncoder()
	out := make([]byte, 0, len(r.Data))
	data = r.Data
	for i, c := range r.Chunks {
		chunk := data[:c.Size]
		data = data[c.Size:]
		h, err := segment.ParseBatchHeader(chunk)
		if err != nil {
			return err
		}
		if h.Compression() != segment.CompressionZstd {
			out = append(out, chunk...)
			continue
		}
		b, err := segment.DecodeBatch(chunk, segment.DecodeOptions{})
		if err != nil {
			return err
		}
		opts := segment.BatchOptions{Compression: segment.CompressionNone, LastOffsetDelta: h.LastOffsetDelta}
		if h.ProducerID >= 0 {
			opts.Idempotent, opts.ProducerID, opts.ProducerEpoch, opts.BaseSequence = true, h.ProducerID, h.ProducerEpoch, h.BaseSequence
		}
		start := len(out)
		if out, _, err = enc.AppendBatch(out, b.Records, opts); err != nil {
			return err
		}
		segment.SetBaseOffset(out[start:], h.BaseOffset)
		r.Chunks[i].Size = len(out) - start
	}
	r.Data = out
	return nil
}
