package scale

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// SuiteConfig is every sweep of `silt scale --suite`.
type SuiteConfig struct {
	// Base is the load every sweep varies.
	Base Config
	// AgentSweep runs Base at each agent count (at SweepPartitions).
	AgentSweep      []int
	SweepPartitions int
	// PartitionSweep runs Base with the most agents at each partition count.
	PartitionSweep []int
	// ChunkSweep runs Base with the most agents at each chunks-per-flush.
	ChunkSweep []int
	// GroupSweep runs group members only (no produce) on GroupAgents
	// agents at each group count (Env.Groups).
	GroupSweep  []int
	GroupAgents int
	// Converge runs the convergence experiment at each agent count on
	// SweepPartitions partitions, cutting KillFraction off.
	Converge        []int
	KillFraction    float64
	ConvergeTimeout time.Duration
	// Index and Week are the index-size and simulated-week experiments.
	// IndexMinFreeBytes skips an index step whose estimated size would
	// leave less than this free on the database's disk.
	Index             IndexConfig
	IndexMinFreeBytes int64
	Week              WeekConfig
}

// DefaultSuite is the sweeps of docs/scaling.md, sized for a 2-core machine
// to finish in about half an hour.
func DefaultSuite() SuiteConfig {
	base := DefaultConfig()
	base.Warmup, base.Duration = 15*time.Second, 30*time.Second
	idx := DefaultIndexConfig()
	idx.Steps = []int64{0, 1_000_000, 10_000_000, 30_000_000}
	return SuiteConfig{
		Base:              base,
		AgentSweep:        []int{1, 10, 50, 100},
		SweepPartitions:   100_000,
		PartitionSweep:    []int{1_000, 10_000},
		ChunkSweep:        []int{1, 100},
		GroupSweep:        []int{10, 100, 1_000, 10_000},
		GroupAgents:       10,
		Converge:          []int{10, 100},
		KillFraction:      0.1,
		ConvergeTimeout:   3 * time.Minute,
		Index:             idx,
		IndexMinFreeBytes: 3 << 30,
		Week:              DefaultWeekConfig(),
	}
}

// QuickSuite is the same sweeps at small sizes, in a minute or so: it
// checks that the suite runs, not how Silt scales.
func QuickSuite() SuiteConfig {
	s := DefaultSuite()
	s.Base.Warmup, s.Base.Duration = time.Second, 2*time.Second
	s.Base.HeartbeatInterval, s.Base.AgentTTL = 200*time.Millisecond, time.Second
	s.Base.LeaseInterval, s.Base.LeaseTTL = 300*time.Millisecond, time.Second
	s.Base.GroupTopicPartitions = 4
	s.AgentSweep, s.SweepPartitions = []int{1, 3}, 500
	s.PartitionSweep, s.ChunkSweep = []int{100}, []int{1}
	s.GroupSweep, s.GroupAgents = []int{5}, 2
	s.Converge = []int{4}
	s.ConvergeTimeout = time.Minute
	s.Index.Steps, s.Index.Partitions, s.Index.Lookups, s.Index.Concurrency = []int64{0, 5_000}, 100, 200, 2
	s.Week.Hours, s.Week.Partitions = 1, 4
	return s
}

// SuiteReport is every sweep's results.
type SuiteReport struct {
	Machine    Machine           `json:"machine"`
	Started    time.Time         `json:"started"`
	Seconds    float64           `json:"seconds"`
	Agents     []*LoadResult     `json:"agents"`
	Partitions []*LoadResult     `json:"partitions"`
	Chunks     []*LoadResult     `json:"chunks"`
	Groups     []*LoadResult     `json:"groups"`
	Converge   []*ConvergeResult `json:"converge"`
	Index      *IndexResult      `json:"index"`
	Week       *WeekResult       `json:"week"`
	Notes      []string          `json:"notes,omitempty"`
}

// Machine describes where a suite ran.
type Machine struct {
	CPUs     int               `json:"cpus"`
	MemBytes int64             `json:"mem_bytes"`
	Postgres string            `json:"postgres"`
	Settings map[string]string `json:"settings"`
	LoadAvg  string            `json:"load_avg_at_start"`
}

