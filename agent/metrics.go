package agent

import (
	"fmt"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

type serverMetrics struct {
	requests         *prometheus.CounterVec
	latency          *prometheus.HistogramVec
	bodyBackpressure prometheus.Counter
	bodyTimeouts     prometheus.Counter
	// refusedDrained counts the body bytes of refused requests read and
	// discarded so that their answer arrives (drainRefused).
	refusedDrained prometheus.Counter
	// refusedUndrained counts refused bodies left undrained because
	// maxRefusedDrains were being drained.
	refusedUndrained prometheus.Counter
	// inflightRequestBytes is what produce requests reserved of
	// MaxInflightRequestBytes.
	inflightRequestBytes prometheus.Gauge
}

func newServerMetrics(reg prometheus.Registerer) (*serverMetrics, error) {
	m := &serverMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silt_http_requests_total",
			Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "silt_http_request_duration_seconds",
			Help:    "HTTP request latency by route and method.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"route", "method"}),
	}
	m.bodyBackpressure = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "silt_http_produce_body_backpressure_total",
		Help: "Produce requests refused because too many request bytes were in flight.",
	})
	m.bodyTimeouts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "silt_http_request_body_timeouts_total",
		Help: "Produce requests answered 408 because their body did not arrive within the body timeout.",
	})
	m.refusedDrained = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "silt_http_refused_body_drained_bytes_total",
		Help: "Body bytes of requests refused with 429, read and discarded before the answer so that the connection stays open.",
	})
	m.refusedUndrained = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "silt_http_refused_body_drains_skipped_total",
		Help: "Requests refused with 429 whose body was not drained because as many refused bodies as the agent drains at once (32) were being drained; their connection closes if much of the body is left.",
	})
	m.inflightRequestBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "silt_http_produce_inflight_bytes",
		Help: "Produce request bytes being read and parsed (bounded by --max-inflight-request-bytes).",
	})
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.bodyBackpressure, m.bodyTimeouts, m.refusedDrained, m.refusedUndrained, m.inflightRequestBytes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("agent metrics: %w", err)
		}
	}
	return m, nil
}

// observe records request counts and latency per route pattern.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		method := c.Request().Method
		s.metrics.requests.WithLabelValues(route, method, strconv.Itoa(c.Response().Status)).Inc()
		s.metrics.latency.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
		return nil
	}
}
