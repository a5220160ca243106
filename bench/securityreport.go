package bench

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
)

// SecurityReport compares runs of one workload by how the agent is
// reached: anonymous over HTTP, with keys, with keys over TLS.
type SecurityReport struct {
	Runs  []*RunResult      `json:"runs"`
	Modes []SecurityFigures `json:"modes"`
}

// SecurityFigures are one mode's medians over its runs, and their change
// against the first mode's (usually none).
type SecurityFigures struct {
	Mode          string  `json:"mode"`
	Runs          int     `json:"runs"`
	RecordsPerSec float64 `json:"records_per_sec"`
	MBPerSec      float64 `json:"mb_per_sec"`
	P50Ms         float64 `json:"p50_ms"`
	P99Ms         float64 `json:"p99_ms"`
	// ThroughputChange and P99Change are relative to the first mode:
	// -0.03 is 3% less throughput (or a 3% lower p99).
	ThroughputChange float64 `json:"throughput_change"`
	P99Change        float64 `json:"p99_change"`
}

// NewSecurityReport summarizes runs in the order their modes first
// appear.
func NewSecurityReport(runs []*RunResult) *SecurityReport {
	r := &SecurityReport{Runs: runs}
	var order []string
	byMode := map[string][]*RunResult{}
	for _, run := range runs {
		if _, ok := byMode[run.Security]; !ok {
			order = append(order, run.Security)
		}
		byMode[run.Security] = append(byMode[run.Security], run)
	}
	for _, m := range order {
		rs := byMode[m]
		f := SecurityFigures{Mode: m, Runs: len(rs)}
		f.RecordsPerSec = median(rs, func(x *RunResult) float64 { return x.Produce.RecordsPerSec })
		f.MBPerSec = median(rs, func(x *RunResult) float64 { return x.Produce.MBPerSec })
		f.P50Ms = median(rs, func(x *RunResult) float64 { return x.Produce.Latency.P50 })
		f.P99Ms = median(rs, func(x *RunResult) float64 { return x.Produce.Latency.P99 })
		if len(r.Modes) > 0 {
			base := r.Modes[0]
			f.ThroughputChange = f.RecordsPerSec/base.RecordsPerSec - 1
			f.P99Change = f.P99Ms/base.P99Ms - 1
		}
		r.Modes = append(r.Modes, f)
	}
	return r
}

func median(rs []*RunResult, v func(*RunResult) float64) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = v(r)
	}
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

// WriteText prints the comparison.
func (r *SecurityReport) WriteText(w io.Writer) {
	if len(r.Runs) > 0 {
		fmt.Fprintf(w, "\nsilt bench, by security: %s\n\n", r.Runs[0].Options.Describe())
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\truns\tproduce rec/s\tMB/s\tp50 ms\tp99 ms\tthroughput\tp99\t")
	for i, m := range r.Modes {
		change := func(c float64) string {
			if i == 0 {
				return "base"
			}
			return fmt.Sprintf("%+.1f%%", 100*c)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.1f\t%s\t%s\t%s\t%s\t\n", m.Mode, m.Runs, m.RecordsPerSec, m.MBPerSec,
			fMs(m.P50Ms), fMs(m.P99Ms), change(m.ThroughputChange), change(m.P99Change))
	}
	_ = tw.Flush()
}
