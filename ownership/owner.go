package ownership

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"silt/metadata"
	"silt/objectstore"
)

// Registry is what leader election needs of the metadata store.
type Registry interface {
	Heartbeat(ctx context.Context, a metadata.AgentInfo) error
	RemoveAgent(ctx context.Context, id string) error
	LiveAgents(ctx context.Context, ttl time.Duration) ([]metadata.AgentInfo, error)
	Owners(ctx context.Context, afterTopic string, afterPartition int32, limit int) ([]metadata.OwnedPartition, error)
	SyncLeases(ctx context.Context, agentID string, incarnation int64, cfg metadata.LeaseConfig, full bool) (metadata.LeaseRound, error)
	ReleaseLeases(ctx context.Context, agentID string) error
}

// Store is what the owner needs of the metadata store.
type Store interface {
	Registry
	JanitorStore
}

// Owner runs leader election and the janitor for one agent.
type Owner struct {
	cfg     Config
	store   Store
	bucket  objectstore.Bucket
	logger  *slog.Logger
	metrics *metrics
	started time.Time

	// incarnation tells this process's leases from those of an earlier
	// process with the same agent id.
	incarnation int64
	rounds      int // lease rounds since the last full list

	mu     sync.Mutex
	leases map[partition]metadata.Lease // nil: unknown, ask for the full list

	cancel context.CancelFunc
	wg     sync.WaitGroup
	jan    *janitor
}

// Deps are the owner's collaborators.
type Deps struct {
	Store      Store
	Bucket     objectstore.Bucket
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// New returns an Owner; Start runs it.
func New(cfg Config, deps Deps) (*Owner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Store == nil || deps.Bucket == nil {
		return nil, errors.New("ownership: store and bucket are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Registerer == nil {
		deps.Registerer = prometheus.NewRegistry()
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	var inc [8]byte
	if _, err := rand.Read(inc[:]); err != nil {
		return nil, fmt.Errorf("ownership: incarnation: %w", err)
	}
	o := &Owner{cfg: cfg, store: deps.Store, bucket: deps.Bucket, logger: deps.Logger, metrics: m, started: time.Now(),
		incarnation: int64(binary.BigEndian.Uint64(inc[:]) >> 1)}
	o.jan = newJanitor(o)
	return o, nil
}

// Start registers the agent, takes its first leases and starts the loops.
// A first lease round that fails (a lock or statement timeout while many
// agents start at once) does not stop the agent: the loop runs the next
// one an interval later, and the agent serves meanwhile without leases.
func (o *Owner) Start(ctx context.Context) error {
	if err := o.heartbeat(ctx); err != nil {
		return err
	}
	if err := o.syncLeases(ctx); err != nil {
		if ctx.Err() != nil {
			return err
		}
		o.logger.Warn("first lease round failed; the next one follows", "err", err, "in", o.cfg.LeaseInterval)
	}
	ctx, o.cancel = context.WithCancel(context.WithoutCancel(ctx))
	o.wg.Add(3)
	// Heartbeats, lease rounds and the janitor run on goroutines of their
	// own, each call bounded, so that none can wedge behind another: a
	// lease round stuck on a lock must not stop the heartbeat.
	go o.loop(ctx, o.cfg.HeartbeatInterval, "heartbeat", o.heartbeat)
	go o.loop(ctx, o.cfg.LeaseInterval, "lease round", o.syncLeases)
	go func() {
		defer o.wg.Done()
		o.jan.run(ctx)
	}()
	return nil
}

// Stop ends the loops, releases every lease and removes the agent's row.
func (o *Owner) Stop(ctx context.Context) error {
	if o.cancel != nil {
		o.cancel()
	}
	o.wg.Wait()
	o.mu.Lock()
	o.leases = nil
	o.mu.Unlock()
	o.metrics.leases.Set(0)
	err := errors.Join(o.store.ReleaseLeases(ctx, o.cfg.AgentID), o.store.RemoveAgent(ctx, o.cfg.AgentID))
	if err != nil {
		return fmt.Errorf("ownership stop: %w", err)
	}
	o.logger.Info("released partition leases")
	return nil
}

// partition keys a held lease.
type partition struct {
	topic int64
	part  int32
}

// fullListEvery is how many lease rounds pass between full lists of the
// leases held; in between a round reports only what changed, so that its
// cost does not grow with the partitions held.
const fullListEvery = 20

// Leases returns the leases held after the last election round, in
// (topic, partition) order.
func (o *Owner) Leases() []metadata.Lease {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]metadata.Lease, 0, len(o.leases))
	for _, l := range o.leases {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b metadata.Lease) int {
		if a.TopicID != b.TopicID {
			return cmp.Compare(a.TopicID, b.TopicID)
		}
		return cmp.Compare(a.Partition, b.Partition)
	})
	return out
}

