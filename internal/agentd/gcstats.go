package agentd

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gcReader counts the segment objects awaiting deletion.
type gcReader interface {
	SegmentsAwaitingDeletion(ctx context.Context) (count, bytes int64, err error)
}

// gcCollector exports silt_janitor_segments_awaiting_deletion and its
// _bytes twin: the cluster's objects that nothing indexes and the janitor
// has yet to delete. It reads Postgres at scrape time, at most once per
// ttl; every agent reports the same values (aggregate with max). A failed
// read keeps the previous values.
type gcCollector struct {
	reader  gcReader
	logger  *slog.Logger
	ttl     time.Duration
	count   *prometheus.Desc
	bytes   *prometheus.Desc
	mu      sync.Mutex
	read    time.Time
	n, size int64
}

func newGCCollector(reader gcReader, logger *slog.Logger, ttl time.Duration) *gcCollector {
	return &gcCollector{reader: reader, logger: logger, ttl: ttl,
		count: prometheus.NewDesc("silt_janitor_segments_awaiting_deletion",
			"Segment objects of the cluster that nothing indexes and the janitor has yet to delete (read from Postgres; the same on every agent).", nil, nil),
		bytes: prometheus.NewDesc("silt_janitor_segments_awaiting_deletion_bytes",
			"Bytes of the segment objects awaiting deletion.", nil, nil),
	}
}

func (c *gcCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.count
	ch <- c.bytes
}

func (c *gcCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if c.read.IsZero() || time.Since(c.read) >= c.ttl {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		n, size, err := c.reader.SegmentsAwaitingDeletion(ctx)
		cancel()
		if err != nil {
			c.logger.Warn("count segments awaiting deletion", "err", err)
		} else {
			c.read, c.n, c.size = time.Now(), n, size
		}
	}
	n, size, ok := c.n, c.size, !c.read.IsZero()
	c.mu.Unlock()
	if !ok {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.count, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(size))
}
