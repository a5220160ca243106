package scale

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

func ms2(v float64) string {
	switch {
	case v == 0:
		return "–"
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	case v < 100:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func rate(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func cores(v float64) string {
	if v < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", v)
}

func topWait(pg PGStats) string {
	type kv struct {
		k string
		v float64
	}
	var all []kv
	for k, v := range pg.WaitEvents {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	var parts []string
	for i, e := range all {
		if i == 2 {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.1f", e.k, e.v))
	}
	if len(parts) == 0 {
		return "–"
	}
	return strings.Join(parts, ", ")
}

// WriteLoadTable writes one row per load run: the flush commit and lookup
// figures with what Postgres did.
func WriteLoadTable(w io.Writer, runs []*LoadResult) {
	fmt.Fprintln(w, "| agents | partitions | chunks/flush | commits/s (target) | commit p50 ms | commit p99 ms | register p99 ms | lookup p99 ms (tail / random) | lease round p99 ms | Postgres xact/s | Postgres CPU cores | machine busy cores | sessions waiting on locks (mean / max) | top waits (sessions) |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, r := range runs {
		c := r.Op(OpFlushCommit)
		fmt.Fprintf(w, "| %d | %d | %d | %s (%s) | %s | %s | %s | %s / %s | %s | %s | %s | %s | %.2f / %d | %s |\n",
			r.Agents, r.Partitions, r.FlushPartitions, rate(c.PerSec), rate(r.Targets[OpFlushCommit]), ms2(c.P50), ms2(c.P99),
			ms2(r.Op(OpFlushRegister).P99), ms2(r.Op(OpLookupTail).P99), ms2(r.Op(OpLookupRandom).P99), ms2(r.Op(OpLeaseRound).P99),
			rate(r.PG.TPS), cores(r.PG.CPU), cores(r.PG.MachineCPU), r.PG.LockWaits, r.PG.LockWaitsMax, topWait(r.PG))
	}
}

// WriteGroupTable writes one row per load run with groups: each group
// operation's rate and latency, what Postgres did, and the first
// bottleneck (Bottleneck).
func WriteGroupTable(w io.Writer, runs []*LoadResult) {
	fmt.Fprintln(w, "| groups × members | load avg at start | heartbeats/s (target) | heartbeat p50 / p99 ms | commits/s (target) | commit p50 / p99 ms | rejoins | errors | Postgres xact/s | Postgres CPU cores | Postgres CPU ms per group operation | simulator cores | machine busy cores | sessions waiting on locks (mean / max) | top waits (sessions) | top statement (share of statement time) | first bottleneck |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
	for _, r := range runs {
		h, c, j := r.Op(OpGroupHeartbeat), r.Op(OpGroupCommit), r.Op(OpGroupJoin)
		perOp := "n/a"
		if ops := h.PerSec + c.PerSec + j.PerSec; ops > 0 && r.PG.CPU >= 0 {
			perOp = ms2(1000 * r.PG.CPU / ops)
		}
		fmt.Fprintf(w, "| %d × %d | %s | %s (%s) | %s / %s | %s (%s) | %s / %s | %d | %d | %s | %s | %s | %s | %s | %.2f / %d | %s | %s | %s |\n",
			r.Groups, r.GroupMembers, loadAvg(r.LoadAvg), rate(h.PerSec), rate(r.Targets[OpGroupHeartbeat]), ms2(h.P50), ms2(h.P99),
			rate(c.PerSec), rate(r.Targets[OpGroupCommit]), ms2(c.P50), ms2(c.P99), j.Count, h.Errors+c.Errors+j.Errors,
			rate(r.PG.TPS), cores(r.PG.CPU), perOp, cores(r.PG.SimCPU), cores(r.PG.MachineCPU), r.PG.LockWaits, r.PG.LockWaitsMax, topWait(r.PG),
			topStatement(r.PG), strings.ReplaceAll(Bottleneck(r), "|", "\\|"))
	}
}

func loadAvg(v float64) string {
	if v < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", v)
}

// topStatement is the statement that took the most of Postgres's time,
// its first words, with its share.
func topStatement(pg PGStats) string {
	if len(pg.Statements) == 0 {
		return "–"
	}
	st := pg.Statements[0]
	q := st.Query
	if len(q) > 60 {
		q = q[:60] + "…"
	}
	return fmt.Sprintf("`%s` (%.0f%%, mean %s ms)", strings.ReplaceAll(q, "|", "\\|"), 100*st.Share, ms2(st.MeanMs))
}

// WriteOps writes every operation of one run.
func WriteOps(w io.Writer, r *LoadResult) {
	fmt.Fprintln(w, "| operation | per second (target) | p50 ms | p99 ms | max ms | errors | late |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for _, o := range r.Ops {
		target := "–"
		if t, ok := r.Targets[o.Op]; ok {
			target = rate(t)
		}
		fmt.Fprintf(w, "| %s | %s (%s) | %s | %s | %s | %d | %d |\n", o.Op, rate(o.PerSec), target, ms2(o.P50), ms2(o.P99), ms2(o.Max), o.Errors, o.Late)
	}
	for _, o := range r.Ops {
		if o.LastErr != "" {
			fmt.Fprintf(w, "\n%s, last error: %s\n", o.Op, o.LastErr)
		}
	}
	WriteStatements(w, r.PG.Statements)
}

// WriteStatements writes the statements that took the most of Postgres's
// time.
func WriteStatements(w io.Writer, stmts []StatementStat) {
	if len(stmts) == 0 {
		return
	}
	fmt.Fprintln(w, "\n| statement (pg_stat_statements) | calls | mean ms | share of Postgres's statement time |")
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	for _, st := range stmts {
		fmt.Fprintf(w, "| `%s` | %d | %s | %.0f%% |\n", strings.ReplaceAll(st.Query, "|", "\\|"), st.Calls, ms2(st.MeanMs), 100*st.Share)
	}
}

// WriteConvergeTable writes one row per convergence run.
func WriteConvergeTable(w io.Writer, runs []*ConvergeResult) {
	fmt.Fprintln(w, "| agents | partitions | settled after start s | agents cut off | settled after the cut s | lease round p50 ms | lease round p99 ms | Postgres CPU cores |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range runs {
		fmt.Fprintf(w, "| %d | %d | %s | %d | %s | %s | %s | %s |\n", r.Agents, r.Partitions, secs(r.StartSeconds), r.Killed,
			secs(r.KillSeconds), ms2(r.LeaseRound.P50), ms2(r.LeaseRound.P99), cores(r.PG.CPU))
	}
}

func secs(v float64) string {
	if v < 0 {
		return "not settled"
	}
	return fmt.Sprintf("%.1f", v)
}
