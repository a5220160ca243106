package metadata

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	timeouts       *prometheus.CounterVec
	commitLockWait prometheus.Histogram
	notifyFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &metrics{
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silt_metadata_timeouts_total",
			Help: "Statements Postgres ended on a session bound, by kind (lock, statement, idle_in_transaction).",
		}, []string{"kind"}),
		commitLockWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "silt_metadata_commit_lock_wait_seconds",
			Help:    "Time a flush commit waited for its partition row locks, measured inside Postgres.",
			Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 2.5, 5, 10},
		}),
		notifyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "silt_metadata_commit_notify_failures_total",
			Help: "Commit notifications (NOTIFY after a flush commit) that failed; long-polls on their partitions woke at their time out.",
		}),
	}
	for _, c := range []prometheus.Collector{m.timeouts, m.commitLockWait, m.notifyFailures} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, k := range []string{"lock", "statement", "idle_in_transaction"} {
		m.timeouts.WithLabelValues(k)
	}
	return m, nil
}
