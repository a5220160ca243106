package groups_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"silt/groups"
	"silt/metadata"
)

// lockGroup holds the group's exclusive lock on a session of its own, as a
// membership change waiting for its WAL flush holds it, until release.
func (e *env) lockGroup(name string) (release func()) {
	e.t.Helper()
	tx, err := e.store.Pool().Begin(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	// As metadata.InGroup takes it: the advisory lock, then the row.
	if _, err := tx.Exec(e.ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, metadata.GroupLockClass, name); err != nil {
		e.t.Fatal(err)
	}
	if _, err := tx.Exec(e.ctx, `SELECT 1 FROM groups WHERE name = $1 FOR UPDATE`, name); err != nil {
		e.t.Fatal(err)
	}
	done := false
	release = func() {
		if !done {
			done = true
			_ = tx.Rollback(context.WithoutCancel(e.ctx))
		}
	}
	e.t.Cleanup(release)
	return release
}

// member returns a member's row as the database holds it, and the
// database's clock.
func (e *env) member(group, id string) (metadata.GroupMember, time.Time) {
	e.t.Helper()
	var out metadata.GroupMember
	var now time.Time
	err := e.store.ViewGroup(e.ctx, group, func(_ context.Context, g *metadata.GroupTx) error {
		now = g.Now()
		for _, m := range g.Members() {
			if m.ID == id {
				out = m
			}
		}
		return nil
	})
	if err != nil || out.ID == "" {
		e.t.Fatalf("member %s of %s: %v (found %q)", id, group, err, out.ID)
	}
	return out, now
}

// waitLockWaiters waits until n sessions of the test's database wait for
// a lock.
func (e *env) waitLockWaiters(n int) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var waiting int
		err := e.store.Pool().QueryRow(e.ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		if err != nil {
			e.t.Fatal(err)
		}
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d sessions wait for a lock, want %d", waiting, n)
		}
		<-tick.C
	}
}

// A heartbeat that changes nothing but the member's heartbeat time does
// not wait for the group's row lock; one that has more to do (another
// member's session passed) waits for it, and then does it.
func TestHeartbeatWithoutTheGroupLock(t *testing.T) {
	e := newEnv(t, func(c *groups.Config) { c.NewMemberTimeout = time.Minute })
	e.topic("t", 4)
	const session = time.Second
	long := e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Minute})
	short := e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: session})
	long = e.join("g", groups.JoinRequest{MemberID: long.MemberID, Topics: []string{"t"}, SessionTimeout: time.Minute})
	if long.Generation != 2 {
		t.Fatalf("generation %d after the rejoin, want 2", long.Generation)
	}
	before, _ := e.member("g", short.MemberID)

	release := e.lockGroup("g")
	for _, m := range []groups.JoinResult{long, short} {
		hb, err := e.c.Heartbeat(e.ctx, "g", m.MemberID, m.Generation)
		if err != nil || hb.Rejoin || hb.Generation != 2 {
			t.Fatalf("heartbeat while the group's row is locked: %+v, %v; want generation 2 and no rejoin", hb, err)
		}
	}
	if after, _ := e.member("g", short.MemberID); !after.HeartbeatAt.After(before.HeartbeatAt) {
		t.Fatalf("heartbeat time %v not after %v", after.HeartbeatAt, before.HeartbeatAt)
	}
	// A stale member is told to rejoin without the lock too.
	if hb, err := e.c.Heartbeat(e.ctx, "g", short.MemberID, 1); err != nil || !hb.Rejoin || hb.Generation != 2 {
		t.Fatalf("heartbeat at generation 1: %+v, %v; want a rejoin at 2", hb, err)
	}

	// Let the short member's session pass: the next heartbeat must expire
	// it, which it may do only under the lock.
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		m, now := e.member("g", short.MemberID)
		if now.After(m.HeartbeatAt.Add(session)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the short member's session never passed")
		}
		<-tick.C
	}
	type result struct {
		hb  groups.HeartbeatResult
		err error
	}
	got := make(chan result, 1)
	go func() {
		hb, err := e.c.Heartbeat(e.ctx, "g", long.MemberID, long.Generation)
		got <- result{hb, err}
	}()
	e.waitLockWaiters(1)
	select {
	case r := <-got:
		t.Fatalf("heartbeat with an expiry to do answered under another's lock: %+v, %v", r.hb, r.err)
	default:
	}
	release()
	r := <-got
	if r.err != nil || !r.hb.Rejoin || r.hb.Generation != 3 {
		t.Fatalf("heartbeat after the expiry: %+v, %v; want a rejoin at generation 3", r.hb, r.err)
	}
	_, err := e.c.Heartbeat(e.ctx, "g", short.MemberID, short.Generation)
	wantErr(t, err, groups.ErrMemberNotFound)
}

// A write in a group snapshot that meets a change committed after the
// snapshot fails with ErrGroupChanged instead of landing.
func TestGroupSnapshotConflict(t *testing.T) {
	e := newEnv(t)
	e.topic("t", 2)
	a := e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Minute})
	err := e.store.InGroupSnapshot(e.ctx, "g", func(ctx context.Context, g *metadata.GroupTx) error {
		// Another member joins after the snapshot: the rebalance writes
		// a's row.
		e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Minute})
		return g.Touch(ctx, a.MemberID)
	})
	wantErr(t, err, metadata.ErrGroupChanged)
	var gen int64
	if err := e.store.Pool().QueryRow(e.ctx, `SELECT generation FROM groups WHERE name = 'g'`, pgx.QueryExecModeSimpleProtocol).Scan(&gen); err != nil || gen != 2 {
		t.Fatalf("generation %d (%v), want 2", gen, err)
	}
}
