package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"silt/client"
)

// Config is one run of the suite.
type Config struct {
	// Seed draws the fault schedule and the workloads' choices.
	Seed uint64
	// Duration of the fault phase.
	Duration time.Duration
	// EveryKind keeps the fault phase going until every kind of fault ran
	// once, even past Duration (the smoke test).
	EveryKind bool
	// Quiet: after the faults, producers go on this long on the healed
	// cluster before they stop and the consumers drain.
	Quiet time.Duration

	StateDir     string // scratch space (Postgres, MinIO, logs); removed by the caller
	Out          string // where history.jsonl, verdict.json and verdict.md go
	SiltBin      string
	MinIOBin     string
	ToxiproxyBin string
	HAProxyBin   string

	Agents        int
	Partitions    int32
	Producers     int // plain producers
	IdemProducers int // idempotent producers
	Members       int // members of the HTTP consumer group
	KafkaMembers  int // members of the Kafka consumer group (franz-go)
	Tails         int // SSE tails, on partitions 0..Tails-1
	// AgentEnv overrides agent settings (SILT_*=...).
	AgentEnv []string

	Faults FaultConfig
	Check  CheckConfig
	Logger *slog.Logger
}

// Agent settings of the suite: fast leases, a short flush deadline (a
// pause can outlast it), and a janitor that merges, sweeps and collects
// garbage while the faults go on.
var agentSettings = []string{
	"SILT_LOG_FORMAT=json",
	"SILT_LINGER=50ms",
	"SILT_HEARTBEAT_INTERVAL=1s",
	"SILT_AGENT_TTL=4s",
	"SILT_LEASE_INTERVAL=1s",
	"SILT_LEASE_TTL=4s",
	"SILT_FLUSH_TIMEOUT=8s",
	"SILT_DB_STATEMENT_TIMEOUT=6s", // below the flush timeout, as the agent requires
	"SILT_UNREADY_AFTER=4s",
	"SILT_SHUTDOWN_TIMEOUT=10s",
	"SILT_MERGE_INTERVAL=5s",
	"SILT_MERGE_MIN_AGE=10s",
	"SILT_GC_INTERVAL=5s",
	"SILT_GC_GRACE=30s",
	"SILT_ORPHAN_INTERVAL=20s",
	"SILT_ORPHAN_AGE=30s",
	"SILT_REWRITE_TIMEOUT=20s",
	"SILT_GROUP_MIN_SESSION_TIMEOUT=1s",
}

// The lease TTL and flush timeout above, for the pause fault.
const (
	suiteLeaseTTL     = 4 * time.Second
	suiteFlushTimeout = 8 * time.Second
)

// DefaultConfig is `make chaos`: ten minutes of faults.
func DefaultConfig() Config {
	return Config{
		Duration:      10 * time.Minute,
		Quiet:         10 * time.Second,
		Agents:        3,
		Partitions:    6,
		Producers:     3,
		IdemProducers: 2,
		Members:       3,
		KafkaMembers:  2,
		Tails:         2,
		Faults: FaultConfig{
			Kinds:         AllKinds,
			Gap:           [2]time.Duration{2 * time.Second, 8 * time.Second},
			Hold:          [2]time.Duration{2 * time.Second, 12 * time.Second},
			LeaseTTL:      suiteLeaseTTL,
			FlushTimeout:  suiteFlushTimeout,
			RecoveryBound: 60 * time.Second,
		},
		Check: DefaultCheckConfig(),
	}
}

// SmokeConfig is the smoke test of `make test`: every kind of fault once,
// short.
func SmokeConfig() Config {
	c := DefaultConfig()
	c.Duration = 60 * time.Second
	c.EveryKind = true
	c.Quiet = 3 * time.Second
	c.Producers, c.IdemProducers, c.Members, c.KafkaMembers, c.Tails = 2, 2, 2, 2, 1
	c.Faults.Gap = [2]time.Duration{200 * time.Millisecond, time.Second}
	c.Faults.Hold = [2]time.Duration{time.Second, 2 * time.Second}
	c.Faults.MaxPause = suiteLeaseTTL + 2*time.Second
	return c
}

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case c.Duration <= 0:
		return errors.New("chaos: duration must be positive")
	case c.StateDir == "" || c.Out == "":
		return errors.New("chaos: state and output directories are required")
	case c.Agents < 2:
		return errors.New("chaos: at least two agents (faults stop one at a time)")
	case c.Partitions < 1 || c.Tails > int(c.Partitions):
		return errors.New("chaos: at least one partition, and no more tails than partitions")
	case len(c.Faults.Kinds) == 0:
		return errors.New("chaos: no fault kinds")
	case c.Faults.RecoveryBound <= 0:
		return errors.New("chaos: the recovery bound must be positive")
	}
	return nil
}

