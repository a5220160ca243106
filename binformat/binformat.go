package binformat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// MediaType is the content type of binary bodies.
const MediaType = "application/vnd.silt.records.v1"

// Magic opens a produce request; FetchMagic opens a fetch response.
const (
	Magic      = "SLP1"
	FetchMagic = "SLF1"
)

// ErrMalformed reports an undecodable body.
var ErrMalformed = errors.New("binformat: malformed body")

// Header is one record header; Value nil is null.
type Header struct {
	Key   string
	Value []byte
}

// Record is one record of a produce request or fetch response.
type Record struct {
	Partition int32 // produce: -1 lets the agent choose
	Offset    int64 // fetch only
	Timestamp int64 // produce: -1 means the agent's receive time
	Key       []byte
	Value     []byte
	Headers   []Header
}

// Sequence is an idempotent producer's base sequence for one partition.
type Sequence struct {
	Partition    int32
	BaseSequence int32
}

// Request is a produce request.
type Request struct {
	ProducerID int64 // 0: not idempotent
	Sequences  []Sequence
	Records    []Record
}

// AppendRequest encodes r after dst.
func AppendRequest(dst []byte, r *Request) []byte {
	dst = append(dst, Magic...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.ProducerID))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(r.Sequences)))
	for _, s := range r.Sequences {
		dst = binary.BigEndian.AppendUint32(dst, uint32(s.Partition))
		dst = binary.BigEndian.AppendUint32(dst, uint32(s.BaseSequence))
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(r.Records)))
	for i := range r.Records {
		rec := &r.Records[i]
		dst = binary.BigEndian.AppendUint32(dst, uint32(rec.Partition))
		dst = appendRecordBody(dst, rec)
	}
	return dst
}

func appendRecordBody(dst []byte, rec *Record) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(rec.Timestamp))
	dst = appendBytes(dst, rec.Key)
	dst = appendBytes(dst, rec.Value)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(rec.Headers)))
	for _, h := range rec.Headers {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = appendBytes(dst, h.Value)
	}
	return dst
}

func appendBytes(dst, b []byte) []byte {
	if b == nil {
		return binary.BigEndian.AppendUint32(dst, math.MaxUint32) // -1
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

// Limits bound what Decode accepts; zero means no limit.
type Limits struct {
	MaxRecords int
	// MaxHeaders bounds the headers of one record; it is checked before
	// the record's headers are allocated.
	MaxHeaders int
}

type reader struct {
	b   []byte
	lim Limits
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrMalformed, what)
	}
}

