package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"silt/batcher"
	"silt/binformat"
	"silt/metadata"
	"silt/partitioner"
	"silt/problem"
	"silt/recordjson"
	"silt/segment"
)

// Producer commits records; the batcher implements it. The records' bytes
// may alias the request body, which is recycled once Produce returns: a
// Producer must not keep them past its return, except after returning
// because ctx ended (the body is then left to the garbage collector).
type Producer interface {
	Produce(ctx context.Context, parts []batcher.Part) ([]batcher.Result, error)
}

// Media types of produce bodies.
const (
	MediaJSON   = "application/json"
	MediaNDJSON = "application/x-ndjson"
)

// ProduceRequest is the JSON produce body.
type ProduceRequest struct {
	Records []recordjson.Record `json:"records"`
	// ProducerID > 0 (from POST /v1/producers) makes the request
	// idempotent; Sequences then gives, per partition written, the
	// sequence number of the request's first record in that partition.
	ProducerID int64            `json:"producer_id,omitempty"`
	Sequences  map[string]int32 `json:"sequences,omitempty"`
	// Sequence replaces Sequences on the single-partition route.
	Sequence *int32 `json:"sequence,omitempty"`
	// ExpectedOffset makes the request a conditional append: its records,
	// all of one partition, are written only if that partition's next
	// offset is ExpectedOffset (also the expected_offset query parameter).
	ExpectedOffset *int64 `json:"expected_offset,omitempty"`
}

// produceBody is a ProduceRequest as decoded: pointers tell a null record
// or header, which is refused, from an empty one.
type produceBody struct {
	Records    []*recordBody    `json:"records"`
	ProducerID int64            `json:"producer_id,omitempty"`
	Sequences  map[string]int32 `json:"sequences,omitempty"`
	Sequence   *int32           `json:"sequence,omitempty"`
	// ExpectedOffset: see ProduceRequest.
	ExpectedOffset *int64 `json:"expected_offset,omitempty"`
}

// recordBody is a recordjson.Record as decoded (see produceBody).
type recordBody struct {
	recordjson.Record
	Headers []*recordjson.Header `json:"headers,omitempty"`
}

// RecordOffset is where one produced record landed.
type RecordOffset struct {
	Partition int32 `json:"partition"`
	Offset    int64 `json:"offset"`
}

// ProduceResponse lists each record's partition and offset in request order.
type ProduceResponse struct {
	Offsets []RecordOffset `json:"offsets"`
	// Duplicate is true when the request was an idempotent retry of one
	// already committed: the offsets are the original ones.
	Duplicate bool `json:"duplicate,omitempty"`
}

// inRecord is a parsed record before partitioning.
type inRecord struct {
	partition int32 // -1: choose
	rec       segment.Record
}

// produceInput is a parsed produce request.
type produceInput struct {
	records    []inRecord
	producerID int64
	sequences  map[int32]int32
	// expected, when set, is the conditional append's expected offset.
	expected *int64
}

func (s *Server) produceRoutes(g *echo.Group) {
	g.POST("/topics/:topic/records", s.produce)
	g.POST("/topics/:topic/partitions/:partition/records", s.produce)
}

func mediaType(ct string) string {
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(ct))
	}
	return mt
}

