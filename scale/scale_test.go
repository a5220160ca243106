package scale

import (
	"context"
	"strings"
	"testing"
	"time"

	"silt/internal/testenv"
)

// smokeConfig is a small, fast cluster: short ownership intervals so that
// leases lapse within a second or two.
func smokeConfig(t *testing.T) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DatabaseURL = testenv.PostgresURL(t)
	cfg.Agents, cfg.PoolSize = 3, 3
	cfg.Topics, cfg.Partitions = 2, 100
	cfg.FlushRate, cfg.FlushPartitions = 10, 5
	cfg.LookupRate = 20
	cfg.Groups, cfg.GroupMembers, cfg.GroupTopics, cfg.GroupTopicPartitions = 4, 3, 2, 6
	cfg.GroupHeartbeat, cfg.GroupCommit = 200*time.Millisecond, 300*time.Millisecond
	cfg.HeartbeatInterval, cfg.AgentTTL = 200*time.Millisecond, time.Second
	cfg.LeaseInterval, cfg.LeaseTTL = 300*time.Millisecond, time.Second
	cfg.Warmup, cfg.Duration = 500*time.Millisecond, 2*time.Second
	return cfg
}

func TestLoadSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Postgres")
	}
	cfg := smokeConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := RunLoad(ctx, cfg, nil, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{OpFlushRegister, OpFlushCommit, OpLookupTail, OpLookupRandom, OpHeartbeat, OpLeaseRound, OpGroupHeartbeat, OpGroupCommit} {
		o := res.Op(op)
		if o.Count == 0 {
			t.Errorf("%s: no operation completed (errors %d: %s)", op, o.Errors, o.LastErr)
		}
		if o.Errors > 0 {
			t.Errorf("%s: %d errors, the last: %s", op, o.Errors, o.LastErr)
		}
	}
	if res.PG.TPS <= 0 {
		t.Errorf("Postgres transactions per second not measured: %+v", res.PG)
	}
}

func TestConvergeSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Postgres")
	}
	cfg := smokeConfig(t)
	cfg.Agents = 4
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := RunConverge(ctx, cfg, 0.25, time.Minute, nil, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if res.StartSeconds < 0 || res.KillSeconds < 0 {
		t.Fatalf("ownership did not settle: start %.1fs, after the kill %.1fs; timeline %+v", res.StartSeconds, res.KillSeconds, res.Timeline)
	}
	if res.Killed != 1 {
		t.Errorf("killed %d agents, want 1", res.Killed)
	}
	last := res.Timeline[len(res.Timeline)-1]
	if last.Owned != 200 || last.MaxShare-last.MinShare > 1 {
		t.Errorf("last point %+v: want 200 partitions owned, shares within one", last)
	}
}

func TestSettled(t *testing.T) {
	live := map[string]bool{"a": true, "b": true, "c": true}
	// 10 partitions over 3 agents: fair is 3.3, so shares of 3 or 4.
	for _, tc := range []struct {
		held map[string]int
		want bool
	}{
		{map[string]int{"a": 4, "b": 3, "c": 3}, true},
		{map[string]int{"a": 3, "b": 4, "c": 3, "gone": 0}, true},
		{map[string]int{"a": 5, "b": 3, "c": 2}, false},            // 5 and 2 are more than one off
		{map[string]int{"a": 4, "b": 4, "c": 2}, false},            // 2 is more than one below
		{map[string]int{"a": 4, "b": 3, "c": 2}, false},            // one partition unowned
		{map[string]int{"a": 3, "b": 3, "c": 3, "dead": 1}, false}, // one held by an agent cut off
		{map[string]int{"a": 10}, false},                           // all on one
	} {
		ok, _, _, _ := Settled(tc.held, live, 10)
		if ok != tc.want {
			t.Errorf("Settled(%v) = %v, want %v", tc.held, ok, tc.want)
		}
	}
}

func TestIndexSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Postgres")
	}
	cfg := DefaultIndexConfig()
	cfg.DatabaseURL = testenv.PostgresURL(t)
	cfg.Partitions, cfg.Steps, cfg.Lookups, cfg.Concurrency = 50, []int64{0, 2_000}, 50, 2
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := RunIndex(ctx, cfg, nil, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Steps) != 2 {
		t.Fatalf("%d steps, want 2", len(res.Steps))
	}
	last := res.Steps[1]
	if last.Rows != 2_000 || last.BatchesBytes <= res.Steps[0].BatchesBytes {
		t.Errorf("last step %+v: want 2,000 rows and a larger table than at 0 rows (%d bytes)", last, res.Steps[0].BatchesBytes)
	}
	for _, o := range []OpResult{last.Tail, last.Random, last.Timestamp} {
		if o.Count != uint64(cfg.Lookups) || o.Errors > 0 {
			t.Errorf("%s: %d lookups, %d errors (%s), want %d without errors", o.Op, o.Count, o.Errors, o.LastErr, cfg.Lookups)
		}
	}
}

func TestWeekSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Postgres")
	}
	cfg := DefaultWeekConfig()
	cfg.DatabaseURL = testenv.PostgresURL(t)
	cfg.Partitions, cfg.Hours, cfg.FlushesPerMinute = 4, 1, 2
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := RunWeek(ctx, cfg, nil, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Days) != 1 {
		t.Fatalf("%d measurements, want 1 (the end)", len(res.Days))
	}
	d := res.Days[0]
	if d.Rows == 0 || d.Bytes == 0 || d.Produced == 0 {
		t.Fatalf("after an hour: %+v, want index rows over produced bytes", d)
	}
	if flushes := int64(cfg.Hours * 60 * cfg.FlushesPerMinute); d.Rows >= flushes {
		t.Errorf("%d index rows after %d flushes: merging did not bound them", d.Rows, flushes)
	}
}

func TestGroupsSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Postgres")
	}
	base := smokeConfig(t)
	base.Agents, base.GroupMembers = 2, 3
	base.Warmup, base.Duration = 500*time.Millisecond, 1500*time.Millisecond
	env := Env{AdminURL: base.DatabaseURL, Log: t.Logf}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	runs, err := env.Groups(ctx, GroupsConfig{Base: base, Counts: []int{2, 6}})
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[0].Groups != 2 || runs[1].Groups != 6 {
		t.Fatalf("%d runs, want 2 (2 and 6 groups)", len(runs))
	}
	for _, r := range runs {
		if r.Op(OpFlushCommit).Count != 0 || r.Op(OpLookupTail).Count != 0 {
			t.Errorf("%d groups: produce or lookups ran in a groups run", r.Groups)
		}
		for _, op := range []string{OpGroupHeartbeat, OpGroupCommit} {
			o := r.Op(op)
			if o.Count == 0 || o.Errors > 0 {
				t.Errorf("%d groups, %s: %d done, %d errors (%s)", r.Groups, op, o.Count, o.Errors, o.LastErr)
			}
		}
		if want := float64(r.Groups*r.GroupMembers) / base.GroupCommit.Seconds(); r.Targets[OpGroupCommit] != want {
			t.Errorf("%d groups: commit target %.1f/s, want %.1f", r.Groups, r.Targets[OpGroupCommit], want)
		}
		if r.PG.TPS <= 0 || r.CPUs < 1 {
			t.Errorf("%d groups: Postgres %+v, CPUs %d", r.Groups, r.PG, r.CPUs)
		}
	}
	var b strings.Builder
	WriteGroupTable(&b, runs)
	if rows := strings.Count(b.String(), "\n"); rows != 4 || !strings.Contains(b.String(), "| 6 × 3 |") {
		t.Errorf("group table of %d lines, want a header, a rule and 2 rows:\n%s", rows, b.String())
	}
}

func TestBottleneck(t *testing.T) {
	run := func(reached, busy, lockWaits float64, waits map[string]float64) *LoadResult {
		return &LoadResult{CPUs: 2, Targets: map[string]float64{OpGroupCommit: 100},
			Ops: []OpResult{{Op: OpGroupCommit, PerSec: reached}},
			PG:  PGStats{MachineCPU: busy, LockWaits: lockWaits, WaitEvents: waits}}
	}
	for _, tc := range []struct {
		r    *LoadResult
		want string
	}{
		{run(100, 1.9, 3, nil), "none (every rate met)"},
		{run(97, 0.5, 0, map[string]float64{"IO:WALSync": 0.4}), "none (every rate met); top waits IO:WALSync 0.4"},
		{run(50, 1.9, 3, nil), "CPU: 1.90 of 2 cores busy"},
		{run(50, 1.0, 3, map[string]float64{"Lock:transactionid": 3}), "row locks: 3.0 sessions waiting (Lock:transactionid 3.0)"},
		{run(50, 1.0, 0, map[string]float64{"LWLock:WALWrite": 1}), "Postgres waits: LWLock:WALWrite 1.0"},
		{run(50, 1.0, 0, nil), "the simulator's in-flight bound"},
	} {
		if got := Bottleneck(tc.r); !strings.HasPrefix(got, tc.want) {
			t.Errorf("Bottleneck = %q, want it to start with %q", got, tc.want)
		}
	}
}
