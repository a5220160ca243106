package ownership

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	leases         prometheus.Gauge
	claims         prometheus.Counter
	runs           *prometheus.CounterVec
	rewritten      *prometheus.CounterVec
	deleted        *prometheus.CounterVec
	retentionFreed prometheus.Counter
	retentionOver  prometheus.Gauge
	mergePending   prometheus.Gauge
	orphansAdopted prometheus.Counter
	expired        *prometheus.CounterVec
	// compactMapBytes is the size of the last compaction pass's key map.
	compactMapBytes prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		leases: prometheus.NewGauge(prometheus.GaugeOpts{Name: "silt_ownership_leases_held", Help: "Partition leases this agent holds."}),
		claims: prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_ownership_lease_claims_total", Help: "Partition leases claimed."}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silt_janitor_runs_total", Help: "Janitor duty runs by duty and outcome.",
		}, []string{"duty", "outcome"}),
		rewritten: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silt_janitor_rewritten_bytes_total", Help: "Chunk bytes rewritten into new segments, by duty.",
		}, []string{"duty"}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silt_janitor_objects_deleted_total", Help: "Objects deleted, by reason (unreferenced, expired, orphan).",
		}, []string{"reason"}),
		retentionFreed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "silt_janitor_retention_freed_bytes_total", Help: "Chunk bytes dropped from the index by retention.",
		}),
		retentionOver: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "silt_janitor_retention_overdue_bytes", Help: "Bytes past retention in owned partitions at the last visit (lag behind policy).",
		}),
		mergePending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "silt_janitor_merge_pending_chunks", Help: "Small chunks of owned partitions waiting to be merged (lag behind policy).",
		}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silt_janitor_expired_total", Help: "Idle producer ids, their per-partition state, and empty consumer groups expired, by kind.",
		}, []string{"kind"}),
		compactMapBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "silt_janitor_compact_map_bytes", Help: "Estimated bytes of the last compaction pass's map of keys to latest offsets (bounded by --compact-map-bytes).",
		}),
		orphansAdopted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "silt_janitor_orphans_adopted_total", Help: "Objects found in the bucket without a segment row, given one to be deleted after the orphan age.",
		}),
	}
	for _, c := range []prometheus.Collector{m.leases, m.claims, m.runs, m.rewritten, m.deleted, m.retentionFreed, m.retentionOver, m.mergePending, m.orphansAdopted, m.expired, m.compactMapBytes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("ownership metrics: %w", err)
		}
	}
	return m, nil
}