func (s *Server) produce(c echo.Context) error {
	name, err := topicParam(c)
	if err != nil {
		return err
	}
	fixed := int32(-1)
	if c.Param("partition") != "" {
		if fixed, err = partitionParam(c); err != nil {
			return err
		}
	}
	req := c.Request()
	ct, err := bodyMediaType(req)
	if err != nil {
		return err
	}
	if req.ContentLength > s.cfg.MaxRequestBytes {
		return newProblem(http.StatusRequestEntityTooLarge, problem.CodeRequestTooLarge, "request body of %d bytes exceeds %d", req.ContentLength, s.cfg.MaxRequestBytes)
	}
	// Request bodies being read or parsed are bounded too, before the
	// batcher's own bound applies: the request reserves the bytes it has
	// received as they arrive, or is refused with 429. The body must
	// arrive within the body timeout.
	res := s.reserveBody()
	defer res.release()
	liftDeadline := s.bodyDeadline(c)
	body := http.MaxBytesReader(c.Response(), &startedBody{ReadCloser: req.Body, c: c}, s.cfg.MaxRequestBytes)
	var in *produceInput
	switch ct {
	case MediaJSON:
		in, err = s.parseJSON(body, req.ContentLength, fixed >= 0, res, liftDeadline)
	case MediaNDJSON:
		in, err = s.parseNDJSON(&meteredReader{r: body, res: res}, c.QueryParams(), res)
		liftDeadline()
	case binformat.MediaType:
		// The records alias the body buffer until Produce returns.
		var buf *[]byte
		buf, err = readBody(body, req.ContentLength, s.cfg.MaxRequestBytes, res)
		liftDeadline()
		if err == nil {
			in, err = s.parseBinary(*buf, res)
			defer func() {
				if buf != nil {
					putBody(buf)
				}
			}()
			// A Produce that returns because the request's context
			// ended leaves the records with the batcher: keep the
			// buffer out of the pool then.
			defer func() {
				if ctxErr := req.Context().Err(); ctxErr != nil {
					buf = nil
				}
			}()
		}
	default:
		if ct == "" {
			return newProblem(http.StatusUnsupportedMediaType, problem.CodeUnsupportedMediaType,
				"a produce request needs a body and its Content-Type: %s, %s or %s", MediaJSON, MediaNDJSON, binformat.MediaType)
		}
		return newProblem(http.StatusUnsupportedMediaType, problem.CodeUnsupportedMediaType,
			"content type %q is not supported; send %s, %s or %s", ct, MediaJSON, MediaNDJSON, binformat.MediaType)
	}
	if err != nil {
		return s.bodyError(err)
	}
	if err := expectedOffsetParam(c, in); err != nil {
		return err
	}
	if len(in.records) == 0 {
		return badRequest(problem.CodeInvalidRecord, "the request has no records")
	}
	if fixed >= 0 {
		for i := range in.records {
			if p := in.records[i].partition; p >= 0 && p != fixed {
				return badRequest(problem.CodeInvalidRecord, "record %d names partition %d on the route of partition %d", i, p, fixed)
			}
			in.records[i].partition = fixed
		}
		if seq, ok := in.sequences[-1]; ok {
			delete(in.sequences, -1)
			in.sequences[fixed] = seq
		}
	} else if _, ok := in.sequences[-1]; ok {
		return badRequest(problem.CodeInvalidParameter, "sequence is for the single-partition route; use sequences here")
	}
	ctx := req.Context()
	pin, err := topicIDParam(c)
	if err != nil {
		return err
	}
	topic, err := s.pinnedTopic(ctx, name, pin)
	if err != nil {
		return err
	}
	if fixed >= topic.Partitions {
		return notFound(problem.CodePartitionNotFound, "topic %q has %d partitions; there is no partition %d", name, topic.Partitions, fixed)
	}
	parts, where, err := s.partition(topic, in)
	if err != nil {
		return err
	}
	if in.expected != nil {
		if len(parts) != 1 {
			return badRequest(problem.CodeInvalidParameter, "expected_offset needs every record in one partition; these go to %d", len(parts))
		}
		parts[0].CheckOffset, parts[0].ExpectedOffset = true, *in.expected
	}
	results, err := s.deps.Producer.Produce(ctx, parts)
	if err != nil {
		return s.gone(ctx, topic, pin, err)
	}
	resp := ProduceResponse{Offsets: make([]RecordOffset, len(where))}
	for _, r := range results {
		if r.Err != nil {
			return s.gone(ctx, topic, pin, r.Err)
		}
		resp.Duplicate = resp.Duplicate || r.Duplicate
	}
	s.lastFlush.Store(time.Now().UnixMilli())
	for i, w := range where {
		resp.Offsets[i] = RecordOffset{Partition: parts[w.part].Partition, Offset: results[w.part].BaseOffset + int64(w.index)}
	}
	return c.JSON(http.StatusOK, resp)
}

