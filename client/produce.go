package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"silt/binformat"
	"silt/recordjson"
)

// RecordOffset is where one produced record landed.
type RecordOffset struct {
	Partition int32 `json:"partition"`
	Offset    int64 `json:"offset"`
}

// ProduceResult lists each message's partition and offset, in the order
// the messages were given.
type ProduceResult struct {
	Offsets []RecordOffset `json:"offsets"`
	// Duplicate is true when the agent had already committed this
	// idempotent request: Offsets are those of the first commit.
	Duplicate bool `json:"duplicate,omitempty"`
}

// ProduceOption adjusts one produce request.
type ProduceOption func(*produceParams)

type produceParams struct {
	producerID int64
	sequences  map[int32]int32
	topicID    int64
	retry      *RetryPolicy
	expected   *int64
}

// WithExpectedOffset makes the request a conditional append, for
// optimistic concurrency: its records, which must all go to one
// partition, are written only if that partition's next offset is offset.
// Otherwise the agent writes nothing and answers offset_mismatch, with
// the partition's next offset in Error.NextOffset.
func WithExpectedOffset(offset int64) ProduceOption {
	return func(p *produceParams) { p.expected = &offset }
}

// WithTopicID pins the topic's id (Topic.ID): if the topic was deleted and
// created again under its name since, the request fails with
// topic_id_mismatch instead of writing into the new topic.
func WithTopicID(id int64) ProduceOption {
	return func(p *produceParams) { p.topicID = id }
}

// WithSequences makes the request idempotent: producerID comes from
// NewProducerID, and sequences gives, for every partition the request
// writes to, the sequence number of its first record there. Every message
// must then name its partition, since the sequences depend on it.
// IdempotentProducer does this bookkeeping.
func WithSequences(producerID int64, sequences map[int32]int32) ProduceOption {
	return func(p *produceParams) { p.producerID, p.sequences = producerID, sequences }
}

// withRetry overrides the client's retry policy for one request.
func withRetry(r RetryPolicy) ProduceOption {
	return func(p *produceParams) { p.retry = &r }
}

func produceParamsOf(opts []ProduceOption) produceParams {
	var p produceParams
	for _, o := range opts {
		o(&p)
	}
	return p
}

// Produce writes msgs to topic in one JSON request.
func (c *Client) Produce(ctx context.Context, topic string, msgs []Message, opts ...ProduceOption) (ProduceResult, error) {
	p := produceParamsOf(opts)
	body := struct {
		Records    []recordjson.Record `json:"records"`
		ProducerID int64               `json:"producer_id,omitempty"`
		Sequences  map[string]int32    `json:"sequences,omitempty"`
	}{Records: make([]recordjson.Record, len(msgs)), ProducerID: p.producerID}
	for i := range msgs {
		body.Records[i] = messageJSON(&msgs[i])
	}
	if len(p.sequences) > 0 {
		body.Sequences = make(map[string]int32, len(p.sequences))
		for part, seq := range p.sequences {
			body.Sequences[strconv.Itoa(int(part))] = seq
		}
	}
	b, err := marshalJSON(body)
	if err != nil {
		return ProduceResult{}, fmt.Errorf("produce to %s: %w", topic, err)
	}
	res, err := c.produce(ctx, topic, len(msgs), p, b, mediaJSON)
	if err != nil {
		return ProduceResult{}, fmt.Errorf("produce to %s: %w", topic, err)
	}
	return res, nil
}

// ProduceBinary writes msgs to topic in one request of the binary format,
// the cheapest for the agent to parse.
func (c *Client) ProduceBinary(ctx context.Context, topic string, msgs []Message, opts ...ProduceOption) (ProduceResult, error) {
	p := produceParamsOf(opts)
	req := binformat.Request{ProducerID: p.producerID, Records: make([]binformat.Record, len(msgs))}
	for i := range msgs {
		req.Records[i] = binaryRecord(&msgs[i])
	}
	for part, seq := range p.sequences {
		req.Sequences = append(req.Sequences, binformat.Sequence{Partition: part, BaseSequence: seq})
	}
	slices.SortFunc(req.Sequences, func(a, b binformat.Sequence) int { return int(a.Partition) - int(b.Partition) })
	res, err := c.produce(ctx, topic, len(msgs), p, binformat.AppendRequest(nil, &req), binformat.MediaType)
	if err != nil {
		return ProduceResult{}, fmt.Errorf("produce to %s: %w", topic, err)
	}
	return res, nil
}

// produce posts an encoded body and checks the answer has one offset per
// record.
func (c *Client) produce(ctx context.Context, topic string, n int, p produceParams, body []byte, ctype string) (ProduceResult, error) {
	if n == 0 {
		return ProduceResult{}, fmt.Errorf("no messages")
	}
	req := request{
		method: http.MethodPost,
		path:   []string{"v1", "topics", topic, "records"},
		query:  topicIDQuery(nil, p.topicID),
		body:   body,
		ctype:  ctype,
		accept: mediaJSON,
		// With a producer id the agent recognises a repeat and answers
		// it with the first commit's offsets.
		safe:  p.producerID > 0,
		retry: p.retry,
	}
	if p.expected != nil {
		req.query = url.Values{"expected_offset": {strconv.FormatInt(*p.expected, 10)}}
	}
	resp, err := c.call(ctx, req)
	if err != nil {
		return ProduceResult{}, err
	}
	var out ProduceResult
	if err := json.Unmarshal(resp.body, &out); err != nil {
		return ProduceResult{}, fmt.Errorf("decode response: %w", err)
	}
	if len(out.Offsets) != n {
		return ProduceResult{}, fmt.Errorf("agent returned %d offsets for %d records", len(out.Offsets), n)
	}
	return out, nil
}
