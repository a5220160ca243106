package agent

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"silt/binformat"
	"silt/problem"
	"silt/recordjson"
	"silt/segment"
)

// errBodyBackpressure: the produce request bytes in flight reached
// MaxInflightRequestBytes while this body was being read.
var errBodyBackpressure = errors.New("agent: too many produce request bytes in flight")

// errBodyTooLarge: a produce request needs more than the whole of
// MaxInflightRequestBytes (its body and what its records hold decoded);
// waiting would not help.
var errBodyTooLarge = errors.New("agent: produce request needs more memory than the in-flight bound")

// bodyReservation is one produce request's share of the budget of
// request bytes in flight (Config.MaxInflightRequestBytes). It grows as
// the body's bytes arrive, by the buffer they need, never by what the
// request announces: a connection that sends produce headers and then
// nothing holds a few KiB, whatever its Content-Length.
type bodyReservation struct {
	sem   *semaphore.Weighted
	max   int64 // the semaphore's size
	gauge prometheus.Gauge
	held  int64
}

func (s *Server) reserveBody() *bodyReservation {
	return &bodyReservation{sem: s.bodies, max: s.cfg.MaxInflightRequestBytes, gauge: s.metrics.inflightRequestBytes}
}

// grow makes the reservation at least n bytes, or fails with
// errBodyBackpressure (errBodyTooLarge past the whole budget).
func (r *bodyReservation) grow(n int64) error {
	if n <= r.held {
		return nil
	}
	if n > r.max {
		return errBodyTooLarge
	}
	if !r.sem.TryAcquire(n - r.held) {
		return errBodyBackpressure
	}
	r.gauge.Add(float64(n - r.held))
	r.held = n
	return nil
}

// add grows the reservation by n bytes.
func (r *bodyReservation) add(n int64) error { return r.grow(r.held + n) }

func (r *bodyReservation) release() {
	if r.held > 0 {
		r.sem.Release(r.held)
		r.gauge.Sub(float64(r.held))
		r.held = 0
	}
}

// meteredReader grows a reservation before each read by what the read
// may bring (for bodies that are parsed as they stream, NDJSON).
type meteredReader struct {
	r    io.Reader
	res  *bodyReservation
	read int64
}

func (m *meteredReader) Read(p []byte) (int, error) {
	if err := m.res.grow(m.read + int64(len(p))); err != nil {
		return 0, err
	}
	n, err := m.r.Read(p)
	m.read += int64(n)
	return n, err
}

// Produce bodies are read into pooled buffers of size classes, 4 KiB
// doubling up to 64 MiB, and grown by doubling as bytes arrive: a buffer
// is never larger than twice what was received (or 4 KiB), and its
// capacity is what the request reserves.
const (
	minBodyBuf  = 4 << 10
	bodyClasses = 15 // minBodyBuf << 14 = 64 MiB
)

var bodyPools [bodyClasses]sync.Pool

// bodyBufSize is the capacity of the buffer that holds n bytes: the
// smallest class of at least n, or n itself past the largest class.
func bodyBufSize(n int64) int64 {
	for k := range bodyClasses {
		if c := int64(minBodyBuf) << k; c >= n {
			return c
		}
	}
	return n
}

// getBody returns an empty buffer of capacity size (from bodyBufSize).
func getBody(size int64) *[]byte {
	for k := range bodyClasses {
		if int64(minBodyBuf)<<k == size {
			if bp, ok := bodyPools[k].Get().(*[]byte); ok {
				return bp
			}
			break
		}
	}
	b := make([]byte, 0, size)
	return &b
}

// putBody recycles a buffer from getBody once nothing refers to it.
func putBody(bp *[]byte) {
	c := cap(*bp)
	for k := range bodyClasses {
		if minBodyBuf<<k == c {
			*bp = (*bp)[:0]
			bodyPools[k].Put(bp)
			return
		}
	}
}