// expectedOffsetParam takes the expected_offset query parameter into in;
// it must agree with the body's field when both are given.
func expectedOffsetParam(c echo.Context, in *produceInput) error {
	raw := c.QueryParam("expected_offset")
	if raw != "" {
		n, err := parseCanonicalInt(raw, 64)
		if err != nil || n < 0 {
			return badRequest(problem.CodeInvalidParameter, "expected_offset=%q must be a non-negative integer", raw)
		}
		if in.expected != nil && *in.expected != n {
			return badRequest(problem.CodeInvalidParameter, "expected_offset is %d in the query and %d in the body", n, *in.expected)
		}
		in.expected = &n
	}
	if in.expected != nil && *in.expected < 0 {
		return badRequest(problem.CodeInvalidParameter, "expected_offset %d must not be negative", *in.expected)
	}
	return nil
}

// bodyError maps the errors of reading and parsing a produce body (size
// limit, budget, timeout, malformed input) to problems: every one is the
// client's doing.
func (s *Server) bodyError(err error) error {
	var p *problem.Details
	if errors.As(err, &p) {
		return err
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return newProblem(http.StatusRequestEntityTooLarge, problem.CodeRequestTooLarge, "request body exceeds %d bytes", s.cfg.MaxRequestBytes)
	}
	if errors.Is(err, errBodyTooLarge) {
		return newProblem(http.StatusRequestEntityTooLarge, problem.CodeRequestTooLarge,
			"the request's records would hold more than the %d bytes produce requests in flight may hold; send fewer records or headers per request", s.cfg.MaxInflightRequestBytes)
	}
	if errors.Is(err, errBodyBackpressure) {
		s.metrics.bodyBackpressure.Inc()
		return newProblem(http.StatusTooManyRequests, problem.CodeBackpressure, "too many produce request bytes in flight; retry shortly")
	}
	if isBodyTimeout(err) {
		s.metrics.bodyTimeouts.Inc()
		return newProblem(http.StatusRequestTimeout, problem.CodeRequestTimeout, "the request body did not arrive within %v", s.cfg.RequestBodyTimeout)
	}
	if errors.Is(err, binformat.ErrTooMany) {
		return newProblem(http.StatusRequestEntityTooLarge, problem.CodeTooManyRecords, "too many records: %s", userDetail(err))
	}
	if errors.Is(err, binformat.ErrTooManyHeaders) {
		return newProblem(http.StatusRequestEntityTooLarge, problem.CodeTooManyHeaders, "a record has too many headers (%s); the limit is %d per record", userDetail(err), s.cfg.MaxRecordHeaders)
	}
	if errors.Is(err, binformat.ErrMalformed) {
		return badRequest(problem.CodeInvalidRecord, "malformed binary body: %s", userDetail(err))
	}
	return readError(err)
}

// position is a request record's part and index within it.
type position struct{ part, index int }

