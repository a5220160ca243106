package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"silt/binformat"
	"silt/problem"
	"silt/recordjson"
)

// Special offsets for Fetch and Stream, as in Kafka.
const (
	Earliest int64 = -2 // the partition's log start offset
	Latest   int64 = -1 // the high watermark: only records produced from now on
)

// Encoding is the body format Fetch asks for. Every format carries the
// same bytes; Batches, the default, is the cheapest for the agent: it
// sends the stored (compressed) batches and the client decodes them.
type Encoding int

const (
	Batches Encoding = iota // application/vnd.silt.batches.v1 (records.v1 from an agent without it)
	Binary                  // application/vnd.silt.records.v1: records encoded by the agent
	JSON                    // application/json
	NDJSON                  // application/x-ndjson
)

// FetchOptions bound one fetch. Zero values take the agent's defaults.
type FetchOptions struct {
	// MaxRecords bounds the records returned. The agent sends whole
	// batches in the Batches encoding; the client keeps MaxRecords of
	// them and continues after the last one kept.
	MaxRecords int
	// MaxBytes bounds the bytes the agent sends: records by their encoded
	// size, or stored batches by theirs in the Batches encoding (the first
	// batch or record is sent whole, however large).
	MaxBytes int
	// Wait is how long the agent may wait for records when there are none
	// past the offset (a long-poll).
	Wait time.Duration
	// Encoding is the body format; JSON and NDJSON are for debugging.
	Encoding Encoding
	// Base64 makes JSON and NDJSON bodies carry every key and value in
	// base64 instead of as JSON text.
	Base64 bool
	// OffsetReset is what an offset out of range does: ResetEarliest or
	// ResetLatest fetch from there instead (FetchResult.Reset says so);
	// ResetError, or empty, fails with offset_out_of_range.
	OffsetReset string
	// TopicID, when not 0, pins the topic's id (Topic.ID): if the topic was
	// deleted and created again under its name, the fetch fails with
	// topic_id_mismatch rather than reading the new topic's offsets.
	TopicID int64
}

// FetchResult is a page of records.
type FetchResult struct {
	Records []Record
	// NextOffset is where the next fetch continues.
	NextOffset     int64
	HighWatermark  int64
	LogStartOffset int64
	// Reset is set when the offset asked for was out of range and
	// FetchOptions.OffsetReset moved it: the records start at ResetTo.
	Reset   bool
	ResetTo int64
}

// Offsets is the range of offsets a partition holds.
type Offsets struct {
	LogStartOffset int64 `json:"log_start_offset"`
	HighWatermark  int64 `json:"high_watermark"`
}

// offsetParam renders an offset for the query string.
func offsetParam(offset int64) (string, error) {
	switch {
	case offset == Earliest:
		return "earliest", nil
	case offset == Latest:
		return "latest", nil
	case offset >= 0:
		return strconv.FormatInt(offset, 10), nil
	}
	return "", fmt.Errorf("offset %d: want a non-negative offset, Earliest or Latest", offset)
}

func partitionPath(topic string, partition int32, leaf string) []string {
	return []string{"v1", "topics", topic, "partitions", strconv.FormatInt(int64(partition), 10), leaf}
}

// Fetch reads records of one partition from offset (or Earliest, Latest).
// At the high watermark it waits up to opts.Wait for records and returns
// none if none came. An offset below the log start or past the high
// watermark is out of range: opts.OffsetReset says whether to fail with
// offset_out_of_range, whose *Error gives the partition's range, or to
// fetch from the log start or the high watermark instead.
func (c *Client) Fetch(ctx context.Context, topic string, partition int32, offset int64, opts FetchOptions) (FetchResult, error) {
	if err := validReset(opts.OffsetReset); err != nil {
		return FetchResult{}, fmt.Errorf("fetch %s/%d: %w", topic, partition, err)
	}
	res, err := c.fetch(ctx, topic, partition, offset, opts)
	// Retention may move the log start again between the two fetches:
	// follow it a few times.
	for moved := 0; err != nil && moved < 3; moved++ {
		var e *Error
		if !errors.As(err, &e) || e.Code != problem.CodeOffsetOutOfRange {
			break
		}
		to, ok := resetTarget(opts.OffsetReset, e)
		if !ok {
			break
		}
		res, err = c.fetch(ctx, topic, partition, to, opts)
		res.Reset, res.ResetTo = true, to
	}
	if err != nil {
		return FetchResult{}, fmt.Errorf("fetch %s/%d: %w", topic, partition, err)
	}
	return res, nil
}

func (c *Client) fetch(ctx context.Context, topic string, partition int32, offset int64, opts FetchOptions) (FetchResult, error) {
	off, err := offsetParam(offset)
	if err != nil {
		return FetchResult{}, err
	}
	q := topicIDQuery(fetchQuery(opts.MaxRecords, opts.MaxBytes, opts.Wait), opts.TopicID)
	q.Set("offset", off)
	if opts.Base64 {
		q.Set("encoding", "base64")
	}
	accept := acceptBatches
	switch opts.Encoding {
	case Binary:
		accept = binformat.MediaType
	case JSON:
		accept = mediaJSON
	case NDJSON:
		accept = mediaNDJSON
	}
	resp, err := c.call(ctx, request{method: http.MethodGet, path: partitionPath(topic, partition, "records"), query: q, accept: accept})
	if err != nil {
		return FetchResult{}, err
	}
	return decodeFetch(resp, partition, opts.MaxRecords)
}