func (r *reader) u32(what string) uint32 {
	if r.err != nil || len(r.b) < 4 {
		r.fail("truncated " + what)
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64(what string) uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.fail("truncated " + what)
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) take(n int, what string) []byte {
	if r.err != nil || n < 0 || len(r.b) < n {
		r.fail("truncated " + what)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// nullable reads an int32 length (-1 null) and the bytes.
func (r *reader) nullable(what string) []byte {
	n := int32(r.u32(what + " length"))
	if n == -1 {
		return nil
	}
	if n < -1 {
		r.fail("negative " + what + " length")
		return nil
	}
	return r.take(int(n), what)
}

// count reads a count and checks that at least min bytes per item remain
// and, when max > 0, that there are at most max (else tooMany).
func (r *reader) count(what string, minItem int, max int, tooMany error) int {
	n := r.u32(what)
	if r.err != nil {
		return 0
	}
	if max > 0 && int64(n) > int64(max) {
		r.err = fmt.Errorf("%w: %d %s, at most %d", tooMany, n, what, max)
		return 0
	}
	if int64(n)*int64(minItem) > int64(len(r.b)) {
		r.fail(what + " exceeds the body")
		return 0
	}
	return int(n)
}

// ErrTooMany reports more records than Limits allow.
var ErrTooMany = errors.New("binformat: too many records")

// ErrTooManyHeaders reports a record with more headers than Limits allow.
var ErrTooManyHeaders = errors.New("binformat: too many headers in a record")

// recordBody reads a record body into rec, or only walks it when rec is
// nil, and returns its header count.
func (r *reader) recordBody(rec *Record) int {
	ts := int64(r.u64("timestamp"))
	key := r.nullable("key")
	value := r.nullable("value")
	nh := r.count("headers", 8, r.lim.MaxHeaders, ErrTooManyHeaders)
	if rec == nil {
		for j := 0; j < nh && r.err == nil; j++ {
			r.take(int(r.u32("header key length")), "header key")
			r.nullable("header value")
		}
		return nh
	}
	rec.Timestamp, rec.Key, rec.Value = ts, key, value
	if nh > 0 {
		rec.Headers = make([]Header, nh)
		for j := range rec.Headers {
			kl := r.u32("header key length")
			rec.Headers[j].Key = string(r.take(int(kl), "header key"))
			rec.Headers[j].Value = r.nullable("header value")
		}
	}
	return nh
}

// Count walks a produce request body without allocating, checking its
// layout and lim, and returns its record and header counts: what
// DecodeRequest would build, for callers that budget memory first.
func Count(body []byte, lim Limits) (records, headers int, err error) {
	if len(body) < len(Magic) || string(body[:len(Magic)]) != Magic {
		return 0, 0, fmt.Errorf("%w: missing magic %q", ErrMalformed, Magic)
	}
	r := &reader{b: body[len(Magic):], lim: lim}
	r.u64("producer id")
	ns := r.count("sequences", 8, 1<<20, ErrTooMany)
	r.take(8*ns, "sequences")
	nr := r.count("records", 4+8+4+4+4, lim.MaxRecords, ErrTooMany)
	for i := 0; i < nr && r.err == nil; i++ {
		r.u32("partition")
		headers += r.recordBody(nil)
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Sprintf("%d trailing bytes", len(r.b)))
	}
	if r.err != nil {
		return 0, 0, r.err
	}
	return nr, headers, nil
}

// DecodeRequest parses a produce request body.
func DecodeRequest(body []byte, lim Limits) (*Request, error) {
	if len(body) < len(Magic) || string(body[:len(Magic)]) != Magic {
		return nil, fmt.Errorf("%w: missing magic %q", ErrMalformed, Magic)
	}
	r := &reader{b: body[len(Magic):], lim: lim}
	req := &Request{ProducerID: int64(r.u64("producer id"))}
	ns := r.count("sequences", 8, 1<<20, ErrTooMany)
	if ns > 0 {
		req.Sequences = make([]Sequence, ns)
		for i := range req.Sequences {
			req.Sequences[i] = Sequence{Partition: int32(r.u32("sequence partition")), BaseSequence: int32(r.u32("base sequence"))}
		}
	}
	nr := r.count("records", 4+8+4+4+4, lim.MaxRecords, ErrTooMany)
	if r.err == nil {
		req.Records = make([]Record, nr)
	}
	for i := 0; i < nr && r.err == nil; i++ {
		rec := &req.Records[i]
		rec.Partition = int32(r.u32("partition"))
		r.recordBody(rec)
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Sprintf("%d trailing bytes", len(r.b)))
	}
	if r.err != nil {
		return nil, r.err
	}
	return req, nil
}

// FetchHeaderSize is the size of a fetch response's header.
const FetchHeaderSize = 4 + 8 + 8 + 8 + 4

// FetchRecordSize is the encoded size of rec in a fetch response, so that
// a response can be allocated once.
func FetchRecordSize(rec *Record) int {
	n := 8 + 8 + 4 + len(rec.Key) + 4 + len(rec.Value) + 4
	for _, h := range rec.Headers {
		n += 4 + len(h.Key) + 4 + len(h.Value)
	}
	return n
}

// AppendFetchHeader starts a fetch response: magic, next offset, high
// watermark, log start offset and the record count.
func AppendFetchHeader(dst []byte, next, hwm, logStart int64, count int) []byte {
	dst = append(dst, FetchMagic...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(next))
	dst = binary.BigEndian.AppendUint64(dst, uint64(hwm))
	dst = binary.BigEndian.AppendUint64(dst, uint64(logStart))
	return binary.BigEndian.AppendUint32(dst, uint32(count))
}

// AppendFetchRecord appends one record of a fetch response.
func AppendFetchRecord(dst []byte, rec *Record) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(rec.Offset))
	return appendRecordBody(dst, rec)
}

// FetchResponse is a decoded fetch response.
type FetchResponse struct {
	NextOffset     int64
	HighWatermark  int64
	LogStartOffset int64
	Records        []Record
}

// DecodeFetch parses a fetch response body.
func DecodeFetch(body []byte) (*FetchResponse, error) {
	if len(body) < len(FetchMagic) || string(body[:len(FetchMagic)]) != FetchMagic {
		return nil, fmt.Errorf("%w: missing magic %q", ErrMalformed, FetchMagic)
	}
	r := &reader{b: body[len(FetchMagic):]}
	out := &FetchResponse{
		NextOffset:     int64(r.u64("next offset")),
		HighWatermark:  int64(r.u64("high watermark")),
		LogStartOffset: int64(r.u64("log start offset")),
	}
	n := r.count("records", 8+8+4+4+4, 0, ErrTooMany)
	if r.err == nil {
		out.Records = make([]Record, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		rec := &out.Records[i]
		rec.Offset = int64(r.u64("offset"))
		rec.Partition = -1
		r.recordBody(rec)
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Sprintf("%d trailing bytes", len(r.b)))
	}
	if r.err != nil {
		return nil, r.err
	}
	return out, nil
}
