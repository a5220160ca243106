package fetch

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	hits, misses, evictions prometheus.Counter
	gets                    *prometheus.CounterVec
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
			Name: "silt_fetch_object_reads_total", Help: "Object reads by kind: a coalesced range, a whole small object (tail reads), or a whole object shared by catch-up reads.",
		}, []string{"kind"}),
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
			Help: "Flush segments this agent stored and kept in the whole-object cache for its tail readers (no GET needed)."}),
	}
	cacheBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "silt_fetch_cache_bytes", Help: "Bytes held by the decoded-chunk cache."},
		func() float64 { return float64(f.chunks.bytes()) })
	objectBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "silt_fetch_object_cache_bytes", Help: "Bytes held by the whole-object cache."},
		func() float64 { return float64(f.whole.bytes()) })
	inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "silt_fetch_inflight_bytes",
		Help: "Bytes of fetch responses being read or written (bounded by --max-inflight-fetch-bytes)."},
		func() float64 { return float64(f.inflight.inUse()) })
	sharedBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "silt_fetch_shared_object_bytes",
		Help: "Bytes of whole objects read once for several partitions' catch-up reads, held in the in-flight bound until they have read them."},
		func() float64 { return float64(f.share.heldBytes()) })
	batchCacheBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "silt_fetch_batch_cache_bytes", Help: "Bytes held by the stored-batch cache."},
		func() float64 { return float64(f.raw.bytes()) })
	for _, c := range []prometheus.Collector{m.hits, m.misses, m.evictions, m.gets, m.records, m.bytes, m.waits, m.backpressure,
		m.batchHits, m.batchMisses, m.batchBytes, m.seeded, cacheBytes, objectBytes, inflight, sharedBytes, batchCacheBytes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("fetch metrics: %w", err)
		}
	}
	return m, nil
}
