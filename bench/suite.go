package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"silt/objectstore/bucketurl"
)

// SuiteConfig is the whole benchmark suite of `make bench`: the main
// workload against Silt, the raw object store and NATS JetStream, then a
// linger sweep and a partition sweep.
type SuiteConfig struct {
	DatabaseURL  string
	ObjectStore  string
	NATSBin      string // nats-server; empty skips the NATS baseline
	Main         Options
	Linger       time.Duration
	SegmentBytes int64
	RawDuration  time.Duration
	// CompareRate, when positive, runs Silt and NATS once more at this
	// fixed rate (records/s; no catch-up): latencies compared at a load
	// both sustain rather than at each one's saturation.
	CompareRate float64
	// Lingers are swept at LingerRate records/s with LingerBatch-record
	// requests, no consumers, and up to LingerInflight requests
	// outstanding per producer (enough that the rate, not the window,
	// sets the pace).
	Lingers        []time.Duration
	LingerRate     float64
	LingerBatch    int
	LingerInflight int
	// Partitions are swept at full speed with random keys (every
	// request spreads over all partitions), no consumers.
	Partitions    []int
	SweepDuration time.Duration
	SweepWarmup   time.Duration
	OutDir        string
	Logger        *slog.Logger
}

// DefaultSuite is `make bench`'s suite: about ten minutes on two cores.
func DefaultSuite() SuiteConfig {
	return SuiteConfig{
		Main:           DefaultOptions(),
		Linger:         100 * time.Millisecond,
		SegmentBytes:   8 << 20,
		RawDuration:    15 * time.Second,
		CompareRate:    40000,
		Lingers:        []time.Duration{10 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond},
		LingerRate:     20000,
		LingerBatch:    100,
		LingerInflight: 64,
		Partitions:     []int{1, 64, 1024, 10000},
		SweepDuration:  20 * time.Second,
		SweepWarmup:    5 * time.Second,
	}
}

// Machine describes where the suite ran.
type Machine struct {
	CPU       string  `json:"cpu"`
	Cores     int     `json:"cores"`
	MemoryGiB float64 `json:"memory_gib"`
	Kernel    string  `json:"kernel"`
	Go        string  `json:"go"`
}

// DescribeMachine reads /proc for the CPU model, memory and kernel.
func DescribeMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				m.MemoryGiB = kb / (1 << 20)
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// SuiteReport is everything the suite measured.
type SuiteReport struct {
	Machine        Machine      `json:"machine"`
	Started        time.Time    `json:"started"`
	Seconds        float64      `json:"seconds"`
	Main           Report       `json:"main"`
	FixedRate      *Report      `json:"fixed_rate,omitempty"`
	LingerSweep    []*RunResult `json:"linger_sweep"`
	PartitionSweep []*RunResult `json:"partition_sweep"`
}

