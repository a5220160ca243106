package agent

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/iotest"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"
)

// readBody returns the body's bytes, whatever the reads' sizes and
// whether the length is announced, with a buffer that never holds more
// than twice what arrived (or 4 KiB) and that the reservation covers.
func TestReadBodyGrowsWithTheBytes(t *testing.T) {
	const limit = 1 << 20
	for _, n := range []int{0, 1, 4095, 4096, 4097, 100_000, limit - 1, limit} {
		data := make([]byte, n)
		_, _ = rand.Read(data)
		for _, announced := range []bool{true, false} {
			for _, oneByte := range []bool{false, true} {
				if oneByte && n > 5000 {
					continue
				}
				cl := int64(-1)
				if announced {
					cl = int64(n)
				}
				var r io.Reader = bytes.NewReader(data)
				if oneByte {
					r = iotest.OneByteReader(r)
				}
				res := &bodyReservation{sem: semaphore.NewWeighted(4 * limit), max: 4 * limit, gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})}
				bp, err := readBody(r, cl, limit, res)
				if err != nil {
					t.Fatalf("%d bytes (announced %v): %v", n, announced, err)
				}
				if !bytes.Equal(*bp, data) {
					t.Fatalf("%d bytes (announced %v): got %d different bytes", n, announced, len(*bp))
				}
				if c := cap(*bp); res.held != int64(c) || c > max(2*n, minBodyBuf) {
					t.Fatalf("%d bytes (announced %v): buffer of %d, reserved %d", n, announced, c, res.held)
				}
				putBody(bp)
				res.release()
			}
		}
	}
}

// A body longer than it announced is read whole all the same (the limit
// is the caller's reader's), and a body past the budget fails.
func TestReadBodyLongerThanAnnouncedAndOverBudget(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 10_000)
	res := &bodyReservation{sem: semaphore.NewWeighted(1 << 20), max: 1 << 20, gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})}
	bp, err := readBody(bytes.NewReader(data), 4096, 1<<20, res)
	if err != nil || !bytes.Equal(*bp, data) {
		t.Fatalf("longer than announced: %d bytes, %v", len(*bp), err)
	}
	res.release()

	sem := semaphore.NewWeighted(16 << 10)
	sem.TryAcquire(8 << 10)
	res = &bodyReservation{sem: sem, max: 16 << 10, gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})}
	if _, err := readBody(bytes.NewReader(data), -1, 1<<20, res); !errors.Is(err, errBodyBackpressure) {
		t.Fatalf("over what is free of the budget: %v", err)
	}
	res.release()
	res = &bodyReservation{sem: semaphore.NewWeighted(8 << 10), max: 8 << 10, gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})}
	if _, err := readBody(bytes.NewReader(data), -1, 1<<20, res); !errors.Is(err, errBodyTooLarge) {
		t.Fatalf("over the whole budget: %v", err)
	}
	res.release()

	// Past the request limit, http.MaxBytesReader's error comes through.
	rec := httptest.NewRecorder()
	res = &bodyReservation{sem: semaphore.NewWeighted(1 << 20), max: 1 << 20, gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})}
	body := http.MaxBytesReader(rec, io.NopCloser(bytes.NewReader(data)), 8192)
	var mbe *http.MaxBytesError
	if _, err := readBody(body, -1, 8192, res); !errors.As(err, &mbe) {
		t.Fatalf("past the limit: %v", err)
	}
}
