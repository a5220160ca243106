package scale

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"silt/groups"
	"silt/metadata"
)

// LoadResult is one load run's figures.
type LoadResult struct {
	Agents          int     `json:"agents"`
	Partitions      int     `json:"partitions"`
	FlushPartitions int     `json:"flush_partitions"`
	FlushRate       float64 `json:"flush_rate_per_agent"`
	Groups          int     `json:"groups"`
	GroupMembers    int     `json:"group_members"`
	// GroupHeartbeatSeconds and GroupCommitSeconds are each member's
	// intervals.
	GroupHeartbeatSeconds float64 `json:"group_heartbeat_seconds"`
	GroupCommitSeconds    float64 `json:"group_commit_seconds"`
	Janitor               bool    `json:"janitor"`
	// LoadAvg is the machine's 1-minute load average when the run
	// started, CPUs its cores: the machine is shared.
	LoadAvg float64 `json:"load_avg_at_start"`
	CPUs    int     `json:"cpus"`
	// Targets is the rate asked of each operation, per second.
	Targets map[string]float64 `json:"targets"`
	Ops     []OpResult         `json:"ops"`
	PG      PGStats            `json:"postgres"`
	Seconds float64            `json:"seconds"`
}

// Op returns the figures of op (zero when it did not run).
func (r *LoadResult) Op(op string) OpResult { return opResults(r.Ops).find(op) }

// RunLoad runs one load on a fresh database (cfg.DatabaseURL): it creates
// the topics and groups, starts the agents, runs the load for Warmup and
// then Duration, measured, and stops everything.
func RunLoad(ctx context.Context, cfg Config, logger *slog.Logger, pr logf) (*LoadResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger, pr = orQuiet(logger, pr)
	setupStore, err := openStore(ctx, cfg.DatabaseURL, "setup", 4, logger)
	if err != nil {
		return nil, err
	}
	defer setupStore.Close()
	cl, err := setup(ctx, setupStore, cfg, pr)
	if err != nil {
		return nil, err
	}
	loadAvg := loadAverage()
	rec := newRecorder()
	agents, err := startAgents(ctx, cfg, cfg.DatabaseURL, rec, logger)
	if err != nil {
		return nil, err
	}
	defer stopAgents(ctx, agents)
	smp, err := newSampler(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	defer smp.close(ctx)

	lctx, stopLoad := context.WithCancel(ctx)
	w := &workload{cfg: cfg, cl: cl, rec: rec}
	var wg sync.WaitGroup
	if cfg.Listen {
		ready := make(chan error, len(agents))
		for i := range agents {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.listen(lctx, cfg.DatabaseURL, i == 0, ready)
			}()
		}
		for range agents {
			if err := <-ready; err != nil {
				stopLoad()
				wg.Wait()
				return nil, fmt.Errorf("scale: listen: %w", err)
			}
		}
	}
	for i, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.runAgent(lctx, i, a)
		}()
	}
	pr("load: %d agents, %d partitions, %d chunks per flush, %.1f flushes/s per agent, %d groups; warming up %v",
		cfg.Agents, cfg.Topics*cfg.Partitions, cfg.FlushPartitions, cfg.FlushRate, cfg.Groups, cfg.Warmup)
	if err := sleepCtx(ctx, cfg.Warmup); err != nil {
		stopLoad()
		wg.Wait()
		return nil, err
	}
	rec.start()
	if err := smp.begin(ctx); err != nil {
		stopLoad()
		wg.Wait()
		return nil, err
	}
	began := time.Now()
	err = sleepCtx(ctx, cfg.Duration)
	pg, perr := smp.end(ctx)
	elapsed := time.Since(began)
	ops := rec.stop()
	stopLoad()
	wg.Wait()
	if err := errors.Join(err, perr); err != nil {
		return nil, err
	}
	res := &LoadResult{Agents: cfg.Agents, Partitions: cfg.Topics * cfg.Partitions, FlushPartitions: cfg.FlushPartitions,
		FlushRate: cfg.FlushRate, Groups: cfg.Groups, GroupMembers: cfg.GroupMembers, Janitor: cfg.Janitor,
		LoadAvg: loadAvg, CPUs: runtime.NumCPU(),
		GroupHeartbeatSeconds: cfg.GroupHeartbeat.Seconds(), GroupCommitSeconds: cfg.GroupCommit.Seconds(),
		Ops: results(ops, elapsed), PG: pg, Seconds: elapsed.Seconds(), Targets: map[string]float64{
			OpFlushCommit:   float64(cfg.Agents) * cfg.FlushRate,
			OpFlushRegister: float64(cfg.Agents) * cfg.FlushRate,
			OpLookupTail:    float64(cfg.Agents) * cfg.LookupRate / 2,
			OpLookupRandom:  float64(cfg.Agents) * cfg.LookupRate / 2,
			OpHeartbeat:     float64(cfg.Agents) / cfg.HeartbeatInterval.Seconds(),
			OpLeaseRound:    float64(cfg.Agents) / cfg.LeaseInterval.Seconds(),
		}}
	if cfg.Groups > 0 {
		members := float64(cfg.Groups * cfg.GroupMembers)
		res.Targets[OpGroupHeartbeat] = members / cfg.GroupHeartbeat.Seconds()
		res.Targets[OpGroupCommit] = members / cfg.GroupCommit.Seconds()
	}
	return res, nil
}

