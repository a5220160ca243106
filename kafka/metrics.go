package kafka

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type metrics struct {
	connections prometheus.Gauge
	refused     prometheus.Counter
	malformed   prometheus.Counter
	unsupported prometheus.Counter
	requests    *prometheus.CounterVec
	seconds     *prometheus.HistogramVec
	produced    *prometheus.CounterVec // batches by path
	waiting     prometheus.Gauge       // fetches parked for data
	// groupWaits: JoinGroup and SyncGroup requests in progress (parked
	// until the group's rebalance reaches them, most of them).
	groupWaits prometheus.Gauge
	// authentications by mechanism and result; unauthenticated counts
	// connections closed for a request before authenticating.
	authentications *prometheus.CounterVec
	unauthenticated prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Server) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "silt_kafka_connections", Help: "Open Kafka connections."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_kafka_connections_refused_total",
			Help: "Kafka connections closed at once because too many were open."}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_kafka_malformed_requests_total",
			Help: "Kafka requests too large or not decodable (the connection was closed)."}),
		unsupported: prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_kafka_unsupported_requests_total",
			Help: "Kafka requests of an API or version not served, answered UNSUPPORTED_VERSION."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "silt_kafka_requests_total",
			Help: "Kafka requests answered, by API."}, []string{"api"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "silt_kafka_request_duration_seconds",
			Help: "Time from reading a Kafka request to writing its response, by API.", Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14)},
			[]string{"api"}),
		produced: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "silt_kafka_produced_batches_total",
			Help: "Record batches produced over Kafka, by how they were stored: as sent (raw) or re-encoded."}, []string{"stored"}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{Name: "silt_kafka_fetches_waiting",
			Help: "Kafka fetches parked until a commit brings min_bytes or max_wait_ms passes."}),
		authentications: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "silt_kafka_authentications_total",
			Help: "Kafka connection authentications, by mechanism (PLAIN, mTLS, ...) and result (success, failure, error)."},
			[]string{"mechanism", "result"}),
		groupWaits: prometheus.NewGauge(prometheus.GaugeOpts{Name: "silt_kafka_group_requests_waiting",
			Help: "Kafka JoinGroup and SyncGroup requests in progress, most of them parked until their group's rebalance answers them."}),
		unauthenticated: prometheus.NewCounter(prometheus.CounterOpts{Name: "silt_kafka_unauthenticated_requests_total",
			Help: "Kafka connections closed for a request other than ApiVersions and SASL's before authenticating."}),
	}
	inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "silt_kafka_inflight_bytes",
		Help: "Kafka request and fetch response bytes in flight (bounded)."},
		func() float64 { return float64(s.inflightBytes()) })
	for _, c := range []prometheus.Collector{m.connections, m.refused, m.malformed, m.unsupported, m.requests, m.seconds, m.produced, m.waiting, inflight, m.authentications, m.unauthenticated, m.groupWaits} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("kafka metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) observe(cl *call) {
	name := kmsg.NameForKey(cl.key)
	if name == "" {
		name = "Unknown"
	}
	m.requests.WithLabelValues(name).Inc()
	m.seconds.WithLabelValues(name).Observe(time.Since(cl.started).Seconds())
}