func machine(ctx context.Context, adminURL string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Settings: map[string]string{}}
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) == nil {
		m.MemBytes = int64(si.Totalram) * int64(si.Unit)
	}
	if f := loadAverages(); f != nil {
		m.LoadAvg = strings.Join(f, " ")
	}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return m
	}
	defer conn.Close(ctx)
	_ = conn.QueryRow(ctx, `SHOW server_version`).Scan(&m.Postgres)
	for _, name := range []string{"shared_buffers", "fsync", "synchronous_commit", "max_connections", "max_wal_size", "effective_cache_size", "wal_level"} {
		var v string
		if conn.QueryRow(ctx, "SHOW "+name).Scan(&v) == nil {
			m.Settings[name] = v
		}
	}
	return m
}

// RunSuite runs the sweeps. A failed step is noted and the suite goes on;
// the error reports the first failure.
func RunSuite(ctx context.Context, env Env, sc SuiteConfig) (*SuiteReport, error) {
	pr := env.logf()
	rep := &SuiteReport{Machine: machine(ctx, env.AdminURL), Started: time.Now()}
	var firstErr error
	fail := func(what string, err error) {
		pr("%s failed: %v", what, err)
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s failed: %v", what, err))
		if firstErr == nil {
			firstErr = fmt.Errorf("%s: %w", what, err)
		}
	}
	load := func(what string, cfg Config) *LoadResult {
		if ctx.Err() != nil {
			return nil
		}
		r, err := env.Load(ctx, cfg)
		if err != nil {
			fail(what, err)
			return nil
		}
		c := r.Op(OpFlushCommit)
		pr("%s: commits %.0f/s (target %.0f), p50 %.1f ms, p99 %.1f ms; Postgres %.0f xact/s, %.2f cores",
			what, c.PerSec, r.Targets[OpFlushCommit], c.P50, c.P99, r.PG.TPS, r.PG.CPU)
		return r
	}
	most := 0
	for _, n := range sc.AgentSweep {
		cfg := sc.Base
		cfg.Agents, cfg.Topics, cfg.Partitions = n, 1, sc.SweepPartitions
		if r := load(fmt.Sprintf("agents %d", n), cfg); r != nil {
			rep.Agents = append(rep.Agents, r)
		}
		most = max(most, n)
	}
	for _, p := range sc.PartitionSweep {
		cfg := sc.Base
		cfg.Agents, cfg.Topics, cfg.Partitions = most, 1, p
		if r := load(fmt.Sprintf("partitions %d", p), cfg); r != nil {
			rep.Partitions = append(rep.Partitions, r)
		}
	}
	for _, k := range sc.ChunkSweep {
		cfg := sc.Base
		cfg.Agents, cfg.Topics, cfg.Partitions, cfg.FlushPartitions = most, 1, sc.SweepPartitions, k
		if r := load(fmt.Sprintf("chunks per flush %d", k), cfg); r != nil {
			rep.Chunks = append(rep.Chunks, r)
		}
	}
	for _, g := range sc.GroupSweep {
		if ctx.Err() != nil {
			break
		}
		base := sc.Base
		base.Agents = sc.GroupAgents
		runs, err := env.Groups(ctx, GroupsConfig{Base: base, Counts: []int{g}})
		if err != nil {
			fail(fmt.Sprintf("groups %d", g), err)
			continue
		}
		rep.Groups = append(rep.Groups, runs...)
	}
	for _, n := range sc.Converge {
		if ctx.Err() != nil {
			break
		}
		cfg := sc.Base
		cfg.Agents, cfg.Topics, cfg.Partitions = n, 1, sc.SweepPartitions
		cfg.Janitor = false
		r, err := env.Converge(ctx, cfg, sc.KillFraction, sc.ConvergeTimeout)
		if err != nil {
			fail(fmt.Sprintf("converge %d", n), err)
			continue
		}
		rep.Converge = append(rep.Converge, r)
	}
	if ctx.Err() == nil {
		idx := sc.Index
		idx.Steps = fitSteps(ctx, env, idx, sc.IndexMinFreeBytes, rep)
		r, err := env.Index(ctx, idx)
		if err != nil {
			fail("index", err)
		}
		rep.Index = r
	}
	if ctx.Err() == nil {
		r, err := env.Week(ctx, sc.Week)
		if err != nil {
			fail("week", err)
		}
		rep.Week = r
	}
	rep.Seconds = time.Since(rep.Started).Seconds()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return rep, firstErr
}