// decodeFetch parses a fetch body by its content type.
func decodeFetch(resp *response, partition int32, maxRecords int) (FetchResult, error) {
	mt, _, _ := mime.ParseMediaType(resp.header.Get("Content-Type"))
	switch mt {
	case binformat.BatchesMediaType:
		return decodeBatchesFetch(resp.body, partition, maxRecords)
	case binformat.MediaType:
		return decodeBinaryFetch(resp.body, partition)
	case mediaJSON:
		return decodeJSONFetch(resp.body, partition)
	case mediaNDJSON:
		return decodeNDJSONFetch(resp, partition)
	}
	return FetchResult{}, fmt.Errorf("unexpected content type %q", resp.header.Get("Content-Type"))
}

func decodeBinaryFetch(body []byte, partition int32) (FetchResult, error) {
	f, err := binformat.DecodeFetch(body)
	if err != nil {
		return FetchResult{}, err
	}
	out := FetchResult{NextOffset: f.NextOffset, HighWatermark: f.HighWatermark, LogStartOffset: f.LogStartOffset,
		Records: make([]Record, len(f.Records))}
	for i := range f.Records {
		out.Records[i] = fromBinary(&f.Records[i], partition)
	}
	return out, nil
}

func decodeJSONFetch(body []byte, partition int32) (FetchResult, error) {
	var page struct {
		Records        []recordjson.Record `json:"records"`
		NextOffset     *int64              `json:"next_offset"`
		HighWatermark  *int64              `json:"high_watermark"`
		LogStartOffset *int64              `json:"log_start_offset"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		return FetchResult{}, fmt.Errorf("decode response: %w", err)
	}
	if page.NextOffset == nil || page.HighWatermark == nil || page.LogStartOffset == nil {
		return FetchResult{}, fmt.Errorf("decode response: next_offset, high_watermark or log_start_offset is missing")
	}
	out := FetchResult{NextOffset: *page.NextOffset, HighWatermark: *page.HighWatermark, LogStartOffset: *page.LogStartOffset,
		Records: make([]Record, len(page.Records))}
	for i := range page.Records {
		r, err := recordFrom(&page.Records[i], partition)
		if err != nil {
			return FetchResult{}, err
		}
		out.Records[i] = r
	}
	return out, nil
}

func decodeNDJSONFetch(resp *response, partition int32) (FetchResult, error) {
	var out FetchResult
	for _, f := range []struct {
		header string
		dst    *int64
	}{
		{"Silt-Next-Offset", &out.NextOffset},
		{"Silt-High-Watermark", &out.HighWatermark},
		{"Silt-Log-Start-Offset", &out.LogStartOffset},
	} {
		v, err := strconv.ParseInt(resp.header.Get(f.header), 10, 64)
		if err != nil {
			return FetchResult{}, fmt.Errorf("header %s: %w", f.header, err)
		}
		*f.dst = v
	}
	sc := bufio.NewScanner(bytes.NewReader(resp.body))
	sc.Buffer(nil, len(resp.body)+1)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var j recordjson.Record
		if err := json.Unmarshal(line, &j); err != nil {
			return FetchResult{}, fmt.Errorf("decode response line: %w", err)
		}
		r, err := recordFrom(&j, partition)
		if err != nil {
			return FetchResult{}, err
		}
		out.Records = append(out.Records, r)
	}
	return out, sc.Err()
}

// ListOffsets returns the log start offset and high watermark of a
// partition.
func (c *Client) ListOffsets(ctx context.Context, topic string, partition int32) (Offsets, error) {
	var out struct {
		LogStartOffset *int64 `json:"log_start_offset"`
		HighWatermark  *int64 `json:"high_watermark"`
	}
	err := c.callJSON(ctx, request{method: http.MethodGet, path: partitionPath(topic, partition, "offsets")}, nil, &out)
	if err == nil && (out.LogStartOffset == nil || out.HighWatermark == nil) {
		err = fmt.Errorf("decode response: log_start_offset or high_watermark is missing")
	}
	if err != nil {
		return Offsets{}, fmt.Errorf("list offsets %s/%d: %w", topic, partition, err)
	}
	return Offsets{LogStartOffset: *out.LogStartOffset, HighWatermark: *out.HighWatermark}, nil
}

// OffsetForTimestamp returns the first offset of the partition whose
// record timestamp is at or after ts; found is false when there is none.
func (c *Client) OffsetForTimestamp(ctx context.Context, topic string, partition int32, ts time.Time) (offset int64, found bool, err error) {
	var out struct {
		Offset *int64 `json:"offset"`
	}
	q := url.Values{"timestamp": {strconv.FormatInt(ts.UnixMilli(), 10)}}
	if err := c.callJSON(ctx, request{method: http.MethodGet, path: partitionPath(topic, partition, "offsets"), query: q}, nil, &out); err != nil {
		return 0, false, fmt.Errorf("offset for timestamp %s/%d: %w", topic, partition, err)
	}
	if out.Offset == nil {
		return 0, false, nil
	}
	return *out.Offset, true, nil
}

// topicIDQuery adds topic_id to q (a new one when nil) when id is set.
func topicIDQuery(q url.Values, id int64) url.Values {
	if id == 0 {
		return q
	}
	if q == nil {
		q = url.Values{}
	}
	q.Set("topic_id", strconv.FormatInt(id, 10))
	return q
}

// fetchQuery holds the fetch limits shared by partition and group fetches;
// zero leaves a limit to the agent.
func fetchQuery(maxRecords, maxBytes int, wait time.Duration) url.Values {
	q := url.Values{}
	if maxRecords > 0 {
		q.Set("max_records", strconv.Itoa(maxRecords))
	}
	if maxBytes > 0 {
		q.Set("max_bytes", strconv.Itoa(maxBytes))
	}
	if wait > 0 {
		q.Set("wait_ms", strconv.FormatInt(wait.Milliseconds(), 10))
	}
	return q
}
