package groups_test

import (
	"context"
	"testing"
	"time"

	"silt/groups"
	"silt/metadata"
	"silt/metadata/metadatatest"
)

// holdCommit commits an offset through the store as an offset commit does
// (the group's lock held shared) and keeps the transaction open, as a
// commit waiting for its WAL flush does, until release (at the latest
// when the test ends).
func (e *env) holdCommit(group string, top metadata.Topic, part int32) (release func(), done <-chan error) {
	e.t.Helper()
	return e.holdTx(func(fn groupFn) error { return e.store.InGroupShared(e.ctx, group, fn) },
		func(ctx context.Context, g *metadata.GroupTx) error {
			return g.Commit(ctx, []metadata.GroupCommit{{TopicID: top.ID, Partition: part, Offset: 1}})
		})
}

// holdLocked runs fn under the group's lock (as a rebalance does) and
// keeps the transaction open until release, which commits it.
func (e *env) holdLocked(group string, fn groupFn) (release func(), done <-chan error) {
	e.t.Helper()
	return e.holdTx(func(fn groupFn) error { return e.store.InGroup(e.ctx, group, false, fn) }, fn)
}

type groupFn = metadatatest.GroupFn

// holdTx runs fn in the group transaction that in runs, and keeps it open
// once fn ran until release (at the latest when the test ends).
func (e *env) holdTx(in func(groupFn) error, fn groupFn) (release func(), done <-chan error) {
	e.t.Helper()
	held, release, out := metadatatest.HoldGroupTx(e.t, in, fn)
	<-held
	return release, out
}

// Offset commits of one group's members do not wait for each other: one
// held open (its WAL flush) does not delay another member's. A change of
// the group's state (the group's lock held exclusive) still holds them back,
// and a commit at a generation a rebalance in flight replaces is refused
// once the rebalance commits.
func TestCommitsSideBySide(t *testing.T) {
	e := newEnv(t)
	top := e.topic("t", 4, 5, 5, 5, 5)
	a := e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Minute})
	b := e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Minute})
	a = e.join("g", groups.JoinRequest{MemberID: a.MemberID, Topics: []string{"t"}, SessionTimeout: time.Minute})
	if a.Generation != 2 || b.Generation != 2 || len(a.Assignments) != 2 || len(b.Assignments) != 2 {
		t.Fatalf("joins: %+v %+v", a, b)
	}
	commit := func(m groups.JoinResult, gen int64, off int64) error {
		offs := make([]groups.OffsetCommit, len(m.Assignments))
		for i, as := range m.Assignments {
			offs[i] = groups.OffsetCommit{Topic: "t", Partition: as.Partition, Offset: off}
		}
		return e.c.Commit(e.ctx, "g", groups.CommitRequest{MemberID: m.MemberID, Generation: gen, Offsets: offs})
	}

	// a's commit holds its transaction open; b's and a's next complete.
	release, first := e.holdCommit("g", top, a.Assignments[0].Partition)
	if err := commit(b, 2, 2); err != nil {
		t.Fatalf("b's commit beside a held one: %v", err)
	}
	err := e.c.Commit(e.ctx, "g", groups.CommitRequest{MemberID: a.MemberID, Generation: 2,
		Offsets: []groups.OffsetCommit{{Topic: "t", Partition: a.Assignments[1].Partition, Offset: 3}}})
	if err != nil {
		t.Fatalf("a's commit of its other partition beside a held one: %v", err)
	}
	// Fencing is unchanged on this path: another generation, a partition
	// not assigned, a member that is not one.
	wantErr(t, commit(a, 1, 3), groups.ErrStaleGeneration)
	err = e.c.Commit(e.ctx, "g", groups.CommitRequest{MemberID: a.MemberID, Generation: 2,
		Offsets: []groups.OffsetCommit{{Topic: "t", Partition: b.Assignments[0].Partition, Offset: 1}}})
	wantErr(t, err, groups.ErrNotAssigned)
	err = e.c.Commit(e.ctx, "g", groups.CommitRequest{MemberID: "m-nobody", Generation: 2,
		Offsets: []groups.OffsetCommit{{Topic: "t", Partition: 0, Offset: 1}}})
	wantErr(t, err, groups.ErrMemberNotFound)
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := commit(a, 2, 3); err != nil {
		t.Fatal(err)
	}

	// Under the group's exclusive lock (a membership change), a commit waits.
	unlock := e.lockGroup("g")
	got := make(chan error, 1)
	go func() { got <- commit(b, 2, 4) }()
	e.waitLockWaiters(1)
	select {
	case err := <-got:
		t.Fatalf("commit answered under the group's exclusive lock: %v", err)
	default:
	}
	unlock()
	if err := <-got; err != nil {
		t.Fatalf("b's commit after the lock: %v", err)
	}

	// A rebalance in flight (the next generation written, not committed):
	// a commit at generation 2 waits for it and is then refused.
	release, change := e.holdLocked("g", func(ctx context.Context, g *metadata.GroupTx) error {
		return g.SetGeneration(ctx, 3, g.Group().Topics)
	})
	go func() { got <- commit(a, 2, 5) }()
	e.waitLockWaiters(1)
	select {
	case err := <-got:
		t.Fatalf("commit answered during a rebalance: %v", err)
	default:
	}
	release()
	if err := <-change; err != nil {
		t.Fatal(err)
	}
	wantErr(t, <-got, groups.ErrStaleGeneration)

	offs, err := e.c.Offsets(e.ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	for _, as := range a.Assignments {
		want[as.Partition] = 3
	}
	for _, as := range b.Assignments {
		want[as.Partition] = 4
	}
	for _, o := range offs {
		if o.Committed == nil || *o.Committed != want[o.Partition] {
			t.Fatalf("partition %d committed %v, want %d", o.Partition, o.Committed, want[o.Partition])
		}
	}
}