// partition validates sizes and assigns partitions, grouping records into
// one part per partition in first-seen order.
func (s *Server) partition(topic metadata.Topic, in *produceInput) ([]batcher.Part, []position, error) {
	maxRecord := s.cfg.MaxRecordBytes
	if int(topic.Config.MaxMessageBytes) < maxRecord {
		maxRecord = int(topic.Config.MaxMessageBytes)
	}
	now := time.Now().UnixMilli()
	sticky := int32(-1)
	partIdx := map[int32]int{}
	var parts []batcher.Part
	var counts []int
	where := make([]position, len(in.records))
	// Pass 1: validate, pick each record's partition and count per part,
	// so that pass 2 fills slices of the right size.
	for i := range in.records {
		r := &in.records[i]
		if size := segment.RecordSize(&r.rec); size > int64(maxRecord) {
			return nil, nil, newProblem(http.StatusRequestEntityTooLarge, problem.CodeRecordTooLarge,
				"record %d is %d bytes; the limit for topic %q is %d", i, size, topic.Name, maxRecord)
		}
		p := r.partition
		switch {
		case p >= topic.Partitions:
			return nil, nil, badRequest(problem.CodeInvalidRecord, "record %d: topic %q has %d partitions; there is no partition %d", i, topic.Name, topic.Partitions, p)
		case p >= 0:
		case len(r.rec.Key) > 0:
			p = partitioner.ForKey(r.rec.Key, topic.Partitions)
		default:
			if sticky < 0 {
				sticky = s.sticky.Next(topic.Partitions)
			}
			p = sticky
		}
		ts, err := topic.Config.RecordTimestamp(r.rec.Timestamp, now)
		if err != nil {
			return nil, nil, badRequest(problem.CodeInvalidTimestamp, "record %d: timestamp %d is outside the bounds of topic %q (message.timestamp.before.max.ms=%d, message.timestamp.after.max.ms=%d)",
				i, r.rec.Timestamp, topic.Name, topic.Config.TimestampBeforeMaxMs, topic.Config.TimestampAfterMaxMs)
		}
		r.rec.Timestamp = ts
		idx, ok := partIdx[p]
		if !ok {
			idx = len(parts)
			partIdx[p] = idx
			parts = append(parts, batcher.Part{TopicID: topic.ID, Partition: p})
			counts = append(counts, 0)
		}
		where[i].part = idx
		counts[idx]++
	}
	for i := range parts {
		parts[i].Records = make([]segment.Record, 0, counts[i])
	}
	for i := range in.records {
		idx := where[i].part
		where[i].index = len(parts[idx].Records)
		parts[idx].Records = append(parts[idx].Records, in.records[i].rec)
	}
	if in.producerID > 0 {
		for i := range parts {
			seq, ok := in.sequences[parts[i].Partition]
			if !ok {
				return nil, nil, badRequest(problem.CodeInvalidRecord, "producer %d sent records to partition %d without a sequence for it", in.producerID, parts[i].Partition)
			}
			parts[i].ProducerID = in.producerID
			parts[i].BaseSequence = seq
		}
	} else if len(in.sequences) > 0 {
		return nil, nil, badRequest(problem.CodeInvalidRecord, "sequences need a producer_id")
	}
	return parts, where, nil
}

func (s *Server) parseJSON(body io.Reader, contentLength int64, singlePartition bool, res *bodyReservation, bodyRead func()) (*produceInput, error) {
	buf, err := readBody(body, contentLength, s.cfg.MaxRequestBytes, res)
	bodyRead()
	if err != nil {
		return nil, err
	}
	// Count records and headers before decoding: a record over the
	// header cap is refused before its headers exist, and the memory the
	// decoded records will hold besides their bytes is reserved first.
	n := countJSON(*buf, false, s.cfg.MaxRecordHeaders)
	if err := s.checkCounts(n, res, ""); err != nil {
		putBody(buf)
		return nil, err
	}
	// Decoding copies what it keeps (json.RawMessage copies its bytes), so
	// the body can go back to the pool right away.
	var req produceBody
	err = strictUnmarshal(*buf, &req)
	putBody(buf)
	if err != nil {
		return nil, err
	}
	if len(req.Records) > s.cfg.MaxRecordsPerRequest {
		return nil, newProblem(http.StatusRequestEntityTooLarge, problem.CodeTooManyRecords, "%d records in one request; the limit is %d", len(req.Records), s.cfg.MaxRecordsPerRequest)
	}
	in := &produceInput{records: make([]inRecord, len(req.Records)), producerID: req.ProducerID, expected: req.ExpectedOffset}
	for i, r := range req.Records {
		if r == nil {
			return nil, badRequest(problem.CodeInvalidRecord, "records[%d] is null; a record is an object, and a tombstone is one without a value", i)
		}
		if err := convertRecord(r, &in.records[i]); err != nil {
			return nil, badRequest(problem.CodeInvalidRecord, "records[%d]: %v", i, err)
		}
	}
	if in.sequences, err = parseSequences(req.Sequences, req.Sequence, singlePartition); err != nil {
		return nil, err
	}
	if req.ProducerID < 0 {
		return nil, badRequest(problem.CodeInvalidParameter, "producer_id must be positive")
	}
	return in, nil
}

