package agent

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"silt/binformat"
	"silt/fetch"
	"silt/metadata"
	"silt/problem"
	"silt/recordjson"
)

// Fetcher reads partitions; fetch.Fetcher implements it.
type Fetcher interface {
	Fetch(ctx context.Context, req fetch.Request) (*fetch.Response, error)
	FetchBatches(ctx context.Context, req fetch.Request) (*fetch.BatchResponse, error)
	Offsets(ctx context.Context, topicID int64, partition int32) (metadata.PartitionState, error)
	OffsetForTimestamp(ctx context.Context, topicID int64, partition int32, ts int64) (int64, bool, error)
}

// Fetch defaults and caps.
const (
	defaultMaxRecords = 1000
	maxMaxRecords     = 100_000
	defaultMaxBytes   = 1 << 20
	maxMaxBytes       = 64 << 20
)

// Response headers of NDJSON fetches (the body holds only records).
const (
	HeaderNextOffset     = "Silt-Next-Offset"
	HeaderHighWatermark  = "Silt-High-Watermark"
	HeaderLogStartOffset = "Silt-Log-Start-Offset"
)

func (s *Server) fetchRoutes(g *echo.Group) {
	g.GET("/topics/:topic/partitions/:partition/records", s.fetchRecords)
	g.GET("/topics/:topic/partitions/:partition/stream", s.stream)
	g.GET("/topics/:topic/partitions/:partition/offsets", s.offsets)
}

// partitionParams resolves the :topic and :partition path parameters,
// and the topic_id query parameter that may pin the topic (pin 0: none).
func (s *Server) partitionParams(c echo.Context) (t metadata.Topic, part int32, pin int64, err error) {
	name, err := topicParam(c)
	if err != nil {
		return t, 0, 0, err
	}
	if part, err = partitionParam(c); err != nil {
		return t, 0, 0, err
	}
	if pin, err = topicIDParam(c); err != nil {
		return t, 0, 0, err
	}
	if t, err = s.pinnedTopic(c.Request().Context(), name, pin); err != nil {
		return t, 0, 0, err
	}
	if part >= t.Partitions {
		return t, 0, 0, notFound(problem.CodePartitionNotFound, "topic %q has %d partitions; there is no partition %d", name, t.Partitions, part)
	}
	return t, part, pin, nil
}

// intParam parses an optional integer query parameter within [lo, hi].
func intParam(c echo.Context, name string, def, lo, hi int64) (int64, error) {
	raw := c.QueryParam(name)
	if raw == "" {
		return def, nil
	}
	n, err := parseCanonicalInt(raw, 64)
	if err != nil || n < lo || n > hi {
		return 0, badRequest(problem.CodeInvalidParameter, "%s=%q must be an integer from %d to %d", name, raw, lo, hi)
	}
	return n, nil
}

// resolveOffset turns "earliest", "latest" or a number into an offset.
func (s *Server) resolveOffset(ctx context.Context, raw, def string, topicID int64, part int32) (int64, error) {
	if raw == "" {
		raw = def
	}
	switch raw {
	case "earliest", "latest":
		st, err := s.deps.Fetcher.Offsets(ctx, topicID, part)
		if err != nil {
			return 0, err
		}
		if raw == "earliest" {
			return st.LogStartOffset, nil
		}
		return st.HighWatermark, nil
	}
	n, err := parseCanonicalInt(raw, 64)
	if err != nil || n < 0 {
		return 0, badRequest(problem.CodeInvalidParameter, "offset=%q must be a non-negative integer, earliest or latest", raw)
	}
	return n, nil
}

// encoding is how fetched bytes are rendered in JSON.
type encoding int

const (
	encodingAuto   encoding = iota // JSON text when the bytes are compact valid JSON, else base64
	encodingBase64                 // always base64
)

func encodingParam(c echo.Context) (encoding, error) {
	switch c.QueryParam("encoding") {
	case "", "auto":
		return encodingAuto, nil
	case "base64":
		return encodingBase64, nil
	}
	return 0, badRequest(problem.CodeInvalidParameter, "encoding=%q must be auto or base64", c.QueryParam("encoding"))
}

type fetchParams struct {
	req fetch.Request
	enc encoding
}