// readBody reads r to its end into a pooled buffer that grows with the
// bytes received, up to the request's Content-Length when known (r
// enforces limit itself), reserving each buffer's capacity in res first.
// Give the buffer back with putBody once nothing refers to it.
func readBody(r io.Reader, contentLength, limit int64, res *bodyReservation) (*[]byte, error) {
	ceiling := limit
	if contentLength >= 0 && contentLength <= limit {
		ceiling = max(contentLength, 1)
	}
	// Classes round up; never past what the budget can hold at all.
	class := func(n int64) int64 { return min(bodyBufSize(n), max(res.max, n)) }
	size := class(min(int64(minBodyBuf), ceiling))
	if err := res.grow(size); err != nil {
		return nil, err
	}
	bp := getBody(size)
	buf := *bp
	fail := func(err error) (*[]byte, error) {
		*bp = buf
		putBody(bp)
		return nil, err
	}
	for {
		if len(buf) == cap(buf) {
			var extra []byte
			if int64(cap(buf)) >= ceiling {
				// Full at the announced length (or the limit): the body
				// ends here, at EOF, or r reports it too large.
				var probe [1]byte
				n, err := r.Read(probe[:])
				if n == 0 {
					if err == io.EOF {
						break
					}
					if err != nil {
						return fail(err)
					}
					continue
				}
				// Longer than announced (r is not an HTTP body): read
				// on, up to the limit r enforces.
				extra, ceiling = probe[:1], max(limit, int64(cap(buf))+1)
			}
			next := class(min(2*int64(cap(buf)), ceiling))
			if err := res.grow(next); err != nil {
				return fail(err)
			}
			nb := getBody(next)
			*nb = append(append((*nb)[:0], buf...), extra...)
			*bp = buf
			putBody(bp)
			bp, buf = nb, *nb
			continue
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(err)
		}
	}
	*bp = buf
	return bp, nil
}

// bodyDeadline bounds the time to receive a request body
// (Config.RequestBodyTimeout), from now, and keeps the deadline in the
// echo context for drainRefused; the returned func lifts it once the body
// is read, before the request's slow part (the commit) begins.
func (s *Server) bodyDeadline(c echo.Context) (lift func()) {
	deadline := time.Now().Add(s.cfg.RequestBodyTimeout)
	c.Set(bodyDeadlineKey, deadline)
	rc := http.NewResponseController(c.Response())
	if err := rc.SetReadDeadline(deadline); err != nil {
		return func() {} // not a network connection (in-process tests)
	}
	return func() { _ = rc.SetReadDeadline(time.Time{}) }
}

const (
	// bodyStartedKey marks, in the echo context, a request whose body has
	// begun to arrive: a read of it returned bytes (startedBody).
	bodyStartedKey = "silt.body_started"
	// bodyDeadlineKey holds, in the echo context, the time.Time by which
	// the request's body must have arrived (bodyDeadline).
	bodyDeadlineKey = "silt.body_deadline"
)

// startedBody sets bodyStartedKey once a read of the body returns bytes.
// Only then was a client that sent Expect: 100-continue told to send: a
// request refused before its first read (the budget was full) has had
// nothing from net/http yet.
type startedBody struct {
	io.ReadCloser
	c       echo.Context
	started bool
}

func (b *startedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 && !b.started {
		b.started = true
		b.c.Set(bodyStartedKey, true)
	}
	return n, err
}

const (
	// maxRefusedDrains bounds the refused bodies drained at once; past
	// it a refused body is not drained and its connection closes, as
	// net/http does with a large unread body.
	maxRefusedDrains = 32
	// maxQuotaDrainBytes bounds the drain of a body refused because its
	// key is over a quota: the drained bytes are not charged to the key,
	// so a key over its quota cannot make the agent read bodies of
	// --max-request-bytes for nothing. A longer body is not drained
	// (announced) or drained this far and its connection closed (chunked).
	maxQuotaDrainBytes = 1 << 20
)

