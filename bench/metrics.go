package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Gatherer yields an agent's metrics; a *prometheus.Registry is one.
type Gatherer interface {
	Gather() ([]*dto.MetricFamily, error)
}

// ScrapeGatherer reads the Prometheus text exposition of an agent's
// /metrics endpoint, for agents in other processes.
type ScrapeGatherer struct {
	URL    string // http://host:port/metrics
	Client *http.Client
}

// Gather scrapes and parses the endpoint.
func (s ScrapeGatherer) Gather() ([]*dto.MetricFamily, error) {
	hc := s.Client
	if hc == nil {
		hc = http.DefaultClient
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", s.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("scrape %s: %s: %s", s.URL, resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", s.URL, err)
	}
	out := make([]*dto.MetricFamily, 0, len(fams))
	for _, f := range fams {
		out = append(out, f)
	}
	return out, nil
}

// counters are the agent metrics the benchmark reads, summed over labels.
type counters struct {
	Puts, Gets, GetRanges      float64 // object store requests, any outcome
	WrittenBytes, ReadBytes    float64 // object bytes
	Commits, Flushes           float64 // commit transactions and flushes
	FlushErrors                float64
	SegmentBytes, Segments     float64 // sum and count of segment sizes
	PutSeconds, PutsTimed      float64 // batcher PUT latency sum and count
	CommitSeconds, CommitTimed float64
	Backpressure               float64
	CPUSeconds                 float64 // the agent's process (the load generator too, in-process)
}

func (c counters) sub(o counters) counters {
	return counters{
		Puts: c.Puts - o.Puts, Gets: c.Gets - o.Gets, GetRanges: c.GetRanges - o.GetRanges,
		WrittenBytes: c.WrittenBytes - o.WrittenBytes, ReadBytes: c.ReadBytes - o.ReadBytes,
		Commits: c.Commits - o.Commits, Flushes: c.Flushes - o.Flushes, FlushErrors: c.FlushErrors - o.FlushErrors,
		SegmentBytes: c.SegmentBytes - o.SegmentBytes, Segments: c.Segments - o.Segments,
		PutSeconds: c.PutSeconds - o.PutSeconds, PutsTimed: c.PutsTimed - o.PutsTimed,
		CommitSeconds: c.CommitSeconds - o.CommitSeconds, CommitTimed: c.CommitTimed - o.CommitTimed,
		Backpressure: c.Backpressure - o.Backpressure,
		CPUSeconds:   c.CPUSeconds - o.CPUSeconds,
	}
}

// readCounters gathers g once.
func readCounters(g Gatherer) (counters, error) {
	var c counters
	if g == nil {
		return c, nil
	}
	fams, err := g.Gather()
	if err != nil {
		return c, err
	}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			switch f.GetName() {
			case "silt_objectstore_requests_total":
				switch label(m, "op") {
				case "put":
					c.Puts += m.GetCounter().GetValue()
				case "get":
					c.Gets += m.GetCounter().GetValue()
				case "get_range":
					c.GetRanges += m.GetCounter().GetValue()
				}
			case "silt_objectstore_written_bytes_total":
				c.WrittenBytes += m.GetCounter().GetValue()
			case "silt_objectstore_read_bytes_total":
				c.ReadBytes += m.GetCounter().GetValue()
			case "silt_batcher_commit_transactions_total":
				c.Commits += m.GetCounter().GetValue()
			case "silt_batcher_flushes_total":
				c.Flushes += m.GetCounter().GetValue()
				if label(m, "outcome") != "ok" {
					c.FlushErrors += m.GetCounter().GetValue()
				}
			case "silt_batcher_segment_size_bytes":
				c.SegmentBytes += m.GetHistogram().GetSampleSum()
				c.Segments += float64(m.GetHistogram().GetSampleCount())
			case "silt_batcher_put_duration_seconds":
				c.PutSeconds += m.GetHistogram().GetSampleSum()
				c.PutsTimed += float64(m.GetHistogram().GetSampleCount())
			case "silt_batcher_commit_duration_seconds":
				c.CommitSeconds += m.GetHistogram().GetSampleSum()
				c.CommitTimed += float64(m.GetHistogram().GetSampleCount())
			case "silt_batcher_backpressure_total":
				c.Backpressure += m.GetCounter().GetValue()
			case "process_cpu_seconds_total":
				c.CPUSeconds += m.GetCounter().GetValue()
			}
		}
	}
	return c, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// metricsURL is the /metrics URL of an agent's base URL.
func metricsURL(base string) string { return strings.TrimSuffix(base, "/") + "/metrics" }
