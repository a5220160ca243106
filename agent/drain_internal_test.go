package agent

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"silt/problem"
)

// deadlineWriter is a response writer that, as a network connection's
// does, takes read deadlines: it records them.
type deadlineWriter struct {
	*httptest.ResponseRecorder
	mu        sync.Mutex
	deadlines []time.Time
}

func (w *deadlineWriter) SetReadDeadline(t time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.deadlines = append(w.deadlines, t)
	return nil
}

func (w *deadlineWriter) recorded() []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Time(nil), w.deadlines...)
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n.Add(int64(n))
	return n, err
}

func drainSetup(t *testing.T) *Server {
	t.Helper()
	s, err := New(DefaultConfig(), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// refused is a produce request with body of length bytes (chunked when
// length < 0), as its 429 finds it.
func refused(s *Server, body io.Reader, length int64) (echo.Context, *deadlineWriter, *countingReader) {
	req := httptest.NewRequest(http.MethodPost, "/v1/topics/t/records", nil)
	cr := &countingReader{r: body}
	req.Body, req.ContentLength = io.NopCloser(cr), length
	w := &deadlineWriter{ResponseRecorder: httptest.NewRecorder()}
	return s.echo.NewContext(req, w), w, cr
}

var (
	backpressure = newProblem(http.StatusTooManyRequests, problem.CodeBackpressure, "busy")
	overQuota    = newProblem(http.StatusTooManyRequests, problem.CodeQuotaExceeded, "over quota")
)

// The drain of a refused body ends at the body's own deadline, set when
// its handler began: a body refused late gets no more time than one that
// was not, and one refused past its deadline is not read at all.
func TestDrainEndsAtTheBodysDeadline(t *testing.T) {
	s := drainSetup(t)
	c, w, cr := refused(s, bytes.NewReader(make([]byte, 1000)), 1000)
	lift := s.bodyDeadline(c)
	lift()
	s.drainRefused(c, backpressure)
	d := w.recorded()
	if len(d) != 4 || d[1] != (time.Time{}) || d[3] != (time.Time{}) {
		t.Fatalf("deadlines %v: want the body's, lifted, the drain's, lifted", d)
	}
	if !d[2].Equal(d[0]) {
		t.Fatalf("the drain's deadline is %v, %v after the body's", d[2], d[2].Sub(d[0]))
	}
	if cr.n.Load() != 1000 || w.Header().Get(echo.HeaderConnection) != "" {
		t.Fatalf("drained %d of 1000 bytes, Connection %q", cr.n.Load(), w.Header().Get(echo.HeaderConnection))
	}

	c, w, cr = refused(s, bytes.NewReader(make([]byte, 1000)), 1000)
	c.Set(bodyDeadlineKey, time.Now().Add(-time.Second))
	s.drainRefused(c, backpressure)
	if cr.n.Load() != 0 || w.Header().Get(echo.HeaderConnection) != "close" {
		t.Fatalf("a body past its deadline: %d bytes drained, Connection %q", cr.n.Load(), w.Header().Get(echo.HeaderConnection))
	}
}

// A body refused because its key is over a quota is drained up to
// maxQuotaDrainBytes only: one announced longer is not read, a chunked
// one is read that far and its connection closed. A body refused for
// backpressure is drained up to MaxRequestBytes.
func TestQuotaRefusalDrainIsCapped(t *testing.T) {
	s := drainSetup(t)
	const big = 3 << 20
	for _, tc := range []struct {
		name   string
		p      *problem.Details
		length int64
		read   int64
		close  bool
	}{
		{"quota, announced", overQuota, big, 0, false},
		{"quota, chunked", overQuota, -1, maxQuotaDrainBytes + 1, true},
		{"quota, small", overQuota, 100 << 10, 100 << 10, false},
		{"backpressure, announced", backpressure, big, big, false},
		{"backpressure, chunked", backpressure, -1, big, false},
	} {
		n := int64(big) // a chunked body's bytes
		if tc.length >= 0 {
			n = tc.length
		}
		c, w, cr := refused(s, bytes.NewReader(make([]byte, n)), tc.length)
		s.drainRefused(c, tc.p)
		if got := cr.n.Load(); got != tc.read {
			t.Errorf("%s: drained %d bytes, want %d", tc.name, got, tc.read)
		}
		if got := w.Header().Get(echo.HeaderConnection) == "close"; got != tc.close {
			t.Errorf("%s: Connection: close is %v, want %v", tc.name, got, tc.close)
		}
	}
}

// blockingBody hands out one byte, then blocks until it is closed.
type blockingBody struct {
	first   chan struct{} // closed once the first byte is read
	release chan struct{}
	once    sync.Once
}

func (b *blockingBody) Read(p []byte) (int, error) {
	first := false
	b.once.Do(func() { first = true })
	if first {
		p[0] = 'x'
		close(b.first)
		return 1, nil
	}
	<-b.release
	return 0, io.EOF
}

// At most maxRefusedDrains refused bodies are drained at once: past it,
// a refused body is left unread (its connection closes as net/http
// closes one with a large unread body).
func TestConcurrentDrainsAreBounded(t *testing.T) {
	s := drainSetup(t)
	release := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(release)
	for range maxRefusedDrains {
		b := &blockingBody{first: make(chan struct{}), release: release}
		c, _, _ := refused(s, b, 1<<20)
		wg.Go(func() { s.drainRefused(c, backpressure) })
		select {
		case <-b.first:
		case <-time.After(30 * time.Second):
			t.Fatal("a drain did not start")
		}
	}
	c, _, cr := refused(s, bytes.NewReader(make([]byte, 1000)), 1000)
	s.drainRefused(c, backpressure)
	if cr.n.Load() != 0 {
		t.Fatalf("%d drains at once: the next one read %d bytes", maxRefusedDrains, cr.n.Load())
	}
}