// drainRefused reads and discards what is left of the body of a request
// refused with 429 (p), up to MaxRequestBytes (maxQuotaDrainBytes for a
// quota refusal) and within the body's own deadline (bodyDeadline; a
// request refused before its handler began has its RequestBodyTimeout
// from now), before the answer is written. net/http answers a request
// whose body it did not read, closes the connection when more than
// 256 KiB of the body is left, and that close resets the connection of a
// client still sending: it gets a broken pipe or a reset instead of the
// 429 it would retry on. Drained, the answer reaches it and the
// connection stays open, as a Kafka broker reads a whole request before
// it answers it. The drain costs the bytes' transfer, never memory, and
// at most maxRefusedDrains run at once. Bodies announced past the limit
// are not read (413 past MaxRequestBytes); HTTP/2 refuses a stream on its
// own without closing the connection; and a client that asked for
// 100-continue and was not told to send (no read of its body returned
// bytes) has sent nothing. A drain that stops before the body's end (the
// limit, the deadline) answers with Connection: close.
func (s *Server) drainRefused(c echo.Context, p *problem.Details) {
	req := c.Request()
	limit := s.cfg.MaxRequestBytes
	if p.Code == problem.CodeQuotaExceeded {
		limit = min(limit, maxQuotaDrainBytes)
	}
	if req.ProtoMajor != 1 || req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0 ||
		req.ContentLength > limit {
		return
	}
	if strings.EqualFold(req.Header.Get("Expect"), "100-continue") && c.Get(bodyStartedKey) == nil {
		return
	}
	deadline, ok := c.Get(bodyDeadlineKey).(time.Time)
	if !ok {
		deadline = time.Now().Add(s.cfg.RequestBodyTimeout)
	}
	if !time.Now().Before(deadline) {
		// Out of time: nothing more is read of this connection.
		c.Response().Header().Set(echo.HeaderConnection, "close")
		return
	}
	if !s.drains.TryAcquire(1) {
		s.metrics.refusedUndrained.Inc()
		return
	}
	defer s.drains.Release(1)
	rc := http.NewResponseController(c.Response())
	if err := rc.SetReadDeadline(deadline); err != nil {
		return // not a network connection (in-process tests)
	}
	n, err := io.CopyN(io.Discard, req.Body, limit+1)
	_ = rc.SetReadDeadline(time.Time{})
	s.metrics.refusedDrained.Add(float64(n))
	if !errors.Is(err, io.EOF) {
		// The rest of the body must not be read as the next request.
		c.Response().Header().Set(echo.HeaderConnection, "close")
		if err != nil {
			s.logger.Debug("draining a refused body", "err", err)
		}
	}
}

// isBodyTimeout reports whether err is a body read cut by bodyDeadline.
func isBodyTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// What a parsed produce request holds per record and per header besides
// the records' bytes: the wire form's structs, the parsed record and the
// record handed to the batcher. A request reserves it, from counts taken
// before decoding, on top of its body.
var (
	jsonRecordCost = int64(unsafe.Sizeof(recordjson.Record{}) + unsafe.Sizeof(inRecord{}) + unsafe.Sizeof(segment.Record{}))
	jsonHeaderCost = int64(unsafe.Sizeof(recordjson.Header{}) + unsafe.Sizeof(segment.Header{}))
	binRecordCost  = int64(unsafe.Sizeof(binformat.Record{}) + unsafe.Sizeof(inRecord{}) + unsafe.Sizeof(segment.Record{}))
	binHeaderCost  = int64(unsafe.Sizeof(binformat.Header{}) + unsafe.Sizeof(segment.Header{}))
)

// checkCounts applies the header cap and the record limit to what
// countJSON found, before decoding, and reserves what the decoded records
// will hold; where prefixes the problem's detail ("line 3: ").
func (s *Server) checkCounts(n jsonCounts, res *bodyReservation, where string) error {
	if n.over >= 0 {
		if where == "" {
			where = fmt.Sprintf("record %d: ", n.over)
		}
		return newProblem(http.StatusRequestEntityTooLarge, problem.CodeTooManyHeaders,
			"%smore than %d headers; that is the limit per record", where, s.cfg.MaxRecordHeaders)
	}
	if n.records > s.cfg.MaxRecordsPerRequest {
		return newProblem(http.StatusRequestEntityTooLarge, problem.CodeTooManyRecords,
			"%d records in one request; the limit is %d", n.records, s.cfg.MaxRecordsPerRequest)
	}
	return res.add(int64(n.records)*jsonRecordCost + int64(n.headers)*jsonHeaderCost)
}