// parseSequences turns the JSON sequence fields into a partition map. On
// the single-partition route, Sequence applies to that partition, which is
// filled in later; it is stored under -1 and moved by the caller.
func parseSequences(m map[string]int32, single *int32, singlePartition bool) (map[int32]int32, error) {
	out := map[int32]int32{}
	if single != nil {
		if !singlePartition {
			return nil, badRequest(problem.CodeInvalidParameter, "sequence is for the single-partition route; use sequences here")
		}
		out[-1] = *single
	}
	for k, v := range m {
		p, err := parseCanonicalInt(k, 32)
		if err != nil || p < 0 {
			return nil, badRequest(problem.CodeInvalidParameter, "sequences key %q is not a partition number", k)
		}
		if v < 0 {
			return nil, badRequest(problem.CodeInvalidParameter, "sequence %d for partition %d is negative", v, p)
		}
		out[int32(p)] = v
	}
	return out, nil
}

func convertRecord(j *recordBody, out *inRecord) error {
	var err error
	out.partition = -1
	if j.Partition != nil {
		if *j.Partition < 0 {
			return fmt.Errorf("partition %d is negative", *j.Partition)
		}
		out.partition = *j.Partition
	}
	if j.Offset != nil {
		return errors.New("offset cannot be set by a producer")
	}
	out.rec.Timestamp = -1
	if j.Timestamp != nil {
		if *j.Timestamp < 0 {
			return fmt.Errorf("timestamp %d is negative", *j.Timestamp)
		}
		out.rec.Timestamp = *j.Timestamp
	}
	if out.rec.Key, err = recordjson.Decode("key", j.Key, j.KeyB64); err != nil {
		return err
	}
	if out.rec.Value, err = recordjson.Decode("value", j.Value, j.ValueB64); err != nil {
		return err
	}
	if len(j.Headers) > 0 {
		out.rec.Headers = make([]segment.Header, len(j.Headers))
		for i, h := range j.Headers {
			if h == nil {
				return fmt.Errorf("headers[%d] is null; a header is an object", i)
			}
			v, err := recordjson.Decode("header value", h.Value, h.ValueB64)
			if err != nil {
				return fmt.Errorf("headers[%d]: %w", i, err)
			}
			out.rec.Headers[i] = segment.Header{Key: h.Key, Value: v}
		}
	}
	return nil
}

func (s *Server) parseNDJSON(body io.Reader, q map[string][]string, res *bodyReservation) (*produceInput, error) {
	sc := bufio.NewScanner(body)
	// A line holds one record: its bytes, base64-expanded, plus JSON.
	sc.Buffer(make([]byte, 64<<10), s.cfg.MaxRecordBytes*2+1<<20)
	in := &produceInput{}
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if len(in.records) >= s.cfg.MaxRecordsPerRequest {
			return nil, newProblem(http.StatusRequestEntityTooLarge, problem.CodeTooManyRecords, "more than %d records in one request", s.cfg.MaxRecordsPerRequest)
		}
		if err := s.checkCounts(countJSON(b, true, s.cfg.MaxRecordHeaders), res, fmt.Sprintf("line %d: ", line)); err != nil {
			return nil, err
		}
		var j *recordBody
		if err := strictUnmarshal(b, &j); err != nil {
			var p *problem.Details
			if errors.As(err, &p) {
				p.Detail = fmt.Sprintf("line %d: %s", line, p.Detail)
			}
			return nil, err
		}
		if j == nil {
			return nil, badRequest(problem.CodeInvalidRecord, "line %d is null; a record is an object, and a tombstone is one without a value", line)
		}
		var r inRecord
		if err := convertRecord(j, &r); err != nil {
			return nil, badRequest(problem.CodeInvalidRecord, "line %d: %v", line, err)
		}
		in.records = append(in.records, r)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, newProblem(http.StatusRequestEntityTooLarge, problem.CodeRecordTooLarge, "line %d is longer than a record may be", line+1)
		}
		return nil, err
	}
	// Idempotence rides in the query: producer_id, and sequences as
	// "partition:sequence,..." (or sequence on the single-partition route).
	var err error
	if v := first(q, "producer_id"); v != "" {
		if in.producerID, err = parseCanonicalInt(v, 64); err != nil || in.producerID <= 0 {
			return nil, badRequest(problem.CodeInvalidParameter, "producer_id %q must be a positive integer", v)
		}
	}
	m := map[string]int32{}
	for _, pair := range strings.Split(first(q, "sequences"), ",") {
		if pair == "" {
			continue
		}
		p, seq, ok := strings.Cut(pair, ":")
		n, err := parseCanonicalInt(seq, 32)
		if !ok || err != nil {
			return nil, badRequest(problem.CodeInvalidParameter, "sequences entry %q must be partition:sequence", pair)
		}
		m[p] = int32(n)
	}
	var single *int32
	if v := first(q, "sequence"); v != "" {
		n, err := parseCanonicalInt(v, 32)
		if err != nil {
			return nil, badRequest(problem.CodeInvalidParameter, "sequence %q must be an integer", v)
		}
		n32 := int32(n)
		single = &n32
	}
	if in.sequences, err = parseSequences(m, single, single != nil); err != nil {
		return nil, err
	}
	return in, nil
}

