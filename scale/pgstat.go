package scale

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// PGStats is what Postgres did over a measured phase.
type PGStats struct {
	// TPS is committed plus rolled back transactions per second
	// (pg_stat_database), every session of the database included.
	TPS       float64 `json:"tps"`
	Rollbacks float64 `json:"rollbacks_per_sec"`
	// Sessions is the mean of the database's client sessions, Active of
	// those running a statement, sampled four times a second.
	Sessions float64 `json:"sessions"`
	Active   float64 `json:"active"`
	// LockWaits is the mean, and LockWaitsMax the most, of sessions
	// waiting on a heavyweight lock (wait_event_type Lock); NotGranted the
	// mean of ungranted pg_locks entries; WaitEvents the share of samples
	// of waiting sessions by wait event (Lock:tuple, LWLock:WALWrite...).
	LockWaits    float64            `json:"lock_waits"`
	LockWaitsMax int                `json:"lock_waits_max"`
	NotGranted   float64            `json:"not_granted"`
	WaitEvents   map[string]float64 `json:"wait_events,omitempty"`
	// CPU is the cores the Postgres processes used (their user and system
	// time over the phase's length); -1 when they are not on this machine.
	CPU float64 `json:"cpu_cores"`
	// MachineCPU is the cores busy on the whole machine, and SimCPU those
	// of this process (the simulated agents).
	MachineCPU float64 `json:"machine_cpu_cores"`
	SimCPU     float64 `json:"sim_cpu_cores"`
	// BlocksRead is shared buffer misses per second; HitRatio the share
	// of block reads found in shared buffers.
	BlocksRead float64 `json:"blocks_read_per_sec"`
	HitRatio   float64 `json:"hit_ratio"`
	// WALBytes is WAL written per second.
	WALBytes float64 `json:"wal_bytes_per_sec"`
	// Statements are the statements that took the most of Postgres's
	// time (pg_stat_statements, when the server loads it).
	Statements []StatementStat `json:"statements,omitempty"`
}

// StatementStat is one statement's share of Postgres's time in a phase.
type StatementStat struct {
	Query   string  `json:"query"`
	Calls   int64   `json:"calls"`
	MeanMs  float64 `json:"mean_ms"`
	TotalMs float64 `json:"total_ms"`
	// Share is of the time of all statements of the database.
	Share float64 `json:"share"`
}

type dbCounters struct {
	xacts, rollbacks, blksRead, blksHit int64
	wal                                 int64
}

// sampler watches Postgres during a phase over a connection of its own.
type sampler struct {
	conn    *pgx.Conn
	pgPID   int // the postmaster, when on this machine (0: not found)
	mu      sync.Mutex
	samples int
	sums    struct{ sessions, active, lockWaits, notGranted float64 }
	maxLock int
	waits   map[string]int
	waiting int

	statements bool // pg_stat_statements was reset at the start
	start      time.Time
	startDB    dbCounters
	startPG    float64
	startSelf  float64
	startBusy  float64
	stopSample func()
	done       chan struct{}
}

func newSampler(ctx context.Context, url string) (*sampler, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("scale: sampler connect: %w", err)
	}
	s := &sampler{conn: conn, waits: map[string]int{}}
	var backend int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err == nil {
		s.pgPID = parentPID(backend)
	}
	return s, nil
}

func (s *sampler) close(ctx context.Context) { _ = s.conn.Close(ctx) }

func (s *sampler) counters(ctx context.Context) (dbCounters, error) {
	var c dbCounters
	err := s.conn.QueryRow(ctx, `
		SELECT xact_commit + xact_rollback, xact_rollback, blks_read, blks_hit,
		       (pg_current_wal_lsn() - '0/0')::bigint
		FROM pg_stat_database WHERE datname = current_database()`).Scan(&c.xacts, &c.rollbacks, &c.blksRead, &c.blksHit, &c.wal)
	return c, err
}

// begin starts a phase: counters now, then samples until end.
func (s *sampler) begin(ctx context.Context) error {
	// pg_stat_database is updated by backends at most every second or so;
	// a snapshot cleared now reads the latest.
	_, _ = s.conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`)
	c, err := s.counters(ctx)
	if err != nil {
		return fmt.Errorf("scale: read pg_stat_database: %w", err)
	}
	s.statements = false
	if _, err := s.conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err == nil {
		_, err = s.conn.Exec(ctx, `SELECT pg_stat_statements_reset()`)
		s.statements = err == nil
	}
	s.mu.Lock()
	s.samples, s.maxLock, s.waiting = 0, 0, 0
	s.sums = struct{ sessions, active, lockWaits, notGranted float64 }{}
	s.waits = map[string]int{}
	s.mu.Unlock()
	s.start, s.startDB = time.Now(), c
	s.startPG, s.startSelf, s.startBusy = processTreeCPU(s.pgPID), processCPU(os.Getpid()), machineBusy()
	// Stopping must not cancel a sample's query: pgx closes a connection
	// whose query is cancelled.
	stop := make(chan struct{})
	s.stopSample, s.done = func() { close(stop) }, make(chan struct{})
	go s.loop(ctx, stop)
	return nil
}

func (s *sampler) loop(ctx context.Context, stop <-chan struct{}) {
	defer close(s.done)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-t.C:
		}
		s.sample(ctx)
	}
}

func (s *sampler) sample(ctx context.Context) {
	rows, err := s.conn.Query(ctx, `
		SELECT coalesce(state, ''), coalesce(wait_event_type, ''), coalesce(wait_event, '')
		FROM pg_stat_activity
		WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()`)
	if err != nil {
		return
	}
	var sessions, active, lockWaits int
	waits := map[string]int{}
	for rows.Next() {
		var state, wtype, wevent string
		if rows.Scan(&state, &wtype, &wevent) != nil {
			continue
		}
		sessions++
		if state == "active" {
			active++
			if wtype != "" && wtype != "Client" {
				waits[wtype+":"+wevent]++
			}
		}
		if wtype == "Lock" {
			lockWaits++
		}
	}
	rows.Close()
	var notGranted int
	_ = s.conn.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE NOT granted`).Scan(&notGranted)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples++
	s.sums.sessions += float64(sessions)
	s.sums.active += float64(active)
	s.sums.lockWaits += float64(lockWaits)
	s.sums.notGranted += float64(notGranted)
	s.maxLock = max(s.maxLock, lockWaits)
	for k, v := range waits {
		s.waits[k] += v
		s.waiting += v
	}
}

