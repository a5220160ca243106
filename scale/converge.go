package scale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// ConvergeResult is how long ownership took to settle.
type ConvergeResult struct {
	Agents     int `json:"agents"`
	Partitions int `json:"partitions"`
	Killed     int `json:"killed"`
	// StartSeconds is from starting every agent at once until every
	// partition has one live owner and every share is within one
	// partition of fair; KillSeconds from cutting Killed agents off until
	// the survivors settle likewise. -1: not within the timeout.
	StartSeconds float64 `json:"start_seconds"`
	KillSeconds  float64 `json:"kill_seconds"`
	// LeaseRound is the lease rounds' latency over the whole experiment.
	LeaseRound OpResult `json:"lease_round"`
	// PG covers the experiment from start to the end of the kill phase.
	PG PGStats `json:"postgres"`
	// Timeline samples the settling, a point a second.
	Timeline []ConvergePoint `json:"timeline"`
}

// ConvergePoint is the ownership at one moment.
type ConvergePoint struct {
	Seconds float64 `json:"t"`
	Phase   string  `json:"phase"` // start or kill
	// Owned is the partitions with a valid lease held by an agent that is
	// still running; MinShare and MaxShare the fewest and most held by
	// one running agent.
	Owned    int `json:"owned"`
	MinShare int `json:"min_share"`
	MaxShare int `json:"max_share"`
}

// RunConverge starts cfg.Agents agents at once on cfg.Topics x
// cfg.Partitions partitions (a fresh database), waits for ownership to
// settle, cuts killFraction of them off from Postgres and waits again.
// The agents run no load; cfg's ownership intervals apply.
func RunConverge(ctx context.Context, cfg Config, killFraction float64, timeout time.Duration, logger *slog.Logger, pr logf) (*ConvergeResult, error) {
	cfg.FlushRate, cfg.LookupRate, cfg.Groups = 0, 0, 0
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if killFraction < 0 || killFraction >= 1 {
		return nil, errors.New("scale: the fraction of agents to kill must be in [0, 1)")
	}
	logger, pr = orQuiet(logger, pr)
	setupStore, err := openStore(ctx, cfg.DatabaseURL, "setup", 4, logger)
	if err != nil {
		return nil, err
	}
	defer setupStore.Close()
	if _, err := setup(ctx, setupStore, cfg, pr); err != nil {
		return nil, err
	}
	obs, err := pgx.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("scale: observer: %w", err)
	}
	defer obs.Close(ctx)
	smp, err := newSampler(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	defer smp.close(ctx)

	total := cfg.Topics * cfg.Partitions
	res := &ConvergeResult{Agents: cfg.Agents, Partitions: total, StartSeconds: -1, KillSeconds: -1}
	rec := newRecorder()
	rec.start()
	if err := smp.begin(ctx); err != nil {
		return nil, err
	}
	pr("converge: starting %d agents on %d partitions", cfg.Agents, total)
	began := time.Now()
	agents, err := startAgents(ctx, cfg, cfg.DatabaseURL, rec, logger)
	if err != nil {
		return nil, err
	}
	defer stopAgents(ctx, agents)
	live := map[string]bool{}
	for _, a := range agents {
		live[a.id] = true
	}
	if res.StartSeconds, err = waitSettled(ctx, obs, live, total, began, timeout, "start", &res.Timeline); err != nil {
		return nil, err
	}
	pr("converge: settled %.1fs after the start", res.StartSeconds)
	if k := int(math.Round(killFraction * float64(cfg.Agents))); k > 0 {
		res.Killed = k
		cut := time.Now()
		for _, i := range rand.Perm(len(agents))[:k] {
			agents[i].cutOff()
			delete(live, agents[i].id)
		}
		if res.KillSeconds, err = waitSettled(ctx, obs, live, total, cut, timeout, "kill", &res.Timeline); err != nil {
			return nil, err
		}
		pr("converge: settled %.1fs after cutting %d agents off", res.KillSeconds, k)
	}
	if res.PG, err = smp.end(ctx); err != nil {
		return nil, err
	}
	res.LeaseRound = opResults(results(rec.stop(), time.Since(began))).find(OpLeaseRound)
	return res, nil
}

type opResults []OpResult

func (r opResults) find(op string) OpResult {
	for _, o := range r {
		if o.Op == op {
			return o
		}
	}
	return OpResult{Op: op}
}

// shares reads who holds a valid lease on how many partitions.
func shares(ctx context.Context, conn *pgx.Conn) (map[string]int, error) {
	rows, err := conn.Query(ctx, `
		SELECT l.owner_agent, count(*) FROM leases l
		JOIN agent_leases a ON a.agent_id = l.owner_agent AND a.incarnation = l.incarnation AND a.expires_at > now()
		GROUP BY l.owner_agent`)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			rows.Close()
			return nil, err
		}
		out[id] = n
	}
	rows.Close()
	return out, rows.Err()
}

// Settled reports whether every one of total partitions is held by an
// agent in live and every live agent's share is within one partition of
// total/len(live). It returns the partitions held by live agents and the
// smallest and largest share.
func Settled(held map[string]int, live map[string]bool, total int) (ok bool, owned, minShare, maxShare int) {
	fair := float64(total) / float64(len(live))
	ok = true
	minShare = math.MaxInt
	for id := range live {
		n := held[id]
		owned += n
		minShare, maxShare = min(minShare, n), max(maxShare, n)
		if math.Abs(float64(n)-fair) > 1 {
			ok = false
		}
	}
	return ok && owned == total, owned, minShare, maxShare
}

func waitSettled(ctx context.Context, obs *pgx.Conn, live map[string]bool, total int, from time.Time, timeout time.Duration,
	phase string, timeline *[]ConvergePoint) (float64, error) {
	lastPoint := -1
	for {
		held, err := shares(ctx, obs)
		if err != nil {
			return 0, fmt.Errorf("scale: read shares: %w", err)
		}
		t := time.Since(from)
		ok, owned, lo, hi := Settled(held, live, total)
		if s := int(t.Seconds()); s != lastPoint || ok {
			lastPoint = s
			*timeline = append(*timeline, ConvergePoint{Seconds: t.Seconds(), Phase: phase, Owned: owned, MinShare: lo, MaxShare: hi})
		}
		if ok {
			return t.Seconds(), nil
		}
		if t > timeout {
			return -1, nil
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return 0, err
		}
	}
}
