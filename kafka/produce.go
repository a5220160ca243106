package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"silt/auth"
	"silt/batcher"
	"silt/metadata"
	"silt/segment"
)

// produceBackpressureWait bounds how long a produce request waits for the
// batcher's buffer to have room before it answers REQUEST_TIMED_OUT.
const produceBackpressureWait = 10 * time.Second

// batchPool recycles the batches that produce decodes to check records.
var batchPool = sync.Pool{New: func() any { return new(segment.Batch) }}

// partitionError is a produce partition's own failure.
type partitionError struct {
	code int16
	msg  string
}

func perr(code int16, format string, args ...any) *partitionError {
	return &partitionError{code: code, msg: fmt.Sprintf(format, args...)}
}

// produce checks the request's batches, hands them to the batcher in the
// connection's order and answers after the commit (acks 1 and -1) or at
// once without an answer (acks 0).
func (s *Server) produce(ctx context.Context, cl *call, req *kmsg.ProduceRequest) {
	released := false
	defer func() {
		cl.submitDone()
		if !released {
			cl.release()
		}
	}()
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	var parts []batcher.Part
	var owners []*kmsg.ProduceResponseTopicPartition // per part
	setErr := func(p *kmsg.ProduceResponseTopicPartition, e *partitionError) {
		if p.ErrorCode == errNone {
			p.ErrorCode, p.ErrorMessage = e.code, strPtr(e.msg)
		}
	}
	anyErr := false
	resp.Topics = make([]kmsg.ProduceResponseTopic, len(req.Topics))
	for i, rt := range req.Topics {
		out := &resp.Topics[i]
		*out = kmsg.NewProduceResponseTopic()
		out.Topic = rt.Topic
		out.Partitions = make([]kmsg.ProduceResponseTopicPartition, len(rt.Partitions))
		var topic metadata.Topic
		var topicErr *partitionError
		switch {
		case req.TransactionID != nil:
			topicErr = perr(errInvalidRequest, "Silt does not serve transactions")
		case req.Acks != 0 && req.Acks != 1 && req.Acks != -1:
			topicErr = perr(errInvalidRequiredAcks, "acks must be -1, 0 or 1")
		case !allowed(ctx, auth.OpProduce, auth.ResourceTopic, rt.Topic):
			topicErr = perr(errTopicAuthorizationFailed, "the key may not produce to topic %q", rt.Topic)
		default:
			var err error
			if topic, err = s.topics.get(ctx, rt.Topic); err != nil {
				topicErr = perr(errorCode(err), "%v", err)
			}
		}
		for j, rp := range rt.Partitions {
			p := &out.Partitions[j]
			*p = kmsg.NewProduceResponseTopicPartition()
			p.Partition = rp.Partition
			p.BaseOffset, p.LogAppendTime, p.LogStartOffset = -1, -1, -1
			if topicErr != nil {
				setErr(p, topicErr)
				anyErr = true
				continue
			}
			if rp.Partition < 0 || rp.Partition >= topic.Partitions {
				setErr(p, perr(errUnknownTopicOrPartition, "topic %q has %d partitions; there is no partition %d", topic.Name, topic.Partitions, rp.Partition))
				anyErr = true
				continue
			}
			ps, e := s.produceParts(topic, rp.Partition, rp.Records)
			if e == nil {
				e = s.producerAllowed(ctx, ps)
			}
			if e != nil {
				setErr(p, e)
				anyErr = true
				continue
			}
			for range ps {
				owners = append(owners, p)
			}
			parts = append(parts, ps...)
		}
	}

	acks0 := req.Acks == 0
	var pending *batcher.Pending
	var submitErr error
	if len(parts) > 0 {
		select {
		case <-cl.prevSubmit:
			pending, submitErr = s.submit(ctx, req, parts)
		case <-ctx.Done():
			submitErr = ctx.Err()
		}
	}
	cl.submitDone()
	if acks0 {
		// Nothing is answered. As Kafka does, a request that failed
		// closes the connection, so that the client refreshes its
		// metadata and sees something is wrong.
		cl.closeAfter = anyErr || submitErr != nil
		cl.reply(nil)
		if pending != nil {
			released = true
			go func() {
				<-pending.Done()
				cl.release()
			}()
		}
		return
	}
	if submitErr != nil {
		for _, p := range owners {
			setErr(p, perr(errorCode(submitErr), "%v", submitErr))
		}
		if errors.Is(submitErr, batcher.ErrBackpressure) {
			resp.ThrottleMillis = 100
		}
		cl.reply(resp)
		return
	}
	if pending != nil {
		results, err := pending.Wait(ctx)
		select {
		case <-pending.Done():
		default:
			// The client went away before the flush: the batcher
			// still reads the request's bytes.
			released = true
			go func() {
				<-pending.Done()
				cl.release()
			}()
		}
		for i, p := range owners {
			switch {
			case err != nil:
				setErr(p, perr(errorCode(err), "%v", err))
			case results[i].Err != nil:
				setErr(p, perr(errorCode(results[i].Err), "%v", results[i].Err))
			case p.BaseOffset < 0:
				p.BaseOffset = results[i].BaseOffset // a partition's first batch
			}
		}
	}
	cl.reply(resp)
}

