package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"time"

	"silt/internal/toxiproxy"
)

// Kind is a kind of fault.
type Kind string

// The faults. Network faults go through Toxiproxy, between one agent (or
// all) and Postgres (both nodes) or MinIO.
const (
	KAgentKill   Kind = "agent_kill"   // kill -9 an agent; start it again after a while
	KAgentTerm   Kind = "agent_term"   // SIGTERM an agent (graceful stop); start it again
	KAgentPause  Kind = "agent_pause"  // SIGSTOP an agent for longer than its lease TTL, then SIGCONT: a zombie owner
	KPGCrash     Kind = "pg_crash"     // Postgres primary stopped in immediate mode, started again (crash recovery)
	KPGFailover  Kind = "pg_failover"  // Postgres primary killed (kill -9), the synchronous standby promoted
	KMinIOKill   Kind = "minio_kill"   // kill -9 MinIO; start it again
	KPGLatency   Kind = "pg_latency"   // added latency agent <-> Postgres
	KPGBandwidth Kind = "pg_bandwidth" // a bandwidth limit agent <-> Postgres
	KPGReset     Kind = "pg_reset"     // connections agent <-> Postgres reset (TCP RST) as data flows
	KPGBlackhole Kind = "pg_blackhole" // bytes agent <-> Postgres stop, sockets stay open
	KS3Latency   Kind = "s3_latency"   // the same between agents and MinIO
	KS3Bandwidth Kind = "s3_bandwidth" //
	KS3Reset     Kind = "s3_reset"     //
	KS3Blackhole Kind = "s3_blackhole" //
)

// AllKinds lists every fault kind.
var AllKinds = []Kind{
	KAgentKill, KAgentTerm, KAgentPause, KPGCrash, KPGFailover, KMinIOKill,
	KPGLatency, KPGBandwidth, KPGReset, KPGBlackhole,
	KS3Latency, KS3Bandwidth, KS3Reset, KS3Blackhole,
}

// ParseKinds parses a comma-separated list of kinds ("" or "all": every
// kind).
func ParseKinds(s string) ([]Kind, error) {
	if s == "" || s == "all" {
		return slices.Clone(AllKinds), nil
	}
	var out []Kind
	for _, f := range strings.Split(s, ",") {
		k := Kind(strings.TrimSpace(f))
		if !slices.Contains(AllKinds, k) {
			return nil, fmt.Errorf("chaos: unknown fault kind %q (known: %v)", k, AllKinds)
		}
		out = append(out, k)
	}
	return out, nil
}

// FaultConfig shapes the schedule.
type FaultConfig struct {
	Kinds []Kind
	// Gap is the quiet time between one fault's recovery and the next
	// fault, drawn uniformly from [Gap[0], Gap[1]].
	Gap [2]time.Duration
	// Hold is how long an outage or a network fault lasts, drawn from
	// [Hold[0], Hold[1]].
	Hold [2]time.Duration
	// LeaseTTL and FlushTimeout are the agents' settings: a pause lasts
	// from LeaseTTL+1s to LeaseTTL+FlushTimeout+2s, so that some paused
	// agents wake with their flush deadline passed.
	LeaseTTL     time.Duration
	FlushTimeout time.Duration
	// MaxPause caps a pause (0: no cap).
	MaxPause time.Duration
	// RecoveryBound: every agent must serve again this long after a
	// fault is healed.
	RecoveryBound time.Duration
}

// Step is one planned fault.
type Step struct {
	Kind   Kind
	Gap    time.Duration // quiet time before it
	Hold   time.Duration // how long it lasts
	Target string        // an agent id, or "all"
	// Network faults: the toxic.
	Toxic *toxiproxy.Toxic
}

func (s Step) String() string {
	b := fmt.Sprintf("%s target=%s hold=%s", s.Kind, s.Target, s.Hold.Round(time.Millisecond))
	if s.Toxic != nil {
		b += " toxic=" + describeToxic(*s.Toxic)
	}
	return b
}

func describeToxic(t toxiproxy.Toxic) string {
	var attrs []string
	for k, v := range t.Attributes {
		attrs = append(attrs, fmt.Sprintf("%s=%v", k, v))
	}
	slices.Sort(attrs)
	return t.Type + "(" + strings.Join(attrs, ",") + ")"
}

// Schedule draws the fault steps from a seed: the first len(Kinds) steps
// are every kind once in a random order, the rest random kinds. The same
// seed and config give the same steps, whatever happens while they run.
type Schedule struct {
	cfg    FaultConfig
	agents []string
	rng    *rand.Rand
	n      int
	first  []Kind
}

