package agent

import (
	"io"
	"net/http"
	"sync"
	"time"
)

// progressWriter gives every write of a response its own deadline,
// Config.WriteTimeout from the write's start (nginx's send_timeout): a
// client that stops reading holds its connection, and what its response
// pins, for at most that long, while one that reads slowly but steadily
// is never cut, which long-lived streams need. Responses are written in
// pieces (pieceWriter) so that the deadline measures progress.
type progressWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (w *progressWriter) arm() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout)) }

func (w *progressWriter) WriteHeader(code int) {
	w.arm()
	w.ResponseWriter.WriteHeader(code)
}

func (w *progressWriter) Write(b []byte) (int, error) {
	w.arm()
	return w.ResponseWriter.Write(b)
}

// FlushError is what http.ResponseController.Flush calls.
func (w *progressWriter) FlushError() error {
	w.arm()
	return w.rc.Flush()
}

func (w *progressWriter) Flush() { _ = w.FlushError() }

// Unwrap lets http.ResponseController reach the connection.
func (w *progressWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// withWriteDeadlines wraps every response in a progressWriter. A
// deadline left by the previous request on the connection is cleared
// first: the server's own writes (100 Continue) must not inherit it.
func (s *Server) withWriteDeadlines(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.SetWriteDeadline(time.Time{}); err != nil {
			h.ServeHTTP(w, r) // not a network connection (in-process tests)
			return
		}
		h.ServeHTTP(&progressWriter{ResponseWriter: w, rc: rc, timeout: s.cfg.WriteTimeout}, r)
	})
}

// pieceSize is the size of the pieces responses are encoded and written
// in: large enough for few writes, small enough that a response is never
// built whole in memory.
const pieceSize = 32 << 10

var piecePool = sync.Pool{New: func() any { b := make([]byte, 0, 2*pieceSize); return &b }}

// pieceWriter encodes a response into a buffer and writes it out each
// time it holds a piece. After a failed write it drops what it is given;
// err says why.
type pieceWriter struct {
	w   io.Writer
	bp  *[]byte
	buf []byte
	err error
}

func newPieceWriter(w io.Writer) *pieceWriter {
	bp := piecePool.Get().(*[]byte)
	return &pieceWriter{w: w, bp: bp, buf: (*bp)[:0]}
}

// maybeFlush writes the buffer out once it holds a piece.
func (p *pieceWriter) maybeFlush() {
	if len(p.buf) >= pieceSize {
		p.flush()
	}
}

// flush writes out what is buffered.
func (p *pieceWriter) flush() {
	if p.err == nil && len(p.buf) > 0 {
		_, p.err = p.w.Write(p.buf)
	}
	p.buf = p.buf[:0]
}

// write writes b after what is buffered: appended when small, else
// directly, in pieces of at most piece bytes (each write must progress
// within the write timeout).
func (p *pieceWriter) write(b []byte, piece int) {
	if len(b) < pieceSize {
		p.buf = append(p.buf, b...)
		p.maybeFlush()
		return
	}
	p.flush()
	for len(b) > 0 && p.err == nil {
		n := min(len(b), piece)
		_, p.err = p.w.Write(b[:n])
		b = b[n:]
	}
}

// close flushes and recycles the buffer; the writer is not usable after.
func (p *pieceWriter) close() error {
	p.flush()
	if cap(p.buf) <= 4*pieceSize {
		*p.bp = p.buf[:0]
		piecePool.Put(p.bp)
	}
	p.bp, p.buf = nil, nil
	return p.err
}