// end stops sampling and returns the phase's figures.
func (s *sampler) end(ctx context.Context) (PGStats, error) {
	s.stopSample()
	<-s.done
	elapsed := time.Since(s.start).Seconds()
	pgCPU, selfCPU, busy := processTreeCPU(s.pgPID), processCPU(os.Getpid()), machineBusy()
	// Busy backends report their counters at most every second, so both
	// ends of the phase lag by about as much; call end while the load
	// still runs.
	_, _ = s.conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`)
	c, err := s.counters(ctx)
	if err != nil {
		return PGStats{}, fmt.Errorf("scale: read pg_stat_database: %w", err)
	}
	var stmts []StatementStat
	if s.statements {
		stmts = s.topStatements(ctx)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := float64(max(s.samples, 1))
	st := PGStats{
		TPS:          float64(c.xacts-s.startDB.xacts) / elapsed,
		Rollbacks:    float64(c.rollbacks-s.startDB.rollbacks) / elapsed,
		Sessions:     s.sums.sessions / n,
		Active:       s.sums.active / n,
		LockWaits:    s.sums.lockWaits / n,
		LockWaitsMax: s.maxLock,
		NotGranted:   s.sums.notGranted / n,
		CPU:          -1,
		SimCPU:       (selfCPU - s.startSelf) / elapsed,
		MachineCPU:   (busy - s.startBusy) / elapsed,
		BlocksRead:   float64(c.blksRead-s.startDB.blksRead) / elapsed,
		Statements:   stmts,
		WALBytes:     float64(c.wal-s.startDB.wal) / elapsed,
	}
	if reads := float64(c.blksRead - s.startDB.blksRead + c.blksHit - s.startDB.blksHit); reads > 0 {
		st.HitRatio = float64(c.blksHit-s.startDB.blksHit) / reads
	}
	if s.pgPID > 0 {
		st.CPU = (pgCPU - s.startPG) / elapsed
	}
	if s.waiting > 0 {
		st.WaitEvents = map[string]float64{}
		type kv struct {
			k string
			v int
		}
		var all []kv
		for k, v := range s.waits {
			all = append(all, kv{k, v})
		}
		sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
		for i, e := range all {
			if i == 5 {
				break
			}
			st.WaitEvents[e.k] = float64(e.v) / n
		}
	}
	return st, nil
}

// topStatements reads the eight statements of the database that took the
// most time since the reset.
func (s *sampler) topStatements(ctx context.Context) []StatementStat {
	rows, err := s.conn.Query(ctx, `
		SELECT query, calls, mean_exec_time, total_exec_time,
		       total_exec_time / nullif(sum(total_exec_time) OVER (), 0)
		FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		ORDER BY total_exec_time DESC LIMIT 8`)
	if err != nil {
		return nil
	}
	defer rows.Close()
	var out []StatementStat
	for rows.Next() {
		var st StatementStat
		var share *float64
		if rows.Scan(&st.Query, &st.Calls, &st.MeanMs, &st.TotalMs, &share) != nil {
			return out
		}
		if share != nil {
			st.Share = *share
		}
		st.Query = strings.Join(strings.Fields(st.Query), " ")
		if len(st.Query) > 100 {
			st.Query = st.Query[:100] + "…"
		}
		out = append(out, st)
	}
	return out
}

// clockTicks is USER_HZ, the unit of /proc times (100 on Linux).
const clockTicks = 100.0

// procStat returns a process's parent, and its user and system time and
// those of its waited-for children, in seconds.
func procStat(pid int) (ppid int, self, children float64, ok bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, 0, false
	}
	// The command name is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return 0, 0, 0, false
	}
	num := func(k int) float64 { v, _ := strconv.ParseFloat(f[k], 64); return v }
	pp, _ := strconv.Atoi(f[1])
	// Fields after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
	return pp, (num(11) + num(12)) / clockTicks, (num(13) + num(14)) / clockTicks, true
}

func parentPID(pid int) int {
	pp, _, _, ok := procStat(pid)
	if !ok {
		return 0
	}
	return pp
}

// processCPU is a process's own CPU seconds.
func processCPU(pid int) float64 {
	_, self, _, _ := procStat(pid)
	return self
}

// processTreeCPU is the CPU seconds of the postmaster, of its live
// children (backends, walwriter, checkpointer...) and of those that
// exited (counted in the postmaster's children times once reaped).
func processTreeCPU(postmaster int) float64 {
	if postmaster <= 0 {
		return 0
	}
	_, self, reaped, ok := procStat(postmaster)
	if !ok {
		return 0
	}
	total := self + reaped
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, cpu, _, ok := procStat(pid); ok && pp == postmaster {
			total += cpu
		}
	}
	return total
}

// machineBusy is the machine's non-idle CPU seconds since boot.
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0
	}
	var busy float64
	for i, v := range f[1:] {
		x, _ := strconv.ParseFloat(v, 64)
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest times are already in user
			break
		}
		busy += x
	}
	return busy / clockTicks
}