// RunSuite runs the suite and writes results.json, results.md and the
// plots into OutDir.
func RunSuite(ctx context.Context, cfg SuiteConfig, pr *Progress) (*SuiteReport, error) {
	if cfg.DatabaseURL == "" || cfg.ObjectStore == "" {
		return nil, errors.New("the suite needs --database-url and --objectstore")
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, err
	}
	rep := &SuiteReport{Machine: DescribeMachine(), Started: time.Now().UTC()}
	agent := func(linger time.Duration) LocalAgent {
		return LocalAgent{DatabaseURL: cfg.DatabaseURL, ObjectStore: cfg.ObjectStore, Linger: linger, SegmentBytes: cfg.SegmentBytes, Logger: cfg.Logger}
	}

	// 1. Main workload on Silt.
	pr.Logf("== main workload")
	res, err := RunLocal(ctx, agent(cfg.Linger), cfg.Main, pr)
	if err != nil {
		return nil, err
	}
	rep.Main.Silt = res

	// 2. The raw object store at Silt's segment size.
	pr.Logf("== raw object store baseline")
	bucket, err := bucketurl.Open(ctx, cfg.ObjectStore)
	if err != nil {
		return nil, err
	}
	rep.Main.Raw, err = RunRaw(ctx, bucket, RawBaselineFor(res, cfg.RawDuration, defaultInflightFlushes), pr)
	if err != nil {
		return nil, err
	}

	// 3. NATS JetStream with the same workload.
	if cfg.NATSBin != "" {
		pr.Logf("== NATS JetStream baseline")
		srv, err := StartNATS(ctx, cfg.NATSBin)
		if err != nil {
			return nil, err
		}
		rep.Main.NATS, err = RunNATS(ctx, srv.URL, cfg.Main, pr)
		srv.Stop()
		if err != nil {
			return nil, err
		}
	}
	rep.Main.Compare()

	// 4. Silt and NATS at one fixed rate, with tailing consumers.
	if cfg.CompareRate > 0 {
		o := cfg.Main
		o.Rate, o.CatchUp = cfg.CompareRate, false
		o.Duration, o.Warmup = cfg.SweepDuration+10*time.Second, cfg.SweepWarmup
		pr.Logf("== fixed rate %s records/s", fInt(o.Rate))
		fr := &Report{}
		if fr.Silt, err = RunLocal(ctx, agent(cfg.Linger), o, pr); err != nil {
			return nil, err
		}
		fr.Silt.Label = "fixed rate"
		if cfg.NATSBin != "" {
			srv, err := StartNATS(ctx, cfg.NATSBin)
			if err != nil {
				return nil, err
			}
			fr.NATS, err = RunNATS(ctx, srv.URL, o, pr)
			srv.Stop()
			if err != nil {
				return nil, err
			}
		}
		fr.Compare()
		rep.FixedRate = fr
	}

	// 5. Produce latency against linger, at a fixed rate.
	for _, l := range cfg.Lingers {
		pr.Logf("== linger %s", l)
		o := cfg.Main
		o.Rate, o.Batch, o.Inflight, o.Consumers, o.CatchUp = cfg.LingerRate, cfg.LingerBatch, cfg.LingerInflight, 0, false
		o.Duration, o.Warmup = cfg.SweepDuration, cfg.SweepWarmup
		r, err := RunLocal(ctx, agent(l), o, pr)
		if err != nil {
			return nil, err
		}
		r.Label = "linger " + l.String()
		rep.LingerSweep = append(rep.LingerSweep, r)
	}

	// 6. Throughput and PUTs per GiB against partitions.
	for _, n := range cfg.Partitions {
		pr.Logf("== %d partitions", n)
		o := cfg.Main
		o.Partitions, o.Topics, o.Keys, o.Consumers, o.CatchUp = n, 1, KeyDist{Kind: KeysRandom}, 0, false
		o.Duration, o.Warmup = cfg.SweepDuration, cfg.SweepWarmup
		r, err := RunLocal(ctx, agent(cfg.Linger), o, pr)
		if err != nil {
			return nil, err
		}
		r.Label = fmt.Sprintf("%d partitions", n)
		rep.PartitionSweep = append(rep.PartitionSweep, r)
	}
	rep.Seconds = time.Since(rep.Started).Seconds()
	return rep, rep.Write(cfg.OutDir)
}

// RunLocal starts an agent in this process, runs o against it and stops it.
func RunLocal(ctx context.Context, a LocalAgent, o Options, pr *Progress) (*RunResult, error) {
	t, err := a.Start(ctx)
	if err != nil {
		return nil, err
	}
	res, t, err := RunSilt(ctx, t, o, pr)
	if t != nil {
		err = errors.Join(err, t.Stop(context.WithoutCancel(ctx)))
	}
	return res, err
}

// RawBaselineFor sizes the raw object store baseline after a Silt run:
// objects of its mean segment size, as many PUTs in flight as the batcher
// has flushes, as many GETs as it had consumers.
func RawBaselineFor(r *RunResult, d time.Duration, inflightFlushes int) RawOptions {
	size := r.SegmentBytes
	if r.Agent != nil && r.Agent.MeanSegment > 0 {
		size = int64(r.Agent.MeanSegment)
	}
	if size <= 0 {
		size = 8 << 20
	}
	return RawOptions{
		ObjectBytes:    size,
		PutConcurrency: max(inflightFlushes, 1),
		GetConcurrency: max(r.Options.Consumers, 1),
		Duration:       d,
	}
}

// Write stores results.json, results.md and the PNG plots in dir.
func (s *SuiteReport) Write(dir string) error {
	if err := WriteJSON(filepath.Join(dir, "results.json"), s); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "results.md"))
	if err != nil {
		return err
	}
	s.Markdown(f)
	if err := f.Close(); err != nil {
		return err
	}
	runs := []*RunResult{s.Main.Silt}
	names := []string{"SILT MAIN (MAX RATE)"}
	if s.Main.NATS != nil {
		runs, names = append(runs, s.Main.NATS), append(names, "NATS JETSTREAM (MAX RATE)")
	}
	if fr := s.FixedRate; fr != nil {
		runs, names = append(runs, fr.Silt), append(names, fmt.Sprintf("SILT AT %s REC/S", fInt(fr.Silt.Options.Rate)))
		if fr.NATS != nil {
			runs, names = append(runs, fr.NATS), append(names, fmt.Sprintf("NATS AT %s REC/S", fInt(fr.NATS.Options.Rate)))
		}
	}
	for _, r := range s.LingerSweep {
		runs = append(runs, r)
		names = append(names, fmt.Sprintf("SILT LINGER %.0f MS (%s REC/S)", r.LingerMs, fInt(r.Options.Rate)))
	}
	if err := SavePNG(filepath.Join(dir, "produce-latency-cdf.png"), 1400, 650, LatencyCDFChart("PRODUCE LATENCY CDF", runs, names)); err != nil {
		return err
	}
	if len(s.PartitionSweep) > 0 {
		a, b := SweepCharts(s.PartitionSweep)
		if err := SavePNG(filepath.Join(dir, "partitions.png"), 700, 500, a, b); err != nil {
			return err
		}
	}
	if len(s.LingerSweep) > 0 {
		if err := SavePNG(filepath.Join(dir, "linger.png"), 800, 500, LingerChart(s.LingerSweep)); err != nil {
			return err
		}
	}
	return nil
}