func (s *Server) parseFetch(c echo.Context, t metadata.Topic, part int32, defOffset string) (fetchParams, error) {
	var fp fetchParams
	var err error
	fp.req.TopicID, fp.req.Partition = t.ID, part
	maxRecords, err := intParam(c, "max_records", defaultMaxRecords, 1, maxMaxRecords)
	if err != nil {
		return fp, err
	}
	fp.req.MaxRecords = int(maxRecords)
	if fp.req.MaxBytes, err = intParam(c, "max_bytes", defaultMaxBytes, 1, maxMaxBytes); err != nil {
		return fp, err
	}
	waitMs, err := intParam(c, "wait_ms", 0, 0, s.cfg.MaxWait.Milliseconds())
	if err != nil {
		return fp, err
	}
	fp.req.Wait = time.Duration(waitMs) * time.Millisecond
	if fp.enc, err = encodingParam(c); err != nil {
		return fp, err
	}
	fp.req.Offset, err = s.resolveOffset(c.Request().Context(), c.QueryParam("offset"), defOffset, t.ID, part)
	return fp, err
}

// fetchTypes are the fetch body formats besides JSON, the agent's
// preference first.
var fetchTypes = []string{binformat.BatchesMediaType, binformat.MediaType, MediaNDJSON}

// fetchType picks a fetch's body format from Accept: of the formats in
// fetchTypes that it names with a q above 0, the one with the highest q
// (on a tie, the first in fetchTypes); JSON when it names none of them
// (no Accept, */*, application/json).
func fetchType(c echo.Context) string {
	best, bestQ := echo.MIMEApplicationJSON, 0.0
	rank := len(fetchTypes)
	for _, part := range strings.Split(c.Request().Header.Get(echo.HeaderAccept), ",") {
		mt, params, err := mime.ParseMediaType(part)
		if err != nil {
			continue
		}
		q := 1.0
		if v, ok := params["q"]; ok {
			if q, err = strconv.ParseFloat(v, 64); err != nil || q < 0 || q > 1 {
				continue
			}
		}
		i := slices.Index(fetchTypes, mt)
		if i < 0 || q <= 0 {
			continue
		}
		if q > bestQ || q == bestQ && i < rank {
			best, bestQ, rank = mt, q, i
		}
	}
	return best
}

func (s *Server) fetchRecords(c echo.Context) error {
	t, part, pin, err := s.partitionParams(c)
	if err != nil {
		return err
	}
	fp, err := s.parseFetch(c, t, part, "earliest")
	if err != nil {
		return s.gone(c.Request().Context(), t, pin, err)
	}
	mt := fetchType(c)
	if mt == binformat.BatchesMediaType {
		return s.fetchBatches(c, t, pin, fp)
	}
	resp, err := s.deps.Fetcher.Fetch(c.Request().Context(), fp.req)
	if err != nil {
		return s.gone(c.Request().Context(), t, pin, err)
	}
	defer resp.Release()
	w := c.Response()
	h := w.Header()
	// The body is encoded and written in pieces, never built whole; a
	// write that fails (the client went away or stopped reading past the
	// write timeout) ends the response, and the connection with it.
	switch mt {
	case binformat.MediaType:
		var r binformat.Record
		size := binformat.FetchHeaderSize
		for i := range resp.Records {
			toBinRecord(&resp.Records[i], &r)
			size += binformat.FetchRecordSize(&r)
		}
		h.Set(echo.HeaderContentType, binformat.MediaType)
		h.Set(echo.HeaderContentLength, strconv.Itoa(size))
		w.WriteHeader(http.StatusOK)
		pw := newPieceWriter(w)
		pw.buf = binformat.AppendFetchHeader(pw.buf, resp.NextOffset, resp.HighWatermark, resp.LogStartOffset, len(resp.Records))
		for i := range resp.Records {
			toBinRecord(&resp.Records[i], &r)
			pw.buf = binformat.AppendFetchRecord(pw.buf, &r)
			pw.maybeFlush()
		}
		return s.endPieces(pw)
	case MediaNDJSON:
		h.Set(HeaderNextOffset, strconv.FormatInt(resp.NextOffset, 10))
		h.Set(HeaderHighWatermark, strconv.FormatInt(resp.HighWatermark, 10))
		h.Set(HeaderLogStartOffset, strconv.FormatInt(resp.LogStartOffset, 10))
		h.Set(echo.HeaderContentType, MediaNDJSON)
		w.WriteHeader(http.StatusOK)
		pw := newPieceWriter(w)
		for i := range resp.Records {
			pw.buf = appendRecordJSON(pw.buf, &resp.Records[i], fp.enc)
			pw.buf = append(pw.buf, '\n')
			pw.maybeFlush()
		}
		return s.endPieces(pw)
	}
	h.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	w.WriteHeader(http.StatusOK)
	pw := newPieceWriter(w)
	pw.buf = append(pw.buf, `{"records":[`...)
	for i := range resp.Records {
		if i > 0 {
			pw.buf = append(pw.buf, ',')
		}
		pw.buf = appendRecordJSON(pw.buf, &resp.Records[i], fp.enc)
		pw.maybeFlush()
	}
	pw.buf = append(pw.buf, `],"next_offset":`...)
	pw.buf = strconv.AppendInt(pw.buf, resp.NextOffset, 10)
	pw.buf = append(pw.buf, `,"high_watermark":`...)
	pw.buf = strconv.AppendInt(pw.buf, resp.HighWatermark, 10)
	pw.buf = append(pw.buf, `,"log_start_offset":`...)
	pw.buf = strconv.AppendInt(pw.buf, resp.LogStartOffset, 10)
	pw.buf = append(pw.buf, "}\n"...)
	return s.endPieces(pw)
}

