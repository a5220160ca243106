package objectstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Operation labels used by Instrument.
const (
	opPut      = "put"
	opGet      = "get"
	opGetRange = "get_range"
	opStat     = "stat"
	opList     = "list"
	opDelete   = "delete"
)

// Outcome labels used by Instrument.
const (
	outcomeOK             = "ok"
	outcomeNotExist       = "not_exist"
	outcomeExists         = "exists"
	outcomeBucketNotExist = "bucket_not_exist"
	outcomeInvalidRange   = "invalid_range"
	outcomeInvalidKey     = "invalid_key"
	outcomeCanceled       = "canceled"
	outcomeDeadline       = "deadline_exceeded"
	outcomeStopped        = "stopped" // List ended by an error from fn
	outcomeError          = "error"
)

// metrics are the collectors shared by every Instrument on one registerer.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	read     *prometheus.CounterVec
	written  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) metrics {
	return metrics{
		requests: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silt_objectstore_requests_total",
			Help: "Object store calls by backend, operation and outcome.",
		}, []string{"backend", "op", "outcome"})),
		duration: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "silt_objectstore_request_duration_seconds",
			Help: "Object store call latency by backend and operation; for get and get_range, until the body is open.",
			// 1 ms to about 33 s.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"backend", "op"})),
		read: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silt_objectstore_read_bytes_total",
			Help: "Bytes read by callers from object bodies.",
		}, []string{"backend"})),
		written: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silt_objectstore_written_bytes_total",
			Help: "Bytes consumed by puts from their readers.",
		}, []string{"backend"})),
	}
}

// register registers c with reg, or returns the equal collector already
// registered there. Any other registration error is a programming error
// (such as a clashing metric of another shape) and panics, as
// prometheus.MustRegister does.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic(fmt.Sprintf("objectstore: register metrics: %v", err))
}

// Instrument returns a Bucket that records Prometheus metrics for b under
// the label backend="<backend>":
//
//   - silt_objectstore_requests_total{backend,op,outcome}
//   - silt_objectstore_request_duration_seconds{backend,op}
//   - silt_objectstore_read_bytes_total{backend}, counted as callers read
//     bodies
//   - silt_objectstore_written_bytes_total{backend}, counted as Put reads
//     its reader
//
// op is put, get, get_range, stat, list or delete; outcome is ok,
// not_exist, exists, bucket_not_exist, invalid_range, invalid_key,
// canceled, deadline_exceeded, stopped (a List ended by its callback) or
// error. Instrumenting several buckets with one registerer is fine: they
// share the collectors. A nil reg records into unregistered collectors.
func Instrument(b Bucket, reg prometheus.Registerer, backend string) Bucket {
	m := newMetrics(reg)
	in := &instrumented{
		b:        b,
		requests: m.requests.MustCurryWith(prometheus.Labels{"backend": backend}),
		duration: m.duration.MustCurryWith(prometheus.Labels{"backend": backend}),
		read:     m.read.WithLabelValues(backend),
		written:  m.written.WithLabelValues(backend),
	}
	// Export zeros for the common series so rates work from the start.
	for _, op := range []string{opPut, opGet, opGetRange, opStat, opList, opDelete} {
		in.requests.WithLabelValues(op, outcomeOK)
		in.duration.WithLabelValues(op)
	}
	return in
}

type instrumented struct {
	b        Bucket
	requests *prometheus.CounterVec
	duration prometheus.ObserverVec
	read     prometheus.Counter
	written  prometheus.Counter
}

func outcome(err error) string {
	switch {
	case err == nil:
		return outcomeOK
	case errors.Is(err, ErrNotExist):
		return outcomeNotExist
	case errors.Is(err, ErrExists):
		return outcomeExists
	case errors.Is(err, ErrBucketNotExist):
		return outcomeBucketNotExist
	case errors.Is(err, ErrInvalidRange):
		return outcomeInvalidRange
	case errors.Is(err, ErrInvalidKey):
		return outcomeInvalidKey
	case errors.Is(err, context.Canceled):
		return outcomeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return outcomeDeadline
	default:
		return outcomeError
	}
}

func (in *instrumented) observe(op string, start time.Time, outcome string) {
	in.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	in.requests.WithLabelValues(op, outcome).Inc()
}

func (in *instrumented) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) error {
	start := time.Now()
	err := in.b.Put(ctx, key, &countingReader{r: r, c: in.written}, size, opts)
	in.observe(opPut, start, outcome(err))
	return err
}

func (in *instrumented) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := in.b.Get(ctx, key)
	in.observe(opGet, start, outcome(err))
	if err != nil {
		return nil, err
	}
	return &countingReadCloser{countingReader{r: rc, c: in.read}, rc}, nil
}

func (in *instrumented) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := in.b.GetRange(ctx, key, offset, length)
	in.observe(opGetRange, start, outcome(err))
	if err != nil {
		return nil, err
	}
	return &countingReadCloser{countingReader{r: rc, c: in.read}, rc}, nil
}

func (in *instrumented) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	start := time.Now()
	info, err := in.b.Stat(ctx, key)
	in.observe(opStat, start, outcome(err))
	return info, err
}

func (in *instrumented) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	start := time.Now()
	var fnErr error
	err := in.b.List(ctx, prefix, func(info ObjectInfo) error {
		fnErr = fn(info)
		return fnErr
	})
	o := outcome(err)
	if err != nil && fnErr != nil && errors.Is(err, fnErr) {
		o = outcomeStopped
	}
	in.observe(opList, start, o)
	return err
}

func (in *instrumented) Delete(ctx context.Context, key string) error {
	start := time.Now()
	err := in.b.Delete(ctx, key)
	in.observe(opDelete, start, outcome(err))
	return err
}

func (in *instrumented) Capabilities() Capabilities { return in.b.Capabilities() }

func (in *instrumented) Name() string { return in.b.Name() }

type countingReader struct {
	r io.Reader
	c prometheus.Counter
}

func (cr *countingReader) Read(p []byte) (int, error) {
	n, err := cr.r.Read(p)
	if n > 0 {
		cr.c.Add(float64(n))
	}
	return n, err
}

type countingReadCloser struct {
	countingReader
	closer io.Closer
}

func (c *countingReadCloser) Close() error { return c.closer.Close() }
