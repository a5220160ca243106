package fetch

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	hits, misses, evictions prometheus.Counter
	gets, readBytes         *prometheus.CounterVec
	spanHits, spanRefused   prometheus.Counter
	spanEvictions           prometheus.Counter
	records, bytes          prometheus.Counter
	waits                   prometheus.Counter
	backpressure            prometheus.Counter
	batchHits, batchMisses  prometheus.Counter
	batchBytes              prometheus.Counter
	seeded                  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, f *Fetcher) (*metrics, error) {
	m := &metrics{
		hits:      prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_fetch_cache_hits_total", Help: "Decoded-chunk cache hits."}),
		misses:    prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_fetch_cache_misses_total", Help: "Decoded-chunk cache misses."}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_fetch_cache_evictions_total", Help: "Decoded chunks evicted from the cache."}),
		gets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silt_fetch_object_reads_total", Help: "Object reads (GETs) by kind: range (a fetch's own coalesced range), whole (a small fresh object for tail reads), span (a whole object, or a span of one, read once for catch-up reads) or ahead (a span read ahead of the catch-up fetch that will want it).",
		}, []string{"kind"}),
		readBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silt_fetch_object_read_bytes_total", Help: "Bytes read from objects, by the kinds of silt_fetch_object_reads_total.",
		}, []string{"kind"}),
		spanHits: prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_fetch_span_hits_total",
			Help: "Object reads of a fetch served by a span of the object-span cache held or being read."}),
		spanRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_fetch_span_refused_total",
			Help: "Spans a catch-up read (or read-ahead) wanted but the object-span cache had no room for (--object-cache-bytes)."}),
		spanEvictions: prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_fetch_span_evictions_total",
			Help: "Spans dropped from the object-span cache."}),
		records: prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_fetch_records_total", Help: "Records returned by fetches."}),
		bytes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_fetch_record_bytes_total", Help: "Record bytes returned by fetches."}),
		waits:   prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_fetch_waits_total", Help: "Times a long-poll parked waiting for a commit."}),
		backpressure: prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_fetch_backpressure_total",
			Help: "Fetches refused because the response bytes in flight were at their bound."}),
		batchHits: prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_fetch_batch_cache_hits_total",
			Help: "Stored-batch cache hits (batches served as they are stored)."}),
		batchMisses: prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_fetch_batch_cache_misses_total",
			Help: "Stored-batch cache misses."}),
		batchBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_fetch_batch_bytes_total",
			Help: "Stored-batch bytes returned as they are stored (Kafka fetch)."}),
		seeded: prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_fetch_objects_seeded_total",
			Help: "Flush segments this agent stored and kept in the object-span cache for its tail readers (no GET needed)."}),
	}
	cacheBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "silt_fetch_cache_bytes", Help: "Bytes held by the decoded-chunk cache."},
		func() float64 { return float64(f.chunks.bytes()) })
	objectBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "silt_fetch_object_cache_bytes",
		Help: "Bytes held by the object-span cache (whole fresh objects for tail reads, spans for catch-up reads), evicted spans still in use included."},
		func() float64 { return float64(f.spans.bytes()) })
	inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "silt_fetch_inflight_bytes",
		Help: "Bytes of fetch responses being read or written (bounded by --max-inflight-fetch-bytes)."},
		func() float64 { return float64(f.inflight.inUse()) })
	batchCacheBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "silt_fetch_batch_cache_bytes", Help: "Bytes held by the stored-batch cache."},
		func() float64 { return float64(f.raw.bytes()) })
	for _, c := range []prometheus.Collector{m.hits, m.misses, m.evictions, m.gets, m.readBytes, m.spanHits, m.spanRefused, m.spanEvictions,
		m.records, m.bytes, m.waits, m.backpressure, m.batchHits, m.batchMisses, m.batchBytes, m.seeded, cacheBytes, objectBytes, inflight, batchCacheBytes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("fetch metrics: %w", err)
		}
	}
	return m, nil
}