// indexBytesPerRow is a conservative estimate of the disk an index row
// takes with its indexes, its segment's share and the WAL written while
// loading (measured about 180 bytes; WAL is recycled at checkpoints).
const indexBytesPerRow = 250

// fitSteps drops the index steps that would leave less than minFree on
// the database's disk, noting them.
func fitSteps(ctx context.Context, env Env, idx IndexConfig, minFree int64, rep *SuiteReport) []int64 {
	free, ok := databaseFreeBytes(ctx, env.AdminURL)
	if !ok || minFree <= 0 {
		return idx.Steps
	}
	var out []int64
	for _, s := range idx.Steps {
		if need := s * indexBytesPerRow; need > free-minFree {
			rep.Notes = append(rep.Notes, fmt.Sprintf("index step of %d rows skipped: it needs about %d GiB and the database's disk has %d GiB free (keeping %d GiB)",
				s, need>>30, free>>30, minFree>>30))
			continue
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		out = []int64{0}
	}
	return out
}

// databaseFreeBytes is the free space of the file system holding the
// server's data directory, when the server is on this machine.
func databaseFreeBytes(ctx context.Context, adminURL string) (int64, bool) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return 0, false
	}
	defer conn.Close(ctx)
	var dir string
	if conn.QueryRow(ctx, `SHOW data_directory`).Scan(&dir) != nil {
		return 0, false
	}
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) != nil {
		return 0, false
	}
	return int64(st.Bavail) * int64(st.Bsize), true
}

// WriteJSON writes v as indented JSON to path.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Write writes results.md and results.json into dir.
func (r *SuiteReport) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var b bytes.Buffer
	r.WriteMarkdown(&b)
	if err := os.WriteFile(filepath.Join(dir, "results.md"), b.Bytes(), 0o644); err != nil {
		return err
	}
	return WriteJSON(filepath.Join(dir, "results.json"), r)
}

// WriteMarkdown writes every table.
func (r *SuiteReport) WriteMarkdown(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "# Scale sweeps\n\nWritten by `silt scale --suite` (`make bench-scale`) on %s, in %.0f minutes. ", r.Started.UTC().Format("2006-01-02"), r.Seconds/60)
	fmt.Fprintf(w, "Machine: %d CPUs, %.0f GiB of memory, load average %s at the start (shared with other work). ", m.CPUs, float64(m.MemBytes)/(1<<30), m.LoadAvg)
	fmt.Fprintf(w, "PostgreSQL %s", m.Postgres)
	if len(m.Settings) > 0 {
		var parts []string
		for _, k := range []string{"fsync", "synchronous_commit", "shared_buffers", "max_wal_size", "max_connections"} {
			if v, ok := m.Settings[k]; ok {
				parts = append(parts, k+"="+v)
			}
		}
		fmt.Fprintf(w, " (%s)", strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, ". See docs/scaling.md for what the figures mean.\n")
	for _, n := range r.Notes {
		fmt.Fprintf(w, "\n> %s\n", n)
	}
	section := func(title string, runs []*LoadResult) {
		if len(runs) == 0 {
			return
		}
		fmt.Fprintf(w, "\n## %s\n\n", title)
		WriteLoadTable(w, runs)
	}
	section("Agents (each flushing 4 times a second, 10 partitions per flush, 20 lookups a second)", r.Agents)
	section("Partitions (the most agents)", r.Partitions)
	section("Chunks per flush (the most agents)", r.Chunks)
	if len(r.Groups) > 0 {
		g := r.Groups[0]
		fmt.Fprintf(w, "\n## Consumer groups (%d members each, heartbeating every %g s and committing every %g s, on %d agents; no produce)\n\n",
			g.GroupMembers, g.GroupHeartbeatSeconds, g.GroupCommitSeconds, g.Agents)
		WriteGroupTable(w, r.Groups)
	}
	if len(r.Converge) > 0 {
		fmt.Fprintf(w, "\n## Ownership convergence\n\n")
		WriteConvergeTable(w, r.Converge)
	}
	if r.Index != nil {
		fmt.Fprintf(w, "\n## Index size\n\n")
		WriteIndexTable(w, r.Index)
	}
	if r.Week != nil {
		fmt.Fprintf(w, "\n## A simulated week of produce with the janitor merging\n\n")
		WriteWeekTable(w, r.Week)
	}
	for _, runs := range [][]*LoadResult{r.Agents, r.Partitions, r.Chunks, r.Groups} {
		for _, lr := range runs {
			fmt.Fprintf(w, "\n### Every operation: %d agents, %d partitions, %d chunks per flush, %d groups\n\n", lr.Agents, lr.Partitions, lr.FlushPartitions, lr.Groups)
			WriteOps(w, lr)
		}
	}
}