// AgentView is one live agent and the partitions it owns.
type AgentView struct {
	metadata.AgentInfo
	Partitions []metadata.OwnedPartition
}

// Cluster lists live agents, each with its partitions among up to limit
// owned partitions after (afterTopic, afterPartition) in (topic name,
// partition) order (limit <= 0: all).
// ClusterPage is a page of the cluster view: the live agents with their
// share of the page's partitions. Last is the page's last partition when
// the page is full (more may follow), else nil.
type ClusterPage struct {
	Agents []AgentView
	Last   *metadata.OwnedPartition
}

func (o *Owner) Cluster(ctx context.Context, afterTopic string, afterPartition int32, limit int) (ClusterPage, error) {
	agents, err := o.store.LiveAgents(ctx, o.cfg.AgentTTL)
	if err != nil {
		return ClusterPage{}, err
	}
	owners, err := o.store.Owners(ctx, afterTopic, afterPartition, limit)
	if err != nil {
		return ClusterPage{}, err
	}
	byAgent := map[string]int{}
	page := ClusterPage{Agents: make([]AgentView, len(agents))}
	for i, a := range agents {
		page.Agents[i].AgentInfo = a
		byAgent[a.ID] = i
	}
	for _, p := range owners {
		if i, ok := byAgent[p.Owner]; ok {
			page.Agents[i].Partitions = append(page.Agents[i].Partitions, p)
		}
	}
	if limit > 0 && len(owners) == limit {
		page.Last = &owners[len(owners)-1]
	}
	return page, nil
}

// loop runs fn every interval until ctx ends, each run bounded by the
// interval.
func (o *Owner) loop(ctx context.Context, every time.Duration, what string, fn func(context.Context) error) {
	defer o.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, every)
		err := fn(rctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			o.logger.Warn(what+" failed", "err", err)
		}
	}
}

func (o *Owner) heartbeat(ctx context.Context) error {
	return o.store.Heartbeat(ctx, metadata.AgentInfo{ID: o.cfg.AgentID, Address: o.cfg.Address, Version: o.cfg.Version, StartedAt: o.started})
}

func (o *Owner) syncLeases(ctx context.Context) error {
	o.mu.Lock()
	full := o.leases == nil || o.rounds >= fullListEvery
	o.mu.Unlock()
	r, err := o.store.SyncLeases(ctx, o.cfg.AgentID, o.incarnation, metadata.LeaseConfig{AgentTTL: o.cfg.AgentTTL, LeaseTTL: o.cfg.LeaseTTL}, full)
	if err != nil {
		// Without a renewal our leases may lapse: stop acting on them.
		o.mu.Lock()
		o.leases = nil
		o.mu.Unlock()
		o.metrics.leases.Set(0)
		return err
	}
	o.mu.Lock()
	if r.Full {
		o.leases = make(map[partition]metadata.Lease, len(r.All))
		for _, l := range r.All {
			o.leases[partition{l.TopicID, l.Partition}] = l
		}
		o.rounds = 0
	} else {
		for _, l := range r.Released {
			delete(o.leases, partition{l.TopicID, l.Partition})
		}
		for _, l := range r.Claimed {
			o.leases[partition{l.TopicID, l.Partition}] = l
		}
		o.rounds++
	}
	held := len(o.leases)
	o.mu.Unlock()
	if n := len(r.Claimed); n > 0 {
		o.metrics.claims.Add(float64(n))
		o.logger.Info("claimed partitions", "count", n, "held", held)
	}
	o.metrics.leases.Set(float64(held))
	return nil
}