// startAgents opens and starts cfg.Agents agents at once.
func startAgents(ctx context.Context, cfg Config, dbURL string, rec *recorder, logger *slog.Logger) ([]*simAgent, error) {
	agents := make([]*simAgent, cfg.Agents)
	for i := range agents {
		a, err := newSimAgent(ctx, cfg, dbURL, fmt.Sprintf("agent-%03d", i), rec, logger)
		if err != nil {
			for _, a := range agents[:i] {
				a.close()
			}
			return nil, err
		}
		agents[i] = a
	}
	errs := make([]error, len(agents))
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = a.start(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		stopAgents(ctx, agents)
		return nil, err
	}
	return agents, nil
}

func stopAgents(ctx context.Context, agents []*simAgent) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.stop(ctx)
		}()
	}
	wg.Wait()
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// workload drives the agents' flushes, lookups and group members.
type workload struct {
	cfg Config
	cl  *cluster
	rec *recorder
	// commits maps "topic:partition:high watermark", as notifications
	// name them, to when the commit that set it began.
	commits sync.Map
}

func (w *workload) runAgent(ctx context.Context, idx int, a *simAgent) {
	var wg sync.WaitGroup
	run := func(fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn()
		}()
	}
	if w.cfg.FlushRate > 0 {
		run(func() { w.flushLoop(ctx, a) })
	}
	if w.cfg.LookupRate > 0 {
		run(func() { w.lookupLoop(ctx, a) })
	}
	if w.cfg.Groups > 0 {
		run(func() { w.groupLoop(ctx, idx, a) })
	}
	wg.Wait()
}

// every calls fn at rate per second, from a random phase, starting it
// only while fewer than inflight are running; a call that cannot start
// counts as late for op.
func (w *workload) every(ctx context.Context, rate float64, inflight int, op string, fn func(ctx context.Context)) {
	interval := time.Duration(float64(time.Second) / rate)
	if err := sleepCtx(ctx, time.Duration(rand.Int64N(int64(interval)))); err != nil {
		return
	}
	sem := make(chan struct{}, inflight)
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		select {
		case sem <- struct{}{}:
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				fn(ctx)
			}()
		default:
			w.rec.skipped(op)
		}
	}
}

func (w *workload) flushLoop(ctx context.Context, a *simAgent) {
	var seq int64
	var mu sync.Mutex
	w.every(ctx, w.cfg.FlushRate, w.cfg.FlushInflight, OpFlushCommit, func(ctx context.Context) {
		mu.Lock()
		seq++
		n := seq
		mu.Unlock()
		w.flush(ctx, a, n)
	})
}

