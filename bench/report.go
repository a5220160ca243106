package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// Report is one benchmark: Silt and, when run, its baselines.
type Report struct {
	Silt       *RunResult  `json:"silt"`
	Raw        *RawResult  `json:"raw_objectstore,omitempty"`
	NATS       *RunResult  `json:"nats,omitempty"`
	Comparison *Comparison `json:"comparison,omitempty"`
}

// Comparison puts Silt's figures as ratios of the baselines' and checks
// the targets.
type Comparison struct {
	// Silt over raw object store figures.
	ProduceOverRawPut float64 `json:"produce_over_raw_put,omitempty"`
	CatchUpOverRawGet float64 `json:"catch_up_over_raw_get,omitempty"`
	// Silt over NATS JetStream figures (throughput: above 1 is faster;
	// latency: above 1 is slower).
	ProduceOverNATS     float64       `json:"produce_over_nats,omitempty"`
	ProduceP99OverNATS  float64       `json:"produce_p99_over_nats,omitempty"`
	EndToEndP99OverNATS float64       `json:"end_to_end_p99_over_nats,omitempty"`
	CatchUpOverNATS     float64       `json:"catch_up_over_nats,omitempty"`
	Targets             []TargetCheck `json:"targets"`
}

// TargetCheck is one target and how the run did against it.
type TargetCheck struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// Compare fills r.Comparison.
func (r *Report) Compare() {
	s := r.Silt
	if s == nil {
		return
	}
	c := &Comparison{}
	if r.Raw != nil {
		c.ProduceOverRawPut = ratio(s.Produce.MBPerSec, r.Raw.PutMBPerSec)
		c.Targets = append(c.Targets, TargetCheck{
			Name: "produce throughput vs raw PUT bandwidth",
			Want: ">= 60%",
			Got:  fmt.Sprintf("%.0f%% (%.1f of %.1f MB/s)", 100*c.ProduceOverRawPut, s.Produce.MBPerSec, r.Raw.PutMBPerSec),
			Met:  c.ProduceOverRawPut >= 0.6,
		})
		if s.LingerMs > 0 {
			bound := s.LingerMs + r.Raw.PutLatency.P99 + 25
			c.Targets = append(c.Targets, TargetCheck{
				Name: "produce p99 vs linger + raw PUT p99 + 25 ms",
				Want: fmt.Sprintf("<= %.0f ms (%.0f + %.0f + 25)", bound, s.LingerMs, r.Raw.PutLatency.P99),
				Got:  fmt.Sprintf("%.0f ms", s.Produce.Latency.P99),
				Met:  s.Produce.Latency.P99 <= bound,
			})
		}
		if s.CatchUp != nil {
			c.CatchUpOverRawGet = ratio(s.CatchUp.MBPerSec, r.Raw.GetMBPerSec)
			c.Targets = append(c.Targets, TargetCheck{
				Name: "catch-up read vs raw range-GET bandwidth",
				Want: ">= 80%",
				Got:  fmt.Sprintf("%.0f%% (%.1f of %.1f MB/s)", 100*c.CatchUpOverRawGet, s.CatchUp.MBPerSec, r.Raw.GetMBPerSec),
				Met:  c.CatchUpOverRawGet >= 0.8,
			})
		}
	}
	if a := s.Agent; a != nil && a.Flushes > 0 {
		c.Targets = append(c.Targets, TargetCheck{
			Name: "Postgres transactions per flush",
			Want: "exactly 1",
			Got:  fmt.Sprintf("%.3f (%d transactions, %d flushes, %d failed)", a.CommitsPerFlush, a.Commits, a.Flushes, a.FlushErrors),
			Met:  a.Commits == a.Flushes && a.FlushErrors == 0,
		})
	}
	if n := r.NATS; n != nil {
		c.ProduceOverNATS = ratio(s.Produce.MBPerSec, n.Produce.MBPerSec)
		c.ProduceP99OverNATS = ratio(s.Produce.Latency.P99, n.Produce.Latency.P99)
		if s.EndToEnd != nil && n.EndToEnd != nil {
			c.EndToEndP99OverNATS = ratio(s.EndToEnd.Latency.P99, n.EndToEnd.Latency.P99)
		}
		if s.CatchUp != nil && n.CatchUp != nil {
			c.CatchUpOverNATS = ratio(s.CatchUp.MBPerSec, n.CatchUp.MBPerSec)
		}
	}
	r.Comparison = c
}