// WriteIndexTable writes one row per index size.
func WriteIndexTable(w io.Writer, r *IndexResult) {
	fmt.Fprintf(w, "Rows spread over %d partitions, %d offsets each; lookups by %d clients at once. Client latency p50 / p99, then the time inside Postgres per lookup, mean / max (pg_stat_statements).\n\n", r.Partitions, r.RecordsPerRow, r.Concurrency)
	fmt.Fprintln(w, "| index rows | load s | batches table + indexes | primary key | B-tree levels | tail p50 / p99 ms | in Postgres mean / max ms | random p50 / p99 ms | in Postgres mean / max ms | by timestamp p50 / p99 ms | in Postgres mean / max ms | buffer hit ratio |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	srv := func(s IndexStep, k string) string {
		v, ok := s.Server[k]
		if !ok {
			return "n/a"
		}
		return ms2(v.MeanMs) + " / " + ms2(v.MaxMs)
	}
	for _, s := range r.Steps {
		fmt.Fprintf(w, "| %d | %.0f | %s | %s | %d | %s / %s | %s | %s / %s | %s | %s / %s | %s | %.4f |\n", s.Rows, s.LoadSeconds,
			size(s.BatchesBytes), size(s.PKeyBytes), s.PKeyLevels, ms2(s.Tail.P50), ms2(s.Tail.P99), srv(s, OpLookupTail),
			ms2(s.Random.P50), ms2(s.Random.P99), srv(s, OpLookupRandom), ms2(s.Timestamp.P50), ms2(s.Timestamp.P99), srv(s, "lookup timestamp"), s.HitRatio)
	}
}

// WriteWeekTable writes one row per simulated day.
func WriteWeekTable(w io.Writer, r *WeekResult) {
	fmt.Fprintf(w, "%d partitions taking %s a minute in all, partition p a share proportional to 2^-p; merged rows of up to %s.\n\n",
		r.Partitions, size(r.BytesPerMinute), size(r.MergeRowBytes))
	fmt.Fprintln(w, "| hours | index rows | of which not merged | bytes indexed | rows per GiB | rewritten by merging / produced |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|")
	for _, d := range r.Days {
		amp := 0.0
		if d.Produced > 0 {
			amp = float64(d.Rewritten) / float64(d.Produced)
		}
		fmt.Fprintf(w, "| %d | %d | %d | %s | %.0f | %.2f |\n", d.Hours, d.Rows, d.FlushRows, size(d.Bytes), d.RowsPerGiB, amp)
	}
	fmt.Fprintf(w, "\nAt the end, the busiest partition has %.0f rows per GiB and the quietest one holding data %.0f.\n", r.Busiest, r.Quietest)
}

func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
