package scale

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// GroupsConfig is the groups sweep: Base run with consumer group members
// only (no produce, no lookups; the agents' heartbeats, lease rounds and
// janitor still run) at each group count of Counts.
type GroupsConfig struct {
	Base   Config
	Counts []int
}

// DefaultGroupsConfig is 10 to 10,000 groups of 10 members on 10 agents,
// members heartbeating every 3 s and committing every 5 s (Kafka's
// default heartbeat interval and auto-commit interval).
func DefaultGroupsConfig() GroupsConfig {
	base := DefaultConfig()
	base.Agents = 10
	base.GroupMembers = 10
	base.GroupHeartbeat, base.GroupCommit = 3*time.Second, 5*time.Second
	return GroupsConfig{Base: base, Counts: []int{10, 100, 1_000, 10_000}}
}

// groupsOnly is base with only group members at groups groups.
func groupsOnly(base Config, groups int) Config {
	cfg := base
	cfg.Topics, cfg.FlushRate, cfg.LookupRate, cfg.Groups = 0, 0, 0, groups
	return cfg
}

// Groups runs the groups sweep, each step in a fresh database. A failed
// step is reported in the error; the steps before it are returned.
func (e Env) Groups(ctx context.Context, gc GroupsConfig) ([]*LoadResult, error) {
	if len(gc.Counts) == 0 {
		return nil, errors.New("scale: the groups sweep needs at least one group count")
	}
	var out []*LoadResult
	for _, n := range gc.Counts {
		r, err := e.Load(ctx, groupsOnly(gc.Base, n))
		if err != nil {
			return out, fmt.Errorf("scale: %d groups: %w", n, err)
		}
		h, c := r.Op(OpGroupHeartbeat), r.Op(OpGroupCommit)
		e.logf()("groups %d: heartbeats %.0f/s (target %.0f) p99 %.1f ms, commits %.0f/s (target %.0f) p99 %.1f ms; Postgres %.0f xact/s, %.2f cores; %s",
			n, h.PerSec, r.Targets[OpGroupHeartbeat], h.P99, c.PerSec, r.Targets[OpGroupCommit], c.P99, r.PG.TPS, r.PG.CPU, Bottleneck(r))
		out = append(out, r)
	}
	return out, nil
}

// loadAverages are the machine's 1-, 5- and 15-minute load averages as
// /proc/loadavg gives them (nil when unknown).
func loadAverages() []string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return nil
	}
	return f[:3]
}

// loadAverage is the machine's 1-minute load average (-1 when unknown).
func loadAverage() float64 {
	f := loadAverages()
	if f == nil {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// Bottleneck names, from a run's figures, what limited it first: when some
// operation fell short of its target rate (by more than 5%), the resource
// that ran out (the machine's CPU when nine tenths of its cores were busy,
// else row locks when sessions waited on them, else the top wait event,
// else the simulator's in-flight bound); when every rate was met, "none"
// with what Postgres waited on most. A reading of the figures, not a
// measurement of its own.
func Bottleneck(r *LoadResult) string {
	short := []string{}
	for _, o := range r.Ops {
		if t, ok := r.Targets[o.Op]; ok && t > 0 && o.PerSec < 0.95*t {
			short = append(short, fmt.Sprintf("%s %.0f%%", o.Op, 100*o.PerSec/t))
		}
	}
	cpus := r.CPUs
	if cpus <= 0 {
		cpus = runtime.NumCPU()
	}
	top := topWait(r.PG)
	if len(short) == 0 {
		if top == "–" {
			return "none (every rate met)"
		}
		return "none (every rate met); top waits " + top
	}
	reached := strings.Join(short, ", ") + " of target"
	switch {
	case r.PG.MachineCPU >= 0.9*float64(cpus):
		return fmt.Sprintf("CPU: %.2f of %d cores busy (Postgres %s); %s", r.PG.MachineCPU, cpus, cores(r.PG.CPU), reached)
	case r.PG.LockWaits >= 0.5:
		return fmt.Sprintf("row locks: %.1f sessions waiting (%s); %s", r.PG.LockWaits, top, reached)
	case top != "–":
		return fmt.Sprintf("Postgres waits: %s; %s", top, reached)
	}
	return "the simulator's in-flight bound; " + reached
}