func first(q map[string][]string, k string) string {
	if v := q[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// parseBinary decodes a binary body; the records' keys, values and
// headers alias raw.
func (s *Server) parseBinary(raw []byte, res *bodyReservation) (*produceInput, error) {
	lim := binformat.Limits{MaxRecords: s.cfg.MaxRecordsPerRequest, MaxHeaders: s.cfg.MaxRecordHeaders}
	records, headers, err := binformat.Count(raw, lim)
	if err != nil {
		return nil, err
	}
	if err := res.add(int64(records)*binRecordCost + int64(headers)*binHeaderCost); err != nil {
		return nil, err
	}
	req, err := binformat.DecodeRequest(raw, lim)
	if err != nil {
		return nil, err
	}
	in := &produceInput{records: make([]inRecord, len(req.Records)), producerID: req.ProducerID}
	if req.ProducerID < 0 {
		return nil, badRequest(problem.CodeInvalidParameter, "producer id must be positive")
	}
	for i := range req.Records {
		r := &req.Records[i]
		if r.Partition < -1 {
			return nil, badRequest(problem.CodeInvalidRecord, "record %d: partition %d is invalid", i, r.Partition)
		}
		ts := r.Timestamp
		if ts < -1 {
			return nil, badRequest(problem.CodeInvalidRecord, "record %d: timestamp %d is negative", i, ts)
		}
		in.records[i] = inRecord{partition: r.Partition, rec: segment.Record{Key: r.Key, Value: r.Value, Timestamp: ts}}
		if len(r.Headers) > 0 {
			hs := make([]segment.Header, len(r.Headers))
			for j, h := range r.Headers {
				hs[j] = segment.Header{Key: h.Key, Value: h.Value}
			}
			in.records[i].rec.Headers = hs
		}
	}
	if len(req.Sequences) > 0 {
		in.sequences = make(map[int32]int32, len(req.Sequences))
		for _, sq := range req.Sequences {
			// As in the JSON forms (found by fuzzing: a negative one
			// reached the commit).
			if sq.Partition < 0 || sq.BaseSequence < 0 {
				return nil, badRequest(problem.CodeInvalidParameter, "sequence %d for partition %d: both must be non-negative", sq.BaseSequence, sq.Partition)
			}
			in.sequences[sq.Partition] = sq.BaseSequence
		}
	}
	return in, nil
}

// hasJSONSpace reports whether raw has a byte that json.Compact could
// remove. Without one, valid JSON is already compact.
func hasJSONSpace(raw []byte) bool {
	for _, c := range raw {
		if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
			return true
		}
	}
	return false
}
