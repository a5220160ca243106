package groups

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"silt/metadata"
)

// LagReader is what the lag collector needs of the metadata store.
type LagReader interface {
	GroupLags(ctx context.Context, limit int) ([]metadata.GroupLag, bool, error)
}

// LagCollector exports silt_group_lag_records{group,topic,partition}: the
// high watermark minus the committed offset of every partition a group
// committed in. It reads Postgres at scrape time, at most once per
// Config.LagCacheTTL, and exports at most Config.LagMaxSeries series
// (silt_group_lag_truncated is 1 when it left some out). Every agent
// reports the same values: aggregate with max, not sum. A failed read
// keeps the previous values and is logged; it never fails the scrape.
type LagCollector struct {
	cfg     Config
	reader  LagReader
	logger  *slog.Logger
	lag     *prometheus.Desc
	trunc   *prometheus.Desc
	errs    prometheus.Counter
	mu      sync.Mutex
	read    time.Time // when lags were read; zero before the first read
	lags    []metadata.GroupLag
	partial bool
}

// NewLagCollector returns a collector; register it on a registry.
func NewLagCollector(cfg Config, reader LagReader, logger *slog.Logger) (*LagCollector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &LagCollector{
		cfg: cfg, reader: reader, logger: logger,
		lag: prometheus.NewDesc("silt_group_lag_records",
			"Records between a consumer group's committed offset and the partition's high watermark.",
			[]string{"group", "topic", "partition"}, nil),
		trunc: prometheus.NewDesc("silt_group_lag_truncated",
			"1 when silt_group_lag_records leaves partitions out to stay under its series bound.", nil, nil),
		errs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "silt_group_lag_read_errors_total",
			Help: "Failed reads of consumer group lag at scrape time.",
		}),
	}, nil
}

// Describe implements prometheus.Collector.
func (c *LagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lag
	ch <- c.trunc
	c.errs.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *LagCollector) Collect(ch chan<- prometheus.Metric) {
	lags, partial := c.current()
	for _, l := range lags {
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(l.Lag),
			l.Group, l.Topic, strconv.Itoa(int(l.Partition)))
	}
	t := 0.0
	if partial {
		t = 1
	}
	ch <- prometheus.MustNewConstMetric(c.trunc, prometheus.GaugeValue, t)
	c.errs.Collect(ch)
}

// current returns the cached lags, reading them again when stale.
// Concurrent scrapes share one read.
func (c *LagCollector) current() ([]metadata.GroupLag, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.read.IsZero() && time.Since(c.read) < c.cfg.LagCacheTTL {
		return c.lags, c.partial
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.LagQueryTimeout)
	defer cancel()
	lags, partial, err := c.reader.GroupLags(ctx, c.cfg.LagMaxSeries)
	if err != nil {
		c.errs.Inc()
		c.logger.Warn("read consumer group lag", "err", err)
		return c.lags, c.partial
	}
	c.read, c.lags, c.partial = time.Now(), lags, partial
	return lags, partial
}
