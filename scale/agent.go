package scale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"silt/groups"
	"silt/metadata"
	"silt/objectstore/mem"
	"silt/ownership"
)

// errCut is what a cut-off agent's calls return.
var errCut = errors.New("scale: agent cut off from Postgres")

// agentStore is the metadata store as one agent's ownership loops see it:
// heartbeats and lease rounds timed, and every call failing once the agent
// is cut off (as after kill -9 or a network partition: its leases lapse).
type agentStore struct {
	*metadata.Store
	rec *recorder
	cut atomic.Bool
}

func (a *agentStore) Heartbeat(ctx context.Context, info metadata.AgentInfo) error {
	if a.cut.Load() {
		return errCut
	}
	start := time.Now()
	err := a.Store.Heartbeat(ctx, info)
	a.rec.done(OpHeartbeat, start, err)
	return err
}

func (a *agentStore) SyncLeases(ctx context.Context, agentID string, inc int64, cfg metadata.LeaseConfig, full bool) (metadata.LeaseRound, error) {
	if a.cut.Load() {
		return metadata.LeaseRound{}, errCut
	}
	start := time.Now()
	r, err := a.Store.SyncLeases(ctx, agentID, inc, cfg, full)
	a.rec.done(OpLeaseRound, start, err)
	return r, err
}

func (a *agentStore) ReleaseLeases(ctx context.Context, agentID string) error {
	if a.cut.Load() {
		return errCut
	}
	return a.Store.ReleaseLeases(ctx, agentID)
}

func (a *agentStore) RemoveAgent(ctx context.Context, id string) error {
	if a.cut.Load() {
		return errCut
	}
	return a.Store.RemoveAgent(ctx, id)
}

// simAgent is one simulated agent: its pool, its ownership loops and the
// group coordinator over its pool.
type simAgent struct {
	id     string
	store  *agentStore
	owner  *ownership.Owner
	coord  *groups.Coordinator
	rec    *recorder
	closed sync.Once
}

// ownershipConfig is an agent's ownership config in the simulation.
func ownershipConfig(cfg Config, id string) ownership.Config {
	oc := ownership.DefaultConfig()
	oc.AgentID, oc.Address, oc.Version = id, id, "scale"
	oc.HeartbeatInterval, oc.LeaseInterval, oc.LeaseTTL, oc.AgentTTL = cfg.HeartbeatInterval, cfg.LeaseInterval, cfg.LeaseTTL, cfg.AgentTTL
	if !cfg.Janitor {
		// The janitor loop still runs, but its first pass is a day away.
		j := &oc.Janitor
		j.RetentionInterval, j.MergeInterval, j.CompactInterval, j.GCInterval = 24*time.Hour, 24*time.Hour, 24*time.Hour, 24*time.Hour
		j.OrphanInterval, j.ExpiryInterval = 24*time.Hour, 24*time.Hour
	}
	return oc
}

func newSimAgent(ctx context.Context, cfg Config, dbURL, id string, rec *recorder, logger *slog.Logger) (*simAgent, error) {
	st, err := openStore(ctx, dbURL, id, cfg.PoolSize, logger)
	if err != nil {
		return nil, err
	}
	a := &simAgent{id: id, store: &agentStore{Store: st, rec: rec}, rec: rec}
	bucket, err := mem.New(ctx, mem.DefaultConfig())
	if err != nil {
		st.Close()
		return nil, err
	}
	if a.owner, err = ownership.New(ownershipConfig(cfg, id), ownership.Deps{Store: a.store, Bucket: bucket, Logger: logger}); err != nil {
		st.Close()
		return nil, err
	}
	if a.coord, err = groups.New(groups.DefaultConfig(), groups.Deps{Store: st, Logger: logger}); err != nil {
		st.Close()
		return nil, err
	}
	return a, nil
}

// start registers the agent and runs its ownership loops.
func (a *simAgent) start(ctx context.Context) error {
	if err := a.owner.Start(ctx); err != nil {
		return fmt.Errorf("scale: start %s: %w", a.id, err)
	}
	return nil
}

// stop ends the loops and, unless the agent was cut off, releases its
// leases as a clean shutdown does.
func (a *simAgent) stop(ctx context.Context) {
	_ = a.owner.Stop(ctx)
	a.close()
}

// cutOff makes every later call of the agent's ownership loops fail, so
// its heartbeat goes stale and its leases lapse.
func (a *simAgent) cutOff() { a.store.cut.Store(true) }

func (a *simAgent) close() { a.closed.Do(a.store.Store.Close) }