// Markdown writes the suite's tables.
func (s *SuiteReport) Markdown(w io.Writer) {
	m := s.Machine
	fmt.Fprintf(w, "Generated by `silt bench --suite` on %s: %s, %d cores, %.1f GiB, kernel %s, %s; %.0f s in all.\n\n",
		s.Started.Format("2006-01-02 15:04 UTC"), m.CPU, m.Cores, m.MemoryGiB, m.Kernel, m.Go, s.Seconds)
	if s.Main.Silt != nil {
		fmt.Fprintf(w, "Main workload: %s; linger %s ms, segment %s.\n\n", s.Main.Silt.Options.Describe(), fMs(s.Main.Silt.LingerMs), formatSize(s.Main.Silt.SegmentBytes))
		for _, t := range s.Main.Tables() {
			t.Markdown(w)
		}
	}
	if fr := s.FixedRate; fr != nil && fr.Silt != nil {
		fmt.Fprintf(w, "**Fixed rate: %s records/s with tailing consumers, no catch-up** (%s)\n\n", fInt(fr.Silt.Options.Rate), fr.Silt.Options.Describe())
		for _, t := range fr.Tables() {
			if strings.HasPrefix(t.Title, "Produce") || strings.HasPrefix(t.Title, "End-to-end") {
				t.Markdown(w)
			}
		}
	}
	if len(s.LingerSweep) > 0 {
		o := s.LingerSweep[0].Options
		t := &Table{Title: fmt.Sprintf("Produce latency against linger (target %s records/s, %d-record requests, %d producers with up to %d requests outstanding, %d partitions, no consumers)",
			fInt(o.Rate), o.Batch, o.Producers, o.Inflight, o.Partitions),
			Head: []string{"linger ms", "records/s", "MB/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "p99 - linger ms", "PUTs/s", "mean segment", "mean PUT ms", "mean commit ms", "txns/flush"}}
		for _, r := range s.LingerSweep {
			l := r.Produce.Latency
			cells := []string{fMs(r.LingerMs), fInt(r.Produce.RecordsPerSec), f1(r.Produce.MBPerSec), fMs(l.P50), fMs(l.P90), fMs(l.P99), fMs(l.P999), fMs(l.Max), fMs(l.P99 - r.LingerMs)}
			cells = append(cells, agentCells(r, func(a *AgentFigures) string { return f1(a.PutsPerSec) },
				func(a *AgentFigures) string { return formatSize(int64(a.MeanSegment)) },
				func(a *AgentFigures) string { return fMs(a.MeanPutMs) },
				func(a *AgentFigures) string { return fMs(a.MeanCommitMs) },
				func(a *AgentFigures) string { return f2(a.CommitsPerFlush) })...)
			t.add(cells...)
		}
		t.Markdown(w)
	}
	if len(s.PartitionSweep) > 0 {
		o := s.PartitionSweep[0].Options
		t := &Table{Title: fmt.Sprintf("Partitions (max rate, random keys, %d producers x %d in flight x %d-record requests, no consumers)",
			o.Producers, o.Inflight, o.Batch),
			Head: []string{"partitions", "records/s", "MB/s", "p50 ms", "p99 ms", "PUTs/s", "PUTs per GiB", "mean segment", "txns/s", "txns/flush", "mean commit ms"}}
		for _, r := range s.PartitionSweep {
			l := r.Produce.Latency
			cells := []string{fInt(float64(r.Options.Partitions)), fInt(r.Produce.RecordsPerSec), f1(r.Produce.MBPerSec), fMs(l.P50), fMs(l.P99)}
			cells = append(cells, agentCells(r,
				func(a *AgentFigures) string { return f1(a.PutsPerSec) },
				func(a *AgentFigures) string { return f1(a.PutsPerGiB) },
				func(a *AgentFigures) string { return formatSize(int64(a.MeanSegment)) },
				func(a *AgentFigures) string { return f1(a.CommitsPerSec) },
				func(a *AgentFigures) string { return f2(a.CommitsPerFlush) },
				func(a *AgentFigures) string { return fMs(a.MeanCommitMs) })...)
			t.add(cells...)
		}
		t.Markdown(w)
	}
}

func agentCells(r *RunResult, fs ...func(*AgentFigures) string) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		if r.Agent == nil {
			out[i] = none
		} else {
			out[i] = f(r.Agent)
		}
	}
	return out
}