// NewSchedule returns the schedule of seed.
func NewSchedule(seed uint64, cfg FaultConfig, agents []string) *Schedule {
	rng := rand.New(rand.NewPCG(seed, 0x51_17_c4_a0_5))
	first := slices.Clone(cfg.Kinds)
	rng.Shuffle(len(first), func(i, j int) { first[i], first[j] = first[j], first[i] })
	return &Schedule{cfg: cfg, agents: agents, rng: rng, first: first}
}

func (s *Schedule) between(r [2]time.Duration) time.Duration {
	if r[1] <= r[0] {
		return r[0]
	}
	return r[0] + time.Duration(s.rng.Int64N(int64(r[1]-r[0])))
}

// Next draws the next step.
func (s *Schedule) Next() Step {
	var k Kind
	if s.n < len(s.first) {
		k = s.first[s.n]
	} else {
		k = s.cfg.Kinds[s.rng.IntN(len(s.cfg.Kinds))]
	}
	s.n++
	st := Step{Kind: k, Gap: s.between(s.cfg.Gap), Hold: s.between(s.cfg.Hold)}
	agent := s.agents[s.rng.IntN(len(s.agents))]
	switch k {
	case KAgentKill, KAgentTerm:
		st.Target = agent
	case KAgentPause:
		st.Target = agent
		st.Hold = s.between([2]time.Duration{s.cfg.LeaseTTL + time.Second, s.cfg.LeaseTTL + s.cfg.FlushTimeout + 2*time.Second})
		if s.cfg.MaxPause > 0 {
			st.Hold = min(st.Hold, max(s.cfg.MaxPause, s.cfg.LeaseTTL+time.Second))
		}
	case KPGCrash, KPGFailover:
		st.Target = "postgres"
	case KMinIOKill:
		st.Target = "minio"
	default:
		// One agent cut off half the time, every agent the other half.
		st.Target = agent
		if s.rng.IntN(2) == 0 {
			st.Target = "all"
		}
		st.Toxic = s.toxic(k)
	}
	return st
}

// toxic draws the toxic of a network fault; its name is the kind, so that
// healing removes exactly it.
func (s *Schedule) toxic(k Kind) *toxiproxy.Toxic {
	t := toxiproxy.Toxic{Name: string(k), Stream: toxiproxy.Downstream, Toxicity: 1}
	switch k {
	case KPGLatency, KS3Latency:
		ms := 50 + s.rng.IntN(1950)
		t.Type, t.Attributes = "latency", map[string]any{"latency": ms, "jitter": ms / 10}
	case KPGBandwidth, KS3Bandwidth:
		t.Type, t.Attributes = "bandwidth", map[string]any{"rate": 4 + s.rng.IntN(252)} // KB/s
	case KPGReset, KS3Reset:
		t.Type, t.Attributes = "reset_peer", map[string]any{"timeout": 0}
	case KPGBlackhole, KS3Blackhole:
		t.Type, t.Attributes = "timeout", map[string]any{"timeout": 0}
	}
	return &t
}

func service(k Kind) string {
	if strings.HasPrefix(string(k), "s3_") {
		return "s3"
	}
	return "pg"
}

// streams a network fault applies to: latency and bandwidth one way
// (answers are slow), resets and black holes both ways.
func streams(k Kind) []string {
	switch k {
	case KPGReset, KS3Reset, KPGBlackhole, KS3Blackhole:
		return []string{toxiproxy.Upstream, toxiproxy.Downstream}
	}
	return []string{toxiproxy.Downstream}
}

// Nemesis injects the schedule's faults one at a time, heals each and
// waits for the agents to recover before the next.
type Nemesis struct {
	env    *Env
	rec    *Recorder
	sched  *Schedule
	cfg    FaultConfig
	probe  *prober
	logf   func(format string, args ...any)
	Steps  []Step
	active *Step
}

// Run injects faults until ctx ends (at the end of the fault phase) and,
// when all is true, at least until every kind ran once. It heals the
// fault in progress before it returns.
func (n *Nemesis) Run(ctx context.Context, all bool) {
	for i := 0; ; i++ {
		if ctx.Err() != nil && (!all || i >= len(n.cfg.Kinds)) {
			return
		}
		st := n.sched.Next()
		wait := ctx
		if all && i < len(n.cfg.Kinds) {
			wait = context.WithoutCancel(ctx)
		}
		if !sleepCtx(wait, st.Gap) {
			return
		}
		n.Steps = append(n.Steps, st)
		n.step(wait, st)
	}
}

