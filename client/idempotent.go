package client

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"silt/partitioner"
)

// IdempotentOptions configure an IdempotentProducer.
type IdempotentOptions struct {
	// Retry bounds the resends of one request. A zero MaxAttempts takes
	// DefaultIdempotentRetry.
	Retry RetryPolicy
}

// DefaultIdempotentRetry is DefaultRetryPolicy with each try bounded to
// 30s, so that a request that hangs is resent.
func DefaultIdempotentRetry() RetryPolicy {
	p := DefaultRetryPolicy()
	p.MaxAttempts = 8
	p.MaxElapsed = 2 * time.Minute
	p.AttemptTimeout = 30 * time.Second
	return p
}

// IdempotentProducer writes to one topic with a producer id: it picks
// each record's partition as the agent would (an explicit partition, else
// murmur2 of a non-empty key, else one round-robin partition per request),
// numbers records per partition, and resends a request that failed with a
// retriable error or timed out with the same sequences. The agent answers
// a resend of a committed request with the original offsets, so retries
// never write a record twice.
//
// When a Send fails for good its records may or may not have been
// written; the producer then starts over under a new producer id so that
// the next Send is not mistaken for a resend. Send is safe for concurrent
// use; requests go out one at a time, in order.
type IdempotentProducer struct {
	c     *Client
	topic string
	retry RetryPolicy

	mu         sync.Mutex
	producerID int64 // 0: get a new one before the next request
	partitions int32
	next       map[int32]int32 // next sequence per partition
	rr         int32           // round-robin position for keyless requests
}

// NewIdempotentProducer reads the topic's partition count and gets a
// producer id.
func (c *Client) NewIdempotentProducer(ctx context.Context, topic string, opts IdempotentOptions) (*IdempotentProducer, error) {
	retry := opts.Retry
	if retry.MaxAttempts == 0 {
		retry = DefaultIdempotentRetry()
	}
	p := &IdempotentProducer{c: c, topic: topic, retry: retry}
	if err := p.refresh(ctx); err != nil {
		return nil, err
	}
	if err := p.reset(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// ProducerID returns the producer id in use (0 right after a failure).
func (p *IdempotentProducer) ProducerID() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.producerID
}

// Partitions returns the topic's partition count as last read.
func (p *IdempotentProducer) Partitions() int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.partitions
}

func (p *IdempotentProducer) refresh(ctx context.Context) error {
	t, err := p.c.DescribeTopic(ctx, p.topic)
	if err != nil {
		return err
	}
	if t.Partitions < 1 {
		return fmt.Errorf("topic %s has %d partitions", p.topic, t.Partitions)
	}
	p.partitions = t.Partitions
	return nil
}

// reset starts a new producer session.
func (p *IdempotentProducer) reset(ctx context.Context) error {
	id, err := p.c.NewProducerID(ctx)
	if err != nil {
		return err
	}
	p.producerID, p.next = id, map[int32]int32{}
	return nil
}

// Send writes msgs in one request (binary format) and returns their
// offsets in order. opts may add WithExpectedOffset; the producer sets the
// sequences itself.
func (p *IdempotentProducer) Send(ctx context.Context, msgs []Message, opts ...ProduceOption) (ProduceResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	res, err := p.send(ctx, msgs, opts)
	if err != nil {
		return ProduceResult{}, fmt.Errorf("idempotent produce to %s: %w", p.topic, err)
	}
	return res, nil
}

func (p *IdempotentProducer) send(ctx context.Context, msgs []Message, opts []ProduceOption) (ProduceResult, error) {
	if len(msgs) == 0 {
		return ProduceResult{}, fmt.Errorf("no messages")
	}
	if err := p.ensurePartitions(ctx, msgs); err != nil {
		return ProduceResult{}, err
	}
	if p.producerID == 0 {
		if err := p.reset(ctx); err != nil {
			return ProduceResult{}, err
		}
	}
	assigned, counts := p.assign(msgs)
	if p.wouldWrap(counts) {
		if err := p.reset(ctx); err != nil {
			return ProduceResult{}, err
		}
	}
	seqs := make(map[int32]int32, len(counts))
	for part := range counts {
		seqs[part] = p.next[part]
	}
	res, err := p.c.ProduceBinary(ctx, p.topic, assigned, append(opts, WithSequences(p.producerID, seqs), withRetry(p.retry))...)
	if err == nil {
		err = checkPartitions(res, assigned)
	}
	if err != nil {
		// The outcome is unknown: start a new session rather than risk
		// the next request being taken for a resend of this one.
		p.producerID = 0
		return ProduceResult{}, err
	}
	for part, n := range counts {
		p.next[part] += n
	}
	return res, nil
}

// ensurePartitions re-reads the partition count when a message names a
// partition past the known count (the topic may have grown).
func (p *IdempotentProducer) ensurePartitions(ctx context.Context, msgs []Message) error {
	for i := range msgs {
		part := msgs[i].Partition
		if part == nil || (*part >= 0 && *part < p.partitions) {
			continue
		}
		if *part < 0 {
			return fmt.Errorf("message %d: partition %d is negative", i, *part)
		}
		if err := p.refresh(ctx); err != nil {
			return err
		}
		if *part >= p.partitions {
			return fmt.Errorf("message %d: topic %s has %d partitions; there is no partition %d", i, p.topic, p.partitions, *part)
		}
	}
	return nil
}

// assign returns copies of msgs with their partitions set, and the count
// of records per partition.
func (p *IdempotentProducer) assign(msgs []Message) ([]Message, map[int32]int32) {
	out := make([]Message, len(msgs))
	counts := map[int32]int32{}
	sticky := int32(-1)
	for i, m := range msgs {
		var part int32
		switch {
		case m.Partition != nil:
			part = *m.Partition
		case len(m.Key) > 0:
			part = partitioner.ForKey(m.Key, p.partitions)
		default:
			if sticky < 0 {
				sticky = p.rr % p.partitions
				p.rr = (p.rr + 1) % p.partitions
			}
			part = sticky
		}
		m.Partition = Partition(part)
		out[i] = m
		counts[part]++
	}
	return out, counts
}

// wouldWrap reports whether a sequence would pass math.MaxInt32.
func (p *IdempotentProducer) wouldWrap(counts map[int32]int32) bool {
	for part, n := range counts {
		if int64(p.next[part])+int64(n) > math.MaxInt32 {
			return true
		}
	}
	return false
}

func checkPartitions(res ProduceResult, assigned []Message) error {
	for i, o := range res.Offsets {
		if o.Partition != *assigned[i].Partition {
			return fmt.Errorf("record %d landed in partition %d, not %d", i, o.Partition, *assigned[i].Partition)
		}
	}
	return nil
}