// endPieces finishes a response written in pieces. A failed write is
// not the handler's error: the status is sent, and the connection closes.
func (s *Server) endPieces(pw *pieceWriter) error {
	if err := pw.close(); err != nil {
		s.logger.Debug("response cut short", "err", err)
	}
	return nil
}

// batchPiece is the largest piece of stored batch bytes written at once:
// each write must progress within the write timeout.
const batchPiece = 256 << 10

// fetchBatches answers a fetch with the stored batches, as they are but
// for their base offsets (docs/http-binary.md): no record is decoded.
func (s *Server) fetchBatches(c echo.Context, t metadata.Topic, pin int64, fp fetchParams) error {
	resp, err := s.deps.Fetcher.FetchBatches(c.Request().Context(), fp.req)
	if err != nil {
		return s.gone(c.Request().Context(), t, pin, err)
	}
	defer resp.Release()
	w := c.Response()
	h := w.Header()
	size := int64(binformat.BatchesHeaderSize) + int64(binformat.BatchFrameSize*len(resp.Batches)) + resp.Size
	h.Set(echo.HeaderContentType, binformat.BatchesMediaType)
	h.Set(echo.HeaderContentLength, strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	pw := newPieceWriter(w)
	pw.buf = binformat.AppendBatchesHeader(pw.buf, &binformat.BatchesHeader{
		Partition: fp.req.Partition, Offset: fp.req.Offset, NextOffset: resp.NextOffset,
		HighWatermark: resp.HighWatermark, LogStartOffset: resp.LogStartOffset, Count: len(resp.Batches),
	})
	for _, b := range resp.Batches {
		// The stored bytes are shared: the base offset goes out on its
		// own, the rest as it is.
		pw.buf = binformat.AppendBatchFrame(pw.buf, len(b.Bytes))
		pw.buf = binary.BigEndian.AppendUint64(pw.buf, uint64(b.BaseOffset))
		pw.write(b.Bytes[8:], batchPiece)
	}
	return s.endPieces(pw)
}

func toBinRecord(in *fetch.Record, out *binformat.Record) {
	out.Offset, out.Partition, out.Timestamp = in.Offset, -1, in.Timestamp
	out.Key, out.Value = in.Key, in.Value
	out.Headers = out.Headers[:0]
	for _, h := range in.Headers {
		out.Headers = append(out.Headers, binformat.Header{Key: h.Key, Value: h.Value})
	}
}

// appendRecordJSON renders a fetched record as a JSON object.
func appendRecordJSON(dst []byte, r *fetch.Record, enc encoding) []byte {
	dst = append(dst, `{"offset":`...)
	dst = strconv.AppendInt(dst, r.Offset, 10)
	dst = append(dst, `,"timestamp":`...)
	dst = strconv.AppendInt(dst, r.Timestamp, 10)
	dst = appendBytesField(dst, "key", r.Key, enc)
	dst = appendBytesField(dst, "value", r.Value, enc)
	if len(r.Headers) > 0 {
		dst = append(dst, `,"headers":[`...)
		for i, h := range r.Headers {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"key":`...)
			dst = appendJSONString(dst, h.Key)
			dst = appendBytesField(dst, "value", h.Value, enc)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

// appendBytesField writes ,"name":<json> or ,"name_b64":"..." or nothing
// for null.
func appendBytesField(dst []byte, name string, b []byte, enc encoding) []byte {
	if b == nil {
		return dst
	}
	if enc == encodingAuto && recordjson.AsText(b) {
		dst = append(dst, ',', '"')
		dst = append(dst, name...)
		dst = append(dst, '"', ':')
		return append(dst, b...)
	}
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, `_b64":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, '"')
}

func appendJSONString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return append(dst, b...)
}

// offsetsResponse is the body of GET .../offsets.
type offsetsResponse struct {
	LogStartOffset *int64 `json:"log_start_offset,omitempty"`
	HighWatermark  *int64 `json:"high_watermark,omitempty"`
	Timestamp      *int64 `json:"timestamp,omitempty"`
	Offset         *int64 `json:"offset"`
}

func (s *Server) offsets(c echo.Context) error {
	t, part, pin, err := s.partitionParams(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if raw := c.QueryParam("timestamp"); raw != "" {
		ts, err := parseCanonicalInt(raw, 64)
		if err != nil || ts < 0 {
			return badRequest(problem.CodeInvalidParameter, "timestamp=%q must be milliseconds since the epoch", raw)
		}
		off, found, err := s.deps.Fetcher.OffsetForTimestamp(ctx, t.ID, part, ts)
		if err != nil {
			return s.gone(c.Request().Context(), t, pin, err)
		}
		out := offsetsResponse{Timestamp: &ts}
		if found {
			out.Offset = &off
		}
		return c.JSON(http.StatusOK, out)
	}
	st, err := s.deps.Fetcher.Offsets(ctx, t.ID, part)
	if err != nil {
		return s.gone(c.Request().Context(), t, pin, err)
	}
	return c.JSON(http.StatusOK, map[string]int64{"log_start_offset": st.LogStartOffset, "high_watermark": st.HighWatermark})
}

// resumeAfter parses a Last-Event-ID header, the offset of the last
// record a reader got (-1: none), into the offset to resume at.
func resumeAfter(last string) (int64, error) {
	n, err := parseCanonicalInt(last, 64)
	if err != nil || n < -1 || n == math.MaxInt64 {
		return 0, badRequest(problem.CodeInvalidParameter, "Last-Event-ID %q must be an offset", last)
	}
	return n + 1, nil
}

// stream is a live tail over Server-Sent Events: one event per record
// with its offset as id, heartbeat comments while idle, resumable with
// Last-Event-ID, ended cleanly when the agent shuts down.
func (s *Server) stream(c echo.Context) error {
	t, part, pin, err := s.partitionParams(c)
	if err != nil {
		return err
	}
	fp, err := s.parseFetch(c, t, part, "latest")
	if err != nil {
		return s.gone(c.Request().Context(), t, pin, err)
	}
	if last := c.Request().Header.Get("Last-Event-ID"); last != "" {
		if fp.req.Offset, err = resumeAfter(last); err != nil {
			return err
		}
	}
	ctx := c.Request().Context()
	// Fail before the stream starts if the offset is out of range.
	fp.req.Wait = 0
	first, err := s.deps.Fetcher.Fetch(ctx, fp.req)
	if err != nil {
		return s.gone(c.Request().Context(), t, pin, err)
	}
	w := c.Response()
	h := w.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, ": stream of %s/%d from offset %d\n\n", t.Name, part, fp.req.Offset)
	w.Flush()
	fp.req.Wait = s.cfg.SSEHeartbeat
	resp := first
	for {
		// An idle stream holds no buffer: one is taken from the pool for
		// the records of each fetch and given back once they are written.
		var werr error
		if len(resp.Records) > 0 {
			pw := newPieceWriter(w)
			for i := range resp.Records {
				r := &resp.Records[i]
				pw.buf = append(pw.buf, "id: "...)
				pw.buf = strconv.AppendInt(pw.buf, r.Offset, 10)
				pw.buf = append(pw.buf, "\nevent: record\ndata: "...)
				pw.buf = appendRecordJSON(pw.buf, r, fp.enc)
				pw.buf = append(pw.buf, "\n\n"...)
				pw.maybeFlush()
			}
			werr = pw.close()
		} else {
			_, werr = io.WriteString(w, ": keepalive\n\n")
		}
		resp.Release()
		if werr != nil {
			return nil // the client went away, or stopped reading
		}
		w.Flush()
		fp.req.Offset = resp.NextOffset
		select {
		case <-s.stopping:
			fmt.Fprint(w, "event: end\ndata: {\"reason\":\"shutdown\"}\n\n")
			w.Flush()
			return nil
		case <-ctx.Done():
			return nil
		default:
		}
		resp, err = s.deps.Fetcher.Fetch(ctx, fp.req)
		if errors.Is(err, fetch.ErrBackpressure) {
			// Too many response bytes in flight: the stream pauses and
			// tries again rather than ending.
			resp, err = &fetch.Response{NextOffset: fp.req.Offset}, s.pause(ctx, time.Second)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			err = s.gone(c.Request().Context(), t, pin, err)
			p := s.toProblem(err)
			if p.Instance == "" {
				p.Instance = c.Request().URL.Path
			}
			b, _ := json.Marshal(p)
			fmt.Fprintf(w, "event: error\ndata: %s\n\n", b)
			w.Flush()
			var pd *problem.Details
			if !errors.Is(err, fetch.ErrOffsetOutOfRange) && !errors.As(err, &pd) {
				s.logger.Warn("stream ended by error", "topic", t.Name, "partition", part, "err", err)
			}
			return nil
		}
	}
}

// pause waits d, or until the agent stops or ctx ends (its error).
func (s *Server) pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.stopping:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}