// flush registers a segment and commits one chunk in each of
// FlushPartitions random partitions, as a batcher's flush does.
func (w *workload) flush(ctx context.Context, a *simAgent, seq int64) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
	defer cancel()
	total := len(w.cl.hwm)
	picked := make(map[int]bool, w.cfg.FlushPartitions)
	idx := make([]int, 0, w.cfg.FlushPartitions)
	for len(idx) < w.cfg.FlushPartitions {
		i := rand.IntN(total)
		if !picked[i] {
			picked[i] = true
			idx = append(idx, i)
		}
	}
	chunks := make([]metadata.Chunk, len(idx))
	var off int64 = 16
	now := time.Now().UnixMilli()
	for k, i := range idx {
		topic, part := w.cl.partition(i)
		recs := int32(1 + rand.IntN(20))
		length := int32(200 + rand.IntN(4000))
		chunks[k] = metadata.Chunk{TopicID: topic, Partition: part, ByteOffset: off, ByteLength: length,
			Records: recs, LastOffsetDelta: recs - 1, MaxTimestamp: now}
		off += int64(length)
	}
	start := time.Now()
	id, err := a.store.RegisterSegment(ctx, fmt.Sprintf("segments/scale/%s/%d.seg", a.id, seq), off+64, metadata.KindFlush, 30*time.Second)
	w.rec.done(OpFlushRegister, start, err)
	if err != nil {
		return
	}
	start = time.Now()
	res, err := a.store.CommitFlush(ctx, metadata.Flush{SegmentID: id, SegmentSize: off + 64, Chunks: chunks})
	w.rec.done(OpFlushCommit, start, err)
	if err != nil {
		return
	}
	for k, r := range res {
		if r.Err == nil {
			h := &w.cl.hwm[idx[k]]
			next := r.BaseOffset + int64(chunks[k].LastOffsetDelta) + 1
			if w.cfg.Listen && rand.IntN(10) == 0 {
				w.commits.Store(fmt.Sprintf("%d:%d:%d", chunks[k].TopicID, chunks[k].Partition, next), start)
			}
			for {
				cur := h.Load()
				if cur >= next || h.CompareAndSwap(cur, next) {
					break
				}
			}
		}
	}
}

func (w *workload) lookupLoop(ctx context.Context, a *simAgent) {
	w.every(ctx, w.cfg.LookupRate, w.cfg.PoolSize, OpLookupTail, func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
		defer cancel()
		i := rand.IntN(len(w.cl.hwm))
		topic, part := w.cl.partition(i)
		hwm := w.cl.hwm[i].Load()
		op, offset := OpLookupTail, max(hwm-1, 0)
		if rand.IntN(2) == 0 {
			op = OpLookupRandom
			if hwm > 0 {
				offset = rand.Int64N(hwm)
			}
		}
		start := time.Now()
		_, _, err := a.store.LookupBatches(ctx, topic, part, offset, 1<<20, 1000)
		w.rec.done(op, start, err)
	})
}

// member is a simulated group member.
type member struct {
	mu     sync.Mutex // one operation at a time, as a consumer's thread
	group  string
	topic  string
	id     string
	gen    int64
	assign []metadata.GroupPartition
}

type event struct {
	due    time.Time
	m      *member
	commit bool
}

type eventHeap []event