// step injects, holds, heals one fault and waits for recovery.
func (n *Nemesis) step(ctx context.Context, st Step) {
	bg := context.WithoutCancel(ctx)
	if st.Kind == KPGFailover {
		wctx, cancel := context.WithTimeout(bg, 3*time.Minute)
		err := n.env.WaitStandby(wctx)
		cancel()
		if err != nil {
			n.logf("skipping %s: %v", st, err)
			return
		}
	}
	info := &FaultInfo{Kind: st.Kind, Target: st.Target, Params: paramsOf(st)}
	n.logf("fault: %s", st)
	op := n.rec.Invoke(Event{Process: "nemesis", F: FFault, Fault: info})
	heal, err := n.inject(bg, st)
	var healErr error
	if heal != nil {
		sleepCtx(bg, st.Hold)
	}
	// Recovery is timed from here: restarts, promotion and removing the
	// toxics count.
	healing := time.Now()
	if heal != nil {
		healErr = heal(bg)
	}
	switch {
	case err != nil:
		n.logf("inject %s: %v", st.Kind, err)
		op.End(Info, Event{Error: "inject: " + err.Error()})
	case healErr != nil:
		n.logf("heal %s: %v", st.Kind, healErr)
		op.End(Info, Event{Error: "heal: " + healErr.Error()})
	default:
		op.End(OK, Event{})
	}
	rctx, cancel := context.WithDeadline(bg, healing.Add(n.cfg.RecoveryBound))
	err = n.probe.recovered(rctx)
	cancel()
	took := time.Since(healing)
	ri := *info
	ri.Took = took
	if err != nil {
		n.logf("not recovered within %s after %s: %v", n.cfg.RecoveryBound, st, err)
		n.rec.Single(Fail, Event{Process: "nemesis", F: FRecovery, Fault: &ri, Error: err.Error()})
		// Go on: later faults and the final check will tell more.
		return
	}
	n.logf("recovered from %s in %s", st.Kind, took.Round(time.Millisecond))
	n.rec.Single(OK, Event{Process: "nemesis", F: FRecovery, Fault: &ri})
}

func paramsOf(st Step) string {
	p := "hold=" + st.Hold.Round(time.Millisecond).String()
	if st.Toxic != nil {
		p += " " + describeToxic(*st.Toxic)
	}
	return p
}

// inject starts the fault and returns what heals it.
func (n *Nemesis) inject(ctx context.Context, st Step) (func(context.Context) error, error) {
	e := n.env
	switch st.Kind {
	case KAgentKill:
		if err := e.KillAgent(ctx, st.Target); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return e.StartAgent(ctx, st.Target) }, nil
	case KAgentTerm:
		if err := e.TermAgent(ctx, st.Target); err != nil {
			// It stopped, but not cleanly (exit status): still restart it.
			n.logf("SIGTERM of %s: %v", st.Target, err)
		}
		return func(ctx context.Context) error { return e.StartAgent(ctx, st.Target) }, nil
	case KAgentPause:
		if err := e.SignalAgent(st.Target, syscall.SIGSTOP); err != nil {
			return nil, err
		}
		return func(context.Context) error { return e.SignalAgent(st.Target, syscall.SIGCONT) }, nil
	case KPGCrash:
		if err := e.CrashPostgres(ctx); err != nil {
			return nil, err
		}
		return e.RestartPostgres, nil
	case KPGFailover:
		if err := e.KillPrimary(ctx); err != nil {
			return nil, err
		}
		// The standby is promoted after the hold: until then nothing
		// takes writes.
		return e.Promote, nil
	case KMinIOKill:
		if err := e.KillMinIO(); err != nil {
			return nil, err
		}
		return e.StartMinIO, nil
	}
	if st.Toxic == nil {
		return nil, fmt.Errorf("chaos: unknown fault %s", st.Kind)
	}
	agents := []string{st.Target}
	if st.Target == "all" {
		agents = e.AgentIDs()
	}
	svc := service(st.Kind)
	var names []string
	for _, stream := range streams(st.Kind) {
		t := *st.Toxic
		t.Stream, t.Name = stream, t.Name+"_"+stream
		if err := e.Toxic(ctx, agents, svc, t); err != nil {
			return func(ctx context.Context) error { return n.removeToxics(ctx, agents, svc, append(names, t.Name)) }, err
		}
		names = append(names, t.Name)
	}
	return func(ctx context.Context) error { return n.removeToxics(ctx, agents, svc, names) }, nil
}

func (n *Nemesis) removeToxics(ctx context.Context, agents []string, svc string, names []string) error {
	var errs []error
	for _, name := range names {
		errs = append(errs, n.env.RemoveToxic(ctx, agents, svc, name))
	}
	return errors.Join(errs...)
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