// A commit whose group has maintenance to do (a member's session passed)
// takes the exclusive lock and does it: the member expires, the group
// rebalances and the committing member, now behind, is refused.
func TestCommitDoesDueMaintenance(t *testing.T) {
	e := newEnv(t, func(c *groups.Config) { c.NewMemberTimeout = time.Minute })
	e.topic("t", 4, 5, 5, 5, 5)
	const session = time.Second
	long := e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Minute})
	short := e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: session})
	long = e.join("g", groups.JoinRequest{MemberID: long.MemberID, Topics: []string{"t"}, SessionTimeout: time.Minute})
	waitUntil(t, "the short member's session to pass", func() bool {
		m, now := e.member("g", short.MemberID)
		return now.After(m.HeartbeatAt.Add(session))
	})
	err := e.c.Commit(e.ctx, "g", groups.CommitRequest{MemberID: long.MemberID, Generation: long.Generation,
		Offsets: []groups.OffsetCommit{{Topic: "t", Partition: long.Assignments[0].Partition, Offset: 1}}})
	wantErr(t, err, groups.ErrStaleGeneration)
	d, err := e.c.Describe(e.ctx, "g")
	if err != nil || d.Generation != long.Generation+1 || len(d.Members) != 1 {
		t.Fatalf("describe after the commit: %+v, %v; want generation %d and one member", d, err, long.Generation+1)
	}
}

// A Kafka member's offset commit does not wait for another's held open.
func TestKafkaCommitsSideBySide(t *testing.T) {
	e := newKafkaEnv(t)
	top := e.topic("t", 4, 5, 5, 5, 5)
	r := e.stable("kg", kjoin("", "", 10*time.Second, 5*time.Second), kjoin("", "", 10*time.Second, 5*time.Second))
	release, first := e.holdCommit("kg", top, 0)
	errs, err := e.c.KafkaCommit(e.ctx, "kg", groups.KafkaCommitRequest{MemberID: r[1].MemberID, Generation: r[1].Generation,
		Offsets: []groups.OffsetCommit{{Topic: "t", Partition: 2, Offset: 3}, {Topic: "t", Partition: 9, Offset: 1}}})
	if err != nil || errs[0] != nil {
		t.Fatalf("Kafka commit beside a held one: %v %v", err, errs)
	}
	wantErr(t, errs[1], groups.ErrPartitionNotFound)
	_, err = e.c.KafkaCommit(e.ctx, "kg", groups.KafkaCommitRequest{MemberID: r[1].MemberID, Generation: r[1].Generation - 1,
		Offsets: []groups.OffsetCommit{{Topic: "t", Partition: 2, Offset: 3}}})
	wantErr(t, err, groups.ErrStaleGeneration)
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	offs, err := e.c.KafkaOffsets(e.ctx, "kg")
	if err != nil || len(offs) != 2 || offs[1].Partition != 2 || offs[1].Offset != 3 {
		t.Fatalf("offsets %+v, %v", offs, err)
	}
}