func (h eventHeap) Len() int           { return len(h) }
func (h eventHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h eventHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)        { *h = append(*h, x.(event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// groupLoop runs the members of this agent's groups (every group whose
// index is idx modulo the agents): heartbeats and commits at their
// intervals, at most GroupInflight at a time; when Postgres cannot keep
// up, operations run late and the rate reached falls below the target.
func (w *workload) groupLoop(ctx context.Context, idx int, a *simAgent) {
	var mu sync.Mutex
	h := &eventHeap{}
	now := time.Now()
	for g := idx; g < len(w.cl.groups); g += w.cfg.Agents {
		sg := w.cl.groups[g]
		for _, id := range sg.members {
			m := &member{group: sg.name, topic: sg.topic, id: id, gen: 1, assign: sg.assign[id]}
			heap.Push(h, event{due: now.Add(time.Duration(rand.Int64N(int64(w.cfg.GroupHeartbeat)))), m: m})
			heap.Push(h, event{due: now.Add(time.Duration(rand.Int64N(int64(w.cfg.GroupCommit)))), m: m, commit: true})
		}
	}
	sem := make(chan struct{}, w.cfg.GroupInflight)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		mu.Lock()
		if h.Len() == 0 {
			mu.Unlock()
			return
		}
		e := (*h)[0]
		wait := time.Until(e.due)
		if wait <= 0 {
			heap.Pop(h)
		}
		mu.Unlock()
		if wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case sem <- struct{}{}:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			w.memberOp(ctx, a, e)
			next := e
			if e.commit {
				next.due = e.due.Add(w.cfg.GroupCommit)
			} else {
				next.due = e.due.Add(w.cfg.GroupHeartbeat)
			}
			mu.Lock()
			heap.Push(h, next)
			mu.Unlock()
		}()
	}
}

// memberOp runs one heartbeat or commit through the coordinator, and
// rejoins when the group rebalanced or the member expired.
func (w *workload) memberOp(ctx context.Context, a *simAgent, e event) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
	defer cancel()
	m := e.m
	m.mu.Lock()
	defer m.mu.Unlock()
	var err error
	start := time.Now()
	if e.commit {
		if len(m.assign) == 0 {
			return
		}
		offs := make([]groups.OffsetCommit, len(m.assign))
		for i, p := range m.assign {
			offs[i] = groups.OffsetCommit{Topic: p.Topic, Partition: p.Partition, Offset: 0}
		}
		err = a.coord.Commit(ctx, m.group, groups.CommitRequest{MemberID: m.id, Generation: m.gen, Offsets: offs})
		w.rec.done(OpGroupCommit, start, err)
	} else {
		var res groups.HeartbeatResult
		res, err = a.coord.Heartbeat(ctx, m.group, m.id, m.gen)
		w.rec.done(OpGroupHeartbeat, start, err)
		if err == nil && res.Rejoin {
			err = groups.ErrStaleGeneration
		}
	}
	switch {
	case errors.Is(err, groups.ErrStaleGeneration):
		w.join(ctx, a, m, m.id)
	case errors.Is(err, groups.ErrMemberNotFound):
		w.join(ctx, a, m, "")
	}
}

func (w *workload) join(ctx context.Context, a *simAgent, m *member, id string) {
	start := time.Now()
	req := groups.JoinRequest{MemberID: id}
	if id == "" {
		req.Topics = []string{m.topic}
	}
	res, err := a.coord.Join(ctx, m.group, req)
	w.rec.done(OpGroupJoin, start, err)
	if err != nil {
		return
	}
	m.id, m.gen = res.MemberID, res.Generation
	m.assign = nil
	for _, as := range res.Assignments {
		m.assign = append(m.assign, metadata.GroupPartition{Topic: as.Topic, TopicID: as.TopicID, Partition: as.Partition})
	}
}

// listen holds a LISTEN connection on the commit channel, as an agent's
// notifier does, until ctx ends. The first agent's listener (timed)
// records how long after the start of each commit its notification
// arrives.
func (w *workload) listen(ctx context.Context, dbURL string, timed bool, ready chan<- error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		ready <- err
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{metadata.NotifyChannel}.Sanitize()); err != nil {
		ready <- err
		return
	}
	ready <- nil
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return
		}
		if !timed {
			continue
		}
		now := time.Now()
		for _, e := range strings.Fields(n.Payload) {
			if v, ok := w.commits.LoadAndDelete(e); ok {
				w.rec.doneAt(OpNotify, v.(time.Time), now)
			}
		}
	}
}