// WriteJSON writes v, indented, to path.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Table is a titled grid of cells, rendered as aligned text or Markdown.
type Table struct {
	Title string
	Head  []string
	Rows  [][]string
}

func (t *Table) add(cells ...string) { t.Rows = append(t.Rows, cells) }

// Text renders t with aligned columns; the first column is left-aligned,
// the others right-aligned.
func (t *Table) Text(w io.Writer) {
	widths := make([]int, len(t.Head))
	for _, row := range append([][]string{t.Head}, t.Rows...) {
		for i, c := range row {
			if i < len(widths) {
				widths[i] = max(widths[i], len(c))
			}
		}
	}
	if t.Title != "" {
		fmt.Fprintf(w, "%s\n", t.Title)
	}
	line := func(row []string) {
		var b strings.Builder
		for i := range widths {
			c := ""
			if i < len(row) {
				c = row[i]
			}
			if i == 0 {
				fmt.Fprintf(&b, "  %-*s", widths[i], c)
			} else {
				fmt.Fprintf(&b, "  %*s", widths[i], c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	line(t.Head)
	for _, row := range t.Rows {
		line(row)
	}
	fmt.Fprintln(w)
}

// Markdown renders t as a GitHub table under a bold title.
func (t *Table) Markdown(w io.Writer) {
	if t.Title != "" {
		fmt.Fprintf(w, "**%s**\n\n", t.Title)
	}
	fmt.Fprintf(w, "| %s |\n|", strings.Join(t.Head, " | "))
	for i := range t.Head {
		if i == 0 {
			fmt.Fprint(w, "---|")
		} else {
			fmt.Fprint(w, "---:|")
		}
	}
	fmt.Fprintln(w)
	for _, row := range t.Rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}
	fmt.Fprintln(w)
}

// Number formatting for tables; "—" stands for not measured.
const none = "—"

func fInt(v float64) string {
	if math.IsNaN(v) {
		return none
	}
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

func f2(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

// fMs prints a latency with precision that suits its size.
func fMs(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return f1(v)
	}
	return f2(v)
}

func fRatio(v float64) string {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return none
	}
	return f2(v) + "x"
}

// Tables returns the report as tables: produce, end-to-end, catch-up,
// agent costs and targets.
func (r *Report) Tables() []*Table {
	s, raw, n := r.Silt, r.Raw, r.NATS
	c := r.Comparison
	if c == nil {
		c = &Comparison{}
	}
	var out []*Table

	head := []string{"", "Silt"}
	if raw != nil {
		head = append(head, "raw store")
	}
	if n != nil {
		head = append(head, "NATS JetStream")
	}
	if raw != nil {
		head = append(head, "Silt/raw")
	}
	if n != nil {
		head = append(head, "Silt/NATS")
	}
	row := func(t *Table, name, silt string, rawV, natsV, rawRatio, natsRatio string) {
		cells := []string{name, silt}
		if raw != nil {
			cells = append(cells, rawV)
		}
		if n != nil {
			cells = append(cells, natsV)
		}
		if raw != nil {
			cells = append(cells, rawRatio)
		}
		if n != nil {
			cells = append(cells, natsRatio)
		}
		t.add(cells...)
	}
	get := func(f func(*RunResult) float64, r *RunResult) float64 {
		if r == nil {
			return math.NaN()
		}
		return f(r)
	}
	fmtOr := func(v float64, fmtf func(float64) string) string {
		if math.IsNaN(v) {
			return none
		}
		return fmtf(v)
	}

	title := "Produce (measured window)"
	if raw != nil {
		title = "Produce (measured window; raw store column: PUTs of segment-sized objects)"
	}
	prod := &Table{Title: title, Head: head}
	rawPut := func(f func(*RawResult) float64) float64 {
		if raw == nil {
			return math.NaN()
		}
		return f(raw)
	}
	row(prod, "records/s", fInt(s.Produce.RecordsPerSec), none, fmtOr(get(func(r *RunResult) float64 { return r.Produce.RecordsPerSec }, n), fInt), none,
		fRatio(ratio(s.Produce.RecordsPerSec, get(func(r *RunResult) float64 { return r.Produce.RecordsPerSec }, n))))
	row(prod, "MB/s", f1(s.Produce.MBPerSec), fmtOr(rawPut(func(r *RawResult) float64 { return r.PutMBPerSec }), f1),
		fmtOr(get(func(r *RunResult) float64 { return r.Produce.MBPerSec }, n), f1), fRatio(c.ProduceOverRawPut), fRatio(c.ProduceOverNATS))
	lat := []struct {
		name string
		f    func(Summary) float64
	}{
		{"latency p50 ms", func(s Summary) float64 { return s.P50 }},
		{"latency p90 ms", func(s Summary) float64 { return s.P90 }},
		{"latency p99 ms", func(s Summary) float64 { return s.P99 }},
		{"latency p99.9 ms", func(s Summary) float64 { return s.P999 }},
		{"latency max ms", func(s Summary) float64 { return s.Max }},
	}
	for _, l := range lat {
		rv := rawPut(func(r *RawResult) float64 { return l.f(r.PutLatency) })
		nv := get(func(r *RunResult) float64 { return l.f(r.Produce.Latency) }, n)
		row(prod, l.name, fMs(l.f(s.Produce.Latency)), fmtOr(rv, fMs), fmtOr(nv, fMs), fRatio(ratio(l.f(s.Produce.Latency), rv)), fRatio(ratio(l.f(s.Produce.Latency), nv)))
	}
	row(prod, "errors / retries", fmt.Sprintf("%d / %d", s.Produce.Errors, s.Produce.Retries), none,
		fmtOr(get(func(r *RunResult) float64 { return float64(r.Produce.Errors) }, n), fInt), "", "")
	out = append(out, prod)

	if s.EndToEnd != nil {
		e2e := &Table{Title: "End-to-end latency (send -> tailing consumer holds the record)", Head: head}
		var ne *EndToEndFigures
		if n != nil {
			ne = n.EndToEnd
		}
		for _, l := range lat[:5] {
			nv := math.NaN()
			if ne != nil {
				nv = l.f(ne.Latency)
			}
			row(e2e, strings.TrimPrefix(l.name, "latency "), fMs(l.f(s.EndToEnd.Latency)), none, fmtOr(nv, fMs), "", fRatio(ratio(l.f(s.EndToEnd.Latency), nv)))
		}
		out = append(out, e2e)
	}

	if s.CatchUp != nil {
		title := "Catch-up read from offset 0 after producing"
		if raw != nil {
			title += " (raw store column: range GETs of segment-sized objects)"
		}
		cu := &Table{Title: title, Head: head}
		var nc *CatchUpFigures
		if n != nil {
			nc = n.CatchUp
		}
		nv := func(f func(*CatchUpFigures) float64) float64 {
			if nc == nil {
				return math.NaN()
			}
			return f(nc)
		}
		row(cu, "records/s", fInt(s.CatchUp.RecordsPerSec), none, fmtOr(nv(func(c *CatchUpFigures) float64 { return c.RecordsPerSec }), fInt), "",
			fRatio(ratio(s.CatchUp.RecordsPerSec, nv(func(c *CatchUpFigures) float64 { return c.RecordsPerSec }))))
		row(cu, "MB/s", f1(s.CatchUp.MBPerSec), fmtOr(rawPut(func(r *RawResult) float64 { return r.GetMBPerSec }), f1),
			fmtOr(nv(func(c *CatchUpFigures) float64 { return c.MBPerSec }), f1), fRatio(c.CatchUpOverRawGet), fRatio(c.CatchUpOverNATS))
		row(cu, "records read", fInt(float64(s.CatchUp.Records)), none, fmtOr(nv(func(c *CatchUpFigures) float64 { return float64(c.Records) }), fInt), "", "")
		row(cu, "seconds", f1(s.CatchUp.Seconds), none, fmtOr(nv(func(c *CatchUpFigures) float64 { return c.Seconds }), f1), "", "")
		if s.CatchUp.Gets > 0 {
			row(cu, "object GETs per GiB read", f1(s.CatchUp.GetsPerGiB), none, none, "", "")
			row(cu, "object bytes per record byte", f2(s.CatchUp.ReadAmplification), none, none, "", "")
		}
		if s.CatchUp.Retries > 0 {
			row(cu, "fetches retried (429/503)", fInt(float64(s.CatchUp.Retries)), none, none, "", "")
		}
		if raw != nil {
			row(cu, "raw GET latency p50 / p99 ms", none, fMs(raw.GetLatency.P50)+" / "+fMs(raw.GetLatency.P99), none, "", "")
		}
		out = append(out, cu)
	}

	if a := s.Agent; a != nil {
		ag := &Table{Title: "Agent costs over the measured window (from its Prometheus registry)", Head: []string{"", "value"}}
		ag.add("object PUTs", fInt(float64(a.Puts)))
		ag.add("PUTs per second", f1(a.PutsPerSec))
		ag.add("PUTs per GiB produced", f1(a.PutsPerGiB))
		ag.add("mean segment size", formatSize(int64(a.MeanSegment)))
		ag.add("mean segment PUT ms", fMs(a.MeanPutMs))
		ag.add("object bytes per record byte", f2(a.ObjectPerRecordByte))
		ag.add("flushes (failed)", fmt.Sprintf("%s (%d)", fInt(float64(a.Flushes)), a.FlushErrors))
		ag.add("Postgres commit transactions", fInt(float64(a.Commits)))
		ag.add("transactions per second", f1(a.CommitsPerSec))
		ag.add("transactions per flush", f2(a.CommitsPerFlush))
		ag.add("mean commit ms", fMs(a.MeanCommitMs))
		ag.add("tailing GETs per GiB produced", f1(a.TailGetsPerGiB))
		ag.add("backpressure refusals (429)", fInt(float64(a.Backpressure)))
		if a.CPUSecondsPerGB > 0 {
			ag.add("process CPU seconds per GB produced", f1(a.CPUSecondsPerGB))
		}
		out = append(out, ag)
	}

	if m := s.Memory; m != nil {
		out = append(out, m.Table())
	}

	if len(c.Targets) > 0 {
		tg := &Table{Title: "Targets", Head: []string{"target", "want", "got", "met"}}
		for _, t := range c.Targets {
			met := "no"
			if t.Met {
				met = "yes"
			}
			tg.add(t.Name, t.Want, t.Got, met)
		}
		out = append(out, tg)
	}
	return out
}

// WriteText prints the report's tables.
func (r *Report) WriteText(w io.Writer) {
	if r.Silt != nil {
		fmt.Fprintf(w, "\nsilt bench: %s\n", r.Silt.Options.Describe())
		if r.Silt.LingerMs > 0 {
			fmt.Fprintf(w, "agent: linger %s ms, segment %s\n", fMs(r.Silt.LingerMs), formatSize(r.Silt.SegmentBytes))
		}
		fmt.Fprintln(w)
	}
	for _, t := range r.Tables() {
		t.Text(w)
	}
}