// Result is a run's outcome.
type Result struct {
	Seed     uint64        `json:"seed"`
	Duration time.Duration `json:"fault_phase_ns"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	Steps    []string      `json:"faults"`
	Verdict  Verdict       `json:"verdict"`
	Overload *Overload     `json:"overload,omitempty"`
}

// Run starts the system, runs the workloads under the fault schedule,
// heals, drains, reads the whole log, checks the history and writes the
// verdict into cfg.Out. The error is for a run that could not be carried
// out; violations are in the verdict.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	logf := func(format string, args ...any) { cfg.Logger.Info(fmt.Sprintf(format, args...)) }
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("chaos: output dir: %w", err)
	}
	hf, err := os.Create(filepath.Join(cfg.Out, "history.jsonl"))
	if err != nil {
		return nil, fmt.Errorf("chaos: history file: %w", err)
	}
	defer hf.Close()
	began := time.Now()
	logf("chaos: seed %d, fault phase %s, faults %v", cfg.Seed, cfg.Duration, cfg.Faults.Kinds)

	env, err := StartEnv(ctx, EnvConfig{
		StateDir: cfg.StateDir, SiltBin: cfg.SiltBin, MinIOBin: cfg.MinIOBin, ToxiproxyBin: cfg.ToxiproxyBin,
		HAProxyBin: cfg.HAProxyBin, Agents: cfg.Agents, AgentEnv: append(append([]string(nil), agentSettings...), cfg.AgentEnv...),
		Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			env.Stop(context.WithoutCancel(ctx))
		}
	}()
	logf("chaos: %d agents behind %s; postgres primary and synchronous standby; state in %s", cfg.Agents, env.LBURL(), cfg.StateDir)

	const topic, probeTopic, group, kafkaGroup = "chaos", "chaos-probe", "chaos-group", "chaos-kafka-group"
	admin, err := client.New(env.LBURL(), client.WithToken(env.AdminKey()), client.WithRetry(client.DefaultRetryPolicy()))
	if err != nil {
		return nil, err
	}
	for _, t := range []client.NewTopic{{Name: topic, Partitions: cfg.Partitions}, {Name: probeTopic, Partitions: int32(cfg.Agents)}} {
		if _, err := admin.CreateTopic(ctx, t); err != nil {
			return nil, fmt.Errorf("chaos: create topic %s: %w", t.Name, err)
		}
	}

	rec := NewRecorder(hf)
	wenv := &workloadEnv{rec: rec, lb: env.LBURL(), agents: env.AgentURLs(), kafka: env.KafkaAddr(), token: env.AdminKey(), topic: topic, partitions: cfg.Partitions, seed: cfg.Seed, logf: logf}
	prog := newProgress()
	var producers, consumers []Workload
	for i := range cfg.Producers {
		producers = append(producers, &Producer{ID: i, env: wenv})
	}
	for i := range cfg.IdemProducers {
		producers = append(producers, &IdemProducer{ID: i, env: wenv})
	}
	for i := range cfg.Members {
		consumers = append(consumers, &GroupMember{ID: i, Group: group, env: wenv, progress: prog})
	}
	for i := range cfg.KafkaMembers {
		consumers = append(consumers, &KafkaMember{ID: i, Group: kafkaGroup, env: wenv, progress: prog})
	}
	var tailParts []int32
	for i := range cfg.Tails {
		tailParts = append(tailParts, int32(i))
		consumers = append(consumers, &Tail{Partition: int32(i), env: wenv, progress: prog})
	}
	consumers = append(consumers, &Monitor{env: wenv})

	pctx, stopProducers := context.WithCancel(ctx)
	defer stopProducers()
	cctx, stopConsumers := context.WithCancel(ctx)
	defer stopConsumers()
	var pwg, cwg sync.WaitGroup
	for _, w := range producers {
		pwg.Go(func() { w.Run(pctx) })
	}
	for _, w := range consumers {
		cwg.Go(func() { w.Run(cctx) })
	}
	// Agents that die on their own are violations; start them again so
	// that the run goes on.
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		for {
			select {
			case <-watchCtx.Done():
				return
			case x := <-env.Exits():
				rec.Single(Fail, Event{Process: x.id, F: FAgentExit, Error: x.err.Error()})
				logf("chaos: %v", x.err)
				sctx, cancel := context.WithTimeout(watchCtx, time.Minute)
				if err := env.StartAgent(sctx, x.id); err != nil {
					logf("chaos: restart %s: %v", x.id, err)
				}
				cancel()
			}
		}
	}()

	// Warm up, then the faults.
	sleepCtx(ctx, 3*time.Second)
	probe := newProber(env, probeTopic)
	nem := &Nemesis{env: env, rec: rec, sched: NewSchedule(cfg.Seed, cfg.Faults, env.AgentIDs()), cfg: cfg.Faults, probe: probe, logf: logf}
	fctx, endFaults := context.WithTimeout(ctx, cfg.Duration)
	nem.Run(fctx, cfg.EveryKind)
	endFaults()
	logf("chaos: fault phase over after %d faults; checking recovery", len(nem.Steps))

	// Every agent must serve again.
	healed := time.Now()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Faults.RecoveryBound)
	err = probe.recovered(rctx)
	cancel()
	if err != nil {
		rec.Single(Fail, Event{Process: "nemesis", F: FRecovery, Error: "after the faults ended: " + err.Error()})
	} else {
		logf("chaos: all agents serve %s after the faults ended", time.Since(healed).Round(time.Millisecond))
	}
	sleepCtx(ctx, cfg.Quiet)
	stopProducers()
	pwg.Wait()
	logf("chaos: producers stopped; draining consumers")

	// Drain: consumers catch up with the high watermarks, within the
	// stuck bound.
	hwm, err := highWatermarks(ctx, admin, topic, cfg.Partitions)
	if err == nil {
		deadline := time.Now().Add(cfg.Check.StuckBound)
		for time.Now().Before(deadline) {
			done := (cfg.Members == 0 || prog.caughtUp("group "+group, hwm, nil)) &&
				(cfg.KafkaMembers == 0 || prog.caughtUp("group "+kafkaGroup, hwm, nil))
			for _, p := range tailParts {
				done = done && prog.caughtUp("sse-"+strconv.Itoa(int(p)), hwm, []int32{p})
			}
			if done {
				break
			}
			sleepCtx(ctx, 200*time.Millisecond)
		}
	} else {
		logf("chaos: high watermarks: %v", err)
	}
	stopConsumers()
	cwg.Wait()
	stopWatch()

	finalRead(ctx, rec, admin, topic, cfg.Partitions, group, kafkaGroup)
	if err := rec.Flush(); err != nil {
		return nil, fmt.Errorf("chaos: write history: %w", err)
	}
	env.Stop(context.WithoutCancel(ctx))
	stopped = true

	res := &Result{Seed: cfg.Seed, Duration: cfg.Duration, Elapsed: time.Since(began)}
	for _, s := range nem.Steps {
		res.Steps = append(res.Steps, s.String())
	}
	res.Verdict = Check(rec.Events(), cfg.Check)
	return res, nil
}

func highWatermarks(ctx context.Context, cl *client.Client, topic string, partitions int32) (map[int32]int64, error) {
	out := map[int32]int64{}
	for p := range partitions {
		o, err := cl.ListOffsets(ctx, topic, p)
		if err != nil {
			return nil, err
		}
		out[p] = o.HighWatermark
	}
	return out, nil
}

// finalRead reads every partition from its start to its high watermark,
// and the groups' committed offsets, retrying for up to two minutes.
func finalRead(ctx context.Context, rec *Recorder, cl *client.Client, topic string, partitions int32, groups ...string) {
	deadline := time.Now().Add(2 * time.Minute)
	var lastErr error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		op := rec.Invoke(Event{Process: "final", F: FFinalRead})
		recs, hwms, err := readAll(ctx, cl, topic, partitions)
		if err != nil {
			lastErr = err
			op.End(Info, Event{Error: err.Error()})
			sleepCtx(ctx, time.Second)
			continue
		}
		op.End(OK, Event{Records: recs, Offsets: hwms})
		lastErr = nil
		break
	}
	if lastErr != nil {
		return
	}
	for _, group := range groups {
		finalOffsets(ctx, rec, cl, topic, group, deadline)
	}
}

// finalOffsets records a group's committed offsets of topic.
func finalOffsets(ctx context.Context, rec *Recorder, cl *client.Client, topic, group string, deadline time.Time) {
	for time.Now().Before(deadline) && ctx.Err() == nil {
		op := rec.Invoke(Event{Process: "final", F: FFinalOffsets, Group: group})
		offs, err := cl.GroupOffsets(ctx, group)
		if err != nil {
			op.End(Info, Event{Error: err.Error()})
			sleepCtx(ctx, time.Second)
			continue
		}
		var out []Offset
		for _, o := range offs {
			if o.Topic != topic {
				continue
			}
			v := int64(-1)
			if o.CommittedOffset != nil {
				v = *o.CommittedOffset
			}
			out = append(out, Offset{P: o.Partition, O: v})
		}
		op.End(OK, Event{Offsets: out})
		return
	}
}

func readAll(ctx context.Context, cl *client.Client, topic string, partitions int32) ([]Rec, []Offset, error) {
	var recs []Rec
	var hwms []Offset
	for p := range partitions {
		o, err := cl.ListOffsets(ctx, topic, p)
		if err != nil {
			return nil, nil, err
		}
		hwms = append(hwms, Offset{P: p, O: o.HighWatermark})
		for off := o.LogStartOffset; off < o.HighWatermark; {
			res, err := cl.Fetch(ctx, topic, p, off, client.FetchOptions{MaxRecords: 5000, MaxBytes: 8 << 20})
			if err != nil {
				return nil, nil, fmt.Errorf("fetch %d@%d: %w", p, off, err)
			}
			if len(res.Records) == 0 {
				return nil, nil, fmt.Errorf("fetch %d@%d below the high watermark %d returned nothing", p, off, o.HighWatermark)
			}
			for _, r := range res.Records {
				recs = append(recs, Rec{P: p, O: r.Offset, V: string(r.Value)})
			}
			off = res.Records[len(res.Records)-1].Offset + 1
		}
	}
	return recs, hwms, nil
}
