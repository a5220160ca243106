package batcher

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	flushes       *prometheus.CounterVec
	commits       prometheus.Counter
	backpressure  prometheus.Counter
	buffered      prometheus.Gauge
	inflight      prometheus.Gauge
	flushSeconds  prometheus.Histogram
	putSeconds    prometheus.Histogram
	commitSeconds prometheus.Histogram
	segmentBytes  prometheus.Histogram
	flushRecords  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	lat := prometheus.ExponentialBuckets(0.001, 2, 16)
	m := &metrics{
		flushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silt_batcher_flushes_total", Help: "Flushes by outcome.",
		}, []string{"outcome"}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "silt_batcher_commit_transactions_total", Help: "Postgres transactions run to commit flushes.",
		}),
		backpressure: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "silt_batcher_backpressure_total", Help: "Produce calls refused because the buffer was full.",
		}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "silt_batcher_buffered_bytes", Help: "Record bytes buffered or in flight.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "silt_batcher_inflight_flushes", Help: "Flushes building, writing or committing.",
		}),
		flushSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "silt_batcher_flush_duration_seconds", Help: "Whole flush: build, PUT, commit.", Buckets: lat,
		}),
		putSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "silt_batcher_put_duration_seconds", Help: "Segment object PUT latency.", Buckets: lat,
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "silt_batcher_commit_duration_seconds", Help: "Commit transaction latency.", Buckets: lat,
		}),
		segmentBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "silt_batcher_segment_size_bytes", Help: "Segment object sizes.",
			Buckets: prometheus.ExponentialBuckets(1024, 4, 10),
		}),
		flushRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "silt_batcher_flush_records", Help: "Records per flush.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 12),
		}),
	}
	for _, c := range []prometheus.Collector{m.flushes, m.commits, m.backpressure, m.buffered, m.inflight,
		m.flushSeconds, m.putSeconds, m.commitSeconds, m.segmentBytes, m.flushRecords} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("batcher metrics: %w", err)
		}
	}
	return m, nil
}