// submit hands parts to the batcher, waiting a while for room in its
// buffer rather than failing at once.
func (s *Server) submit(ctx context.Context, req *kmsg.ProduceRequest, parts []batcher.Part) (*batcher.Pending, error) {
	limit := produceBackpressureWait
	if req.TimeoutMillis > 0 {
		limit = min(limit, msDuration(req.TimeoutMillis))
	}
	deadline := time.Now().Add(limit)
	backoff := 5 * time.Millisecond
	for {
		p, err := s.deps.Producer.Submit(ctx, parts)
		if !errors.Is(err, batcher.ErrBackpressure) || time.Now().Add(backoff).After(deadline) {
			return p, err
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-s.stopping:
			t.Stop()
			return nil, err
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// produceParts checks the record batches sent for one partition and
// turns each into a batcher part: the batch itself when it is stored as
// it came, or its records to re-encode.
func (s *Server) produceParts(topic metadata.Topic, partition int32, records []byte) ([]batcher.Part, *partitionError) {
	if len(records) == 0 {
		return nil, perr(errInvalidRecord, "no record batch")
	}
	maxRecord := min(s.cfg.MaxRecordBytes, int(topic.Config.MaxMessageBytes))
	var parts []batcher.Part
	for len(records) > 0 {
		h, err := segment.ParseBatchHeader(records)
		if errors.Is(err, segment.ErrUnsupported) {
			return nil, perr(errUnsupportedForMessageFmt, "only RecordBatch v2 (magic 2) is accepted: %v", err)
		}
		if err != nil || h.Size() > len(records) {
			return nil, perr(errCorruptMessage, "truncated record batch")
		}
		raw := records[:h.Size():h.Size()]
		records = records[h.Size():]
		part, e := s.checkBatch(topic, partition, raw, h, maxRecord)
		if e != nil {
			return nil, e
		}
		parts = append(parts, part)
	}
	return parts, nil
}

func (s *Server) checkBatch(topic metadata.Topic, partition int32, raw []byte, h segment.BatchHeader, maxRecord int) (batcher.Part, *partitionError) {
	part := batcher.Part{TopicID: topic.ID, Partition: partition}
	switch {
	case h.Transactional() || h.Control():
		return part, perr(errInvalidRequest, "Silt does not serve transactions")
	case h.ProducerID == 0 || h.ProducerID < -1:
		return part, perr(errUnknownProducerID, "producer id %d was not issued by InitProducerId", h.ProducerID)
	case h.ProducerID > 0 && h.ProducerEpoch < 0:
		return part, perr(errInvalidProducerEpoch, "producer epoch %d", h.ProducerEpoch)
	case h.ProducerID > 0 && h.BaseSequence < 0:
		return part, perr(errInvalidRecord, "an idempotent batch needs a base sequence")
	case h.RecordCount < 1:
		return part, perr(errInvalidRecord, "empty record batch")
	}
	b := batchPool.Get().(*segment.Batch)
	if err := b.Decode(raw, segment.DecodeOptions{}); err != nil {
		batchPool.Put(b)
		return part, perr(errorCode(err), "record batch: %v", err)
	}
	// Under LogAppendTime every record gets the agent's time, so the batch
	// is re-encoded; under CreateTime the producer's timestamps must lie
	// within the topic's bounds (INVALID_TIMESTAMP, as Kafka answers).
	rewrite := h.LogAppendTime() || topic.Config.TimestampType == metadata.LogAppendTime
	now := time.Now().UnixMilli()
	for i := range b.Records {
		r := &b.Records[i]
		if r.OffsetDelta != int32(i) {
			batchPool.Put(b)
			return part, perr(errInvalidRecord, "record %d has offset delta %d", i, r.OffsetDelta)
		}
		if n := segment.RecordSize(r); n > int64(maxRecord) {
			batchPool.Put(b)
			return part, perr(errMessageTooLarge, "record %d is %d bytes; the limit for topic %q is %d", i, n, topic.Name, maxRecord)
		}
		if r.Key == nil && topic.Config.Compacted() {
			batchPool.Put(b)
			return part, perr(errInvalidRecord, "topic %q is compacted: every record needs a key", topic.Name)
		}
		if r.Timestamp < 0 {
			rewrite = true
		} else if !rewrite {
			if _, err := topic.Config.RecordTimestamp(r.Timestamp, now); err != nil {
				batchPool.Put(b)
				return part, perr(errInvalidTimestamp, "record %d: %v", i, err)
			}
		}
	}
	if h.LastOffsetDelta != h.RecordCount-1 {
		batchPool.Put(b)
		return part, perr(errInvalidRecord, "last offset delta %d with %d records", h.LastOffsetDelta, h.RecordCount)
	}
	if h.ProducerID > 0 {
		part.ProducerID, part.ProducerEpoch, part.BaseSequence = h.ProducerID, h.ProducerEpoch, h.BaseSequence
	}
	// Stored as sent: a compressed batch large enough to be its own
	// chunk. An uncompressed one is compressed with the flush, as HTTP
	// records are: object bytes cost more than the CPU (see
	// docs/segment-format.md).
	if !rewrite && h.Compression() != segment.CompressionNone && len(raw) >= s.cfg.RawBatchMinBytes {
		batchPool.Put(b)
		segment.SetBaseOffset(raw, 0)
		segment.SetPartitionLeaderEpoch(raw, -1)
		part.Batch = raw
		s.metrics.produced.WithLabelValues("raw").Inc()
		return part, nil
	}
	// Re-encoded: the records alias b (or raw), which the part keeps.
	for i := range b.Records {
		if b.Records[i].Timestamp < 0 || topic.Config.TimestampType == metadata.LogAppendTime {
			b.Records[i].Timestamp = now
		}
	}
	part.Records = b.Records
	s.metrics.produced.WithLabelValues("reencoded").Inc()
	return part, nil
}

// producerAllowed refuses the batches of a producer id bound to another
// key (CLUSTER_AUTHORIZATION_FAILED: Kafka's answer to idempotent writes
// a principal may not make).
func (s *Server) producerAllowed(ctx context.Context, parts []batcher.Part) *partitionError {
	var checked int64
	for _, p := range parts {
		if p.ProducerID <= 0 || p.ProducerID == checked {
			continue
		}
		ok, err := s.bindings.mayUse(ctx, auth.FromContext(ctx), p.ProducerID)
		if err != nil {
			return perr(errorCode(err), "%v", err)
		}
		if !ok {
			return perr(errClusterAuthorizationFailed, "producer id %d belongs to another key; ask InitProducerId for one of your own", p.ProducerID)
		}
		checked = p.ProducerID
	}
	return nil
}

// initProducerID issues a fresh producer id with epoch 0, bound to the
// asking key; a client that names its id and epoch (KIP-360) gets the
// next epoch.
func (s *Server) initProducerID(ctx context.Context, req *kmsg.InitProducerIDRequest) *kmsg.InitProducerIDResponse {
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	if req.TransactionalID != nil {
		resp.ErrorCode = errInvalidRequest
		return resp
	}
	who := auth.FromContext(ctx)
	if !who.AllowsAny(auth.OpProduce, auth.ResourceTopic) {
		resp.ErrorCode = errClusterAuthorizationFailed
		return resp
	}
	if req.ProducerID >= 0 && req.ProducerEpoch >= 0 {
		if ok, err := s.bindings.mayUse(ctx, who, req.ProducerID); err != nil || !ok {
			resp.ErrorCode = errClusterAuthorizationFailed
			if err != nil {
				resp.ErrorCode = errCoordinatorNotAvailable
			}
			return resp
		}
		// KIP-360: a producer that lost track of its sequences bumps its
		// epoch and starts them over; its older epoch is fenced.
		epoch, err := s.deps.Topics.BumpProducerEpoch(ctx, req.ProducerID, req.ProducerEpoch)
		if err != nil {
			resp.ErrorCode = errorCode(err)
			if resp.ErrorCode == errUnknownServerError || resp.ErrorCode == errKafkaStorageError {
				resp.ErrorCode = errCoordinatorNotAvailable
			}
			return resp
		}
		resp.ProducerID, resp.ProducerEpoch = req.ProducerID, epoch
		return resp
	}
	id, err := s.deps.Topics.NewProducerID(ctx)
	if err == nil {
		err = s.bindings.bind(ctx, who, id)
	}
	if err != nil {
		resp.ErrorCode = errCoordinatorNotAvailable
		s.logger.Warn("kafka: new producer id", "err", err)
		return resp
	}
	resp.ProducerID, resp.ProducerEpoch = id, 0
	return resp
}
