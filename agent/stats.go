package agent

import (
	"context"
	"maps"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	dto "github.com/prometheus/client_model/go"
)

// StatsJSON is the body of GET /v1/stats: the answering agent's own
// figures, for the console's overview and janitor pages. Counters count
// from the agent's start; a reader computes rates from two answers of the
// same agent_id (behind a load balancer, successive answers may come from
// different agents).
type StatsJSON struct {
	AgentID   string    `json:"agent_id"`
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
	At        time.Time `json:"at"`
	// LastFlushAt is when this agent last acknowledged a produce request
	// (its records were in a flush that committed); absent before any.
	LastFlushAt *time.Time `json:"last_flush_at,omitempty"`
	// Checks are the readiness checks ("ok" or what failed), as /readyz.
	Checks map[string]string `json:"checks"`
	// Metrics are the agent's Prometheus series of the families the
	// console reads, keyed name{label="value",...} with labels sorted;
	// histograms give their _count and _sum.
	Metrics map[string]float64 `json:"metrics"`
}

// statsFamilies are the metric families /v1/stats returns: throughput,
// object store requests, flushes and the janitor. None carries a key name.
var statsFamilies = []string{
	"silt_batcher_flush_records", "silt_batcher_segment_size_bytes", "silt_batcher_flushes_total",
	"silt_batcher_buffered_bytes", "silt_batcher_backpressure_total", "silt_batcher_flush_duration_seconds",
	"silt_fetch_records_total", "silt_fetch_record_bytes_total", "silt_fetch_cache_bytes",
	"silt_fetch_cache_hits_total", "silt_fetch_cache_misses_total",
	"silt_objectstore_requests_total", "silt_objectstore_read_bytes_total", "silt_objectstore_written_bytes_total",
	"silt_ownership_leases_held",
	"silt_janitor_runs_total", "silt_janitor_rewritten_bytes_total", "silt_janitor_objects_deleted_total",
	"silt_janitor_retention_freed_bytes_total", "silt_janitor_retention_overdue_bytes",
	"silt_janitor_merge_pending_chunks", "silt_janitor_orphans_adopted_total", "silt_janitor_expired_total",
	"silt_janitor_segments_awaiting_deletion", "silt_janitor_segments_awaiting_deletion_bytes",
	"silt_http_requests_total",
}

var statsFamilySet = func() map[string]bool {
	m := make(map[string]bool, len(statsFamilies))
	for _, f := range statsFamilies {
		m[f] = true
	}
	return m
}()

func (s *Server) stats(c echo.Context) error {
	out := StatsJSON{AgentID: s.cfg.AgentID, Version: s.cfg.Version, StartedAt: s.started, At: time.Now().UTC(),
		Checks: map[string]string{}, Metrics: map[string]float64{}}
	if ms := s.lastFlush.Load(); ms > 0 {
		t := time.UnixMilli(ms).UTC()
		out.LastFlushAt = &t
	}
	out.Checks = s.statsChecks(c.Request().Context())
	families, err := s.deps.Gatherer.Gather()
	if err != nil && len(families) == 0 {
		return err
	}
	for _, f := range families {
		if !statsFamilySet[f.GetName()] {
			continue
		}
		for _, m := range f.GetMetric() {
			key := seriesKey(f.GetName(), m.GetLabel())
			switch {
			case m.Counter != nil:
				out.Metrics[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out.Metrics[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out.Metrics[seriesKey(f.GetName()+"_count", m.GetLabel())] = float64(m.GetHistogram().GetSampleCount())
				out.Metrics[seriesKey(f.GetName()+"_sum", m.GetLabel())] = m.GetHistogram().GetSampleSum()
			case m.Untyped != nil:
				out.Metrics[key] = m.GetUntyped().GetValue()
			}
		}
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, out)
}

// statsChecksTTL is how long /v1/stats reuses its readiness checks: every
// open console polls it, and a check may cost an object store request.
const statsChecksTTL = 10 * time.Second

// statsChecks runs the readiness checks, at most once per statsChecksTTL.
func (s *Server) statsChecks(ctx context.Context) map[string]string {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	if s.statsChecked.IsZero() || time.Since(s.statsChecked) >= statsChecksTTL {
		checks := map[string]string{}
		for _, rc := range s.deps.Ready {
			cctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
			err := rc.Check(cctx)
			cancel()
			checks[rc.Name] = "ok"
			if err != nil {
				// What failed, in the words /readyz uses; never a credential.
				checks[rc.Name] = err.Error()
			}
		}
		s.statsLast, s.statsChecked = checks, time.Now()
	}
	return maps.Clone(s.statsLast)
}

// seriesKey is name{a="x",b="y"} with the labels sorted, as Prometheus
// prints a series.
func seriesKey(name string, labels []*dto.LabelPair) string {
	if len(labels) == 0 {
		return name
	}
	ls := make([]string, len(labels))
	for i, l := range labels {
		ls[i] = l.GetName() + `="` + l.GetValue() + `"`
	}
	sort.Strings(ls)
	return name + "{" + strings.Join(ls, ",") + "}"
}
