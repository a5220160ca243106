package scale

import (
	"errors"
	"sort"
	"sync"
	"time"

	"silt/bench"
)

// Operation names in reports.
const (
	OpFlushRegister  = "flush register"  // RegisterSegment
	OpFlushCommit    = "flush commit"    // CommitFlush
	OpLookupTail     = "lookup tail"     // LookupBatches at the high watermark
	OpLookupRandom   = "lookup random"   // LookupBatches at a random offset
	OpHeartbeat      = "agent heartbeat" // Heartbeat (ownership loop)
	OpLeaseRound     = "lease round"     // SyncLeases (ownership loop)
	OpGroupHeartbeat = "group heartbeat" // groups.Coordinator.Heartbeat
	OpGroupCommit    = "group commit"    // groups.Coordinator.Commit
	OpGroupJoin      = "group join"      // groups.Coordinator.Join (rejoins)
	// OpNotify is from the start of a commit to its notification reaching
	// the first agent's LISTEN connection.
	OpNotify = "commit to notification"
)

// recorder collects latencies per operation while it is on.
type recorder struct {
	mu  sync.Mutex
	on  bool
	ops map[string]*opStats
}

type opStats struct {
	hist   *bench.Histogram
	errors int64
	// late counts operations that were due but not started because the
	// agent already had its limit in flight (the simulation fell behind).
	late    int64
	lastErr string
}

func newRecorder() *recorder { return &recorder{ops: map[string]*opStats{}} }

func (r *recorder) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on = true
	r.ops = map[string]*opStats{}
}

func (r *recorder) stop() map[string]*opStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on = false
	return r.ops
}

func (r *recorder) get(op string) *opStats {
	s := r.ops[op]
	if s == nil {
		s = &opStats{hist: bench.NewHistogram()}
		r.ops[op] = s
	}
	return s
}

// done records one operation that began at start.
func (r *recorder) done(op string, start time.Time, err error) {
	d := time.Since(start)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.on {
		return
	}
	s := r.get(op)
	if err != nil {
		s.errors++
		s.lastErr = err.Error()
		return
	}
	s.hist.Record(d)
}

// doneAt records an operation that began at start and ended at end.
func (r *recorder) doneAt(op string, start, end time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.on {
		r.get(op).hist.Record(end.Sub(start))
	}
}

// skipped records an operation the simulation could not start in time.
func (r *recorder) skipped(op string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.on {
		r.get(op).late++
	}
}

// OpResult is one operation's figures over a measured phase.
type OpResult struct {
	Op      string  `json:"op"`
	Count   uint64  `json:"count"`
	PerSec  float64 `json:"per_sec"`
	P50     float64 `json:"p50_ms"`
	P99     float64 `json:"p99_ms"`
	Max     float64 `json:"max_ms"`
	Errors  int64   `json:"errors"`
	Late    int64   `json:"late"`
	LastErr string  `json:"last_error,omitempty"`
}

func results(ops map[string]*opStats, elapsed time.Duration) []OpResult {
	out := make([]OpResult, 0, len(ops))
	for name, s := range ops {
		sum := s.hist.Summary()
		out = append(out, OpResult{Op: name, Count: sum.Count, PerSec: float64(sum.Count) / elapsed.Seconds(),
			P50: sum.P50, P99: sum.P99, Max: sum.Max, Errors: s.errors, Late: s.late, LastErr: s.lastErr})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Op < out[j].Op })
	return out
}

// errTimedOut marks an operation that hit its own deadline.
var errTimedOut = errors.New("scale: operation timed out")
