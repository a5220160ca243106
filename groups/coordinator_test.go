package groups_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"silt/groups"
	"silt/metadata"
	"silt/metadata/metadatatest"
)

type env struct {
	t     *testing.T
	ctx   context.Context
	store *metadata.Store
	c     *groups.Coordinator
	segs  int
}

func newEnv(t *testing.T, configure ...func(*groups.Config)) *env {
	t.Helper()
	t.Parallel()
	store := metadatatest.New(t)
	cfg := groups.DefaultConfig()
	cfg.MinSessionTimeout = 50 * time.Millisecond
	for _, f := range configure {
		f(&cfg)
	}
	c, err := groups.New(cfg, groups.Deps{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return &env{t: t, ctx: ctx, store: store, c: c}
}

// topic creates a topic with records: fill[p] in partition p.
func (e *env) topic(name string, parts int32, fill ...int32) metadata.Topic {
	e.t.Helper()
	top, err := e.store.CreateTopic(e.ctx, name, parts, metadata.DefaultTopicConfig())
	if err != nil {
		e.t.Fatal(err)
	}
	e.produce(top, fill...)
	return top
}

func (e *env) produce(top metadata.Topic, fill ...int32) {
	e.t.Helper()
	var chunks []metadata.Chunk
	for p, n := range fill {
		if n > 0 {
			chunks = append(chunks, metadata.Chunk{TopicID: top.ID, Partition: int32(p), ByteLength: n, Records: n, LastOffsetDelta: n - 1, MaxTimestamp: 1})
		}
	}
	if len(chunks) == 0 {
		return
	}
	e.segs++
	if _, err := e.store.CommitFlush(e.ctx, metadatatest.NewFlush(e.t, e.store, fmt.Sprint("seg/", e.segs), 100, chunks...)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) join(group string, req groups.JoinRequest) groups.JoinResult {
	e.t.Helper()
	res, err := e.c.Join(e.ctx, group, req)
	if err != nil {
		e.t.Fatalf("join %s %+v: %v", group, req, err)
	}
	return res
}

func (e *env) heartbeat(group, member string, gen int64) groups.HeartbeatResult {
	e.t.Helper()
	res, err := e.c.Heartbeat(e.ctx, group, member, gen)
	if err != nil {
		e.t.Fatalf("heartbeat %s: %v", member, err)
	}
	return res
}

func parts(as []groups.Assignment) string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = fmt.Sprintf("%s/%d@%d", a.Topic, a.Partition, a.Offset)
	}
	return strings.Join(out, " ")
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
}

func TestJoinRebalanceAndRejoin(t *testing.T) {
	e := newEnv(t)
	e.topic("t", 5, 4, 4, 4, 4, 4)
	a := e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: 10 * time.Second})
	if a.Generation != 1 || parts(a.Assignments) != "t/0@4 t/1@4 t/2@4 t/3@4 t/4@4" || a.HeartbeatInterval != 3*time.Second {
		t.Fatalf("first join: %+v (%s)", a, parts(a.Assignments))
	}
	b := e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: 10 * time.Second, AutoOffsetReset: groups.ResetEarliest})
	if b.Generation != 2 || b.MemberID <= a.MemberID || parts(b.Assignments) != "t/3@0 t/4@0" {
		t.Fatalf("second join: %+v (%s); ids %s %s", b, parts(b.Assignments), a.MemberID, b.MemberID)
	}
	// A is told to rejoin, and its commits are refused until it does.
	if hb := e.heartbeat("g", a.MemberID, a.Generation); !hb.Rejoin || hb.Generation != 2 {
		t.Fatalf("heartbeat of A at generation 1: %+v", hb)
	}
	err := e.c.Commit(e.ctx, "g", groups.CommitRequest{MemberID: a.MemberID, Generation: 1, Offsets: []groups.OffsetCommit{{Topic: "t", Partition: 0, Offset: 1}}})
	wantErr(t, err, groups.ErrStaleGeneration)
	// Claiming the new generation without rejoining is stale too.
	err = e.c.Commit(e.ctx, "g", groups.CommitRequest{MemberID: a.MemberID, Generation: 2, Offsets: []groups.OffsetCommit{{Topic: "t", Partition: 0, Offset: 1}}})
	wantErr(t, err, groups.ErrStaleGeneration)
	if hb := e.heartbeat("g", a.MemberID, 2); !hb.Rejoin {
		t.Fatalf("A at group generation without rejoining: %+v", hb)
	}
	a2 := e.join("g", groups.JoinRequest{MemberID: a.MemberID, Topics: []string{"t"}, SessionTimeout: 10 * time.Second})
	if a2.MemberID != a.MemberID || a2.Generation != 2 || parts(a2.Assignments) != "t/0@4 t/1@4 t/2@4" {
		t.Fatalf("rejoin: %+v (%s)", a2, parts(a2.Assignments))
	}
	for _, m := range []groups.JoinResult{a2, b} {
		if hb := e.heartbeat("g", m.MemberID, 2); hb.Rejoin || hb.Generation != 2 {
			t.Fatalf("heartbeat after rejoin: %+v", hb)
		}
	}
	d, err := e.c.Describe(e.ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if d.State != groups.StateStable || d.Generation != 2 || len(d.Members) != 2 || d.Members[0].ID != a.MemberID {
		t.Fatalf("describe: %+v", d)
	}
	// A commit, then B leaves: A is told to rejoin and gets everything,
	// starting from the committed offset where there is one.
	err = e.c.Commit(e.ctx, "g", groups.CommitRequest{MemberID: b.MemberID, Generation: 2, Offsets: []groups.OffsetCommit{{Topic: "t", Partition: 4, Offset: 2, Metadata: "x"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.Leave(e.ctx, "g", b.MemberID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, e.c.Leave(e.ctx, "g", b.MemberID), groups.ErrMemberNotFound)
	if hb := e.heartbeat("g", a.MemberID, 2); !hb.Rejoin || hb.Generation != 3 {
		t.Fatalf("after leave: %+v", hb)
	}
	a3 := e.join("g", groups.JoinRequest{MemberID: a.MemberID, Topics: []string{"t"}, SessionTimeout: 10 * time.Second})
	if a3.Generation != 3 || parts(a3.Assignments) != "t/0@4 t/1@4 t/2@4 t/3@4 t/4@2" || a3.Assignments[4].Committed == nil || a3.Assignments[3].Committed != nil {
		t.Fatalf("after leave, rejoin: %+v (%s)", a3, parts(a3.Assignments))
	}
	// An unknown member id is refused, so that the member joins afresh.
	_, err = e.c.Join(e.ctx, "g", groups.JoinRequest{MemberID: "m-nope", Topics: []string{"t"}})
	wantErr(t, err, groups.ErrMemberNotFound)
	_, err = e.c.Heartbeat(e.ctx, "g", "m-nope", 3)
	wantErr(t, err, groups.ErrMemberNotFound)
	_, err = e.c.Heartbeat(e.ctx, "nogroup", "m-nope", 3)
	wantErr(t, err, groups.ErrMemberNotFound)
}

func TestJoinValidation(t *testing.T) {
	e := newEnv(t, func(c *groups.Config) { c.MaxMembers = 2 })
	e.topic("t", 1)
	for _, tc := range []struct {
		group string
		req   groups.JoinRequest
		want  error
	}{
		{"bad/name", groups.JoinRequest{Topics: []string{"t"}}, groups.ErrInvalidName},
		{"..", groups.JoinRequest{Topics: []string{"t"}}, groups.ErrInvalidName},
		{strings.Repeat("g", 250), groups.JoinRequest{Topics: []string{"t"}}, groups.ErrInvalidName},
		{"g", groups.JoinRequest{}, groups.ErrInvalidArgument},
		{"g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Millisecond}, groups.ErrInvalidArgument},
		{"g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Hour}, groups.ErrInvalidArgument},
		{"g", groups.JoinRequest{Topics: []string{"t"}, AutoOffsetReset: "none"}, groups.ErrInvalidArgument},
		{"g", groups.JoinRequest{Topics: []string{"bad topic"}}, groups.ErrInvalidArgument},
		{"g", groups.JoinRequest{Topics: []string{"t", "missing"}}, groups.ErrTopicNotFound},
	} {
		_, err := e.c.Join(e.ctx, tc.group, tc.req)
		if !errors.Is(err, tc.want) {
			t.Errorf("join %q %+v: %v, want %v", tc.group, tc.req, err, tc.want)
		}
	}
	// Refused joins leave no group behind.
	_, err := e.c.Describe(e.ctx, "g")
	wantErr(t, err, groups.ErrGroupNotFound)
	// A rejoin never creates the group.
	_, err = e.c.Join(e.ctx, "g", groups.JoinRequest{MemberID: "m-x", Topics: []string{"t"}})
	wantErr(t, err, groups.ErrMemberNotFound)
	_, err = e.c.Describe(e.ctx, "g")
	wantErr(t, err, groups.ErrGroupNotFound)
	e.join("g", groups.JoinRequest{Topics: []string{"t"}})
	e.join("g", groups.JoinRequest{Topics: []string{"t"}})
	_, err = e.c.Join(e.ctx, "g", groups.JoinRequest{Topics: []string{"t"}})
	wantErr(t, err, groups.ErrGroupFull)
	// A refused join on an existing group still commits the maintenance.
	d, err := e.c.Describe(e.ctx, "g")
	if err != nil || len(d.Members) != 2 {
		t.Fatalf("describe %+v, %v", d, err)
	}
}

func TestSessionExpiryMovesPartitions(t *testing.T) {
	e := newEnv(t)
	e.topic("t", 6)
	const session = time.Second
	long := e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Minute})
	short := e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: session})
	long = e.join("g", groups.JoinRequest{MemberID: long.MemberID, Topics: []string{"t"}, SessionTimeout: time.Minute})
	if len(long.Assignments) != 3 || len(short.Assignments) != 3 || long.Generation != 2 {
		t.Fatalf("before expiry: %s | %s", parts(long.Assignments), parts(short.Assignments))
	}
	// The short member stops heartbeating; the long one is told to
	// rejoin once the session passed.
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		hb := e.heartbeat("g", long.MemberID, long.Generation)
		if hb.Rejoin {
			if hb.Generation != 3 {
				t.Fatalf("expiry bumped to %d, want 3", hb.Generation)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the expired member was never removed")
		}
		<-tick.C
	}
	_, err := e.c.Heartbeat(e.ctx, "g", short.MemberID, short.Generation)
	wantErr(t, err, groups.ErrMemberNotFound)
	long = e.join("g", groups.JoinRequest{MemberID: long.MemberID, Topics: []string{"t"}, SessionTimeout: time.Minute})
	if long.Generation != 3 || len(long.Assignments) != 6 {
		t.Fatalf("after expiry: %+v", long)
	}
}

func TestCommitRules(t *testing.T) {
	e := newEnv(t)
	top := e.topic("t", 2, 10, 10)
	e.topic("u", 1, 5)
	standalone := func(offs ...groups.OffsetCommit) error {
		return e.c.Commit(e.ctx, "g", groups.CommitRequest{Offsets: offs})
	}
	// A refused commit creates no group; an accepted one does.
	err := e.c.Commit(e.ctx, "g", groups.CommitRequest{Offsets: []groups.OffsetCommit{{Topic: "nope", Partition: 0, Offset: 0}}})
	wantErr(t, err, groups.ErrTopicNotFound)
	_, err = e.c.Offsets(e.ctx, "g")
	wantErr(t, err, groups.ErrGroupNotFound)
	if err := standalone(groups.OffsetCommit{Topic: "t", Partition: 0, Offset: 3}, groups.OffsetCommit{Topic: "u", Partition: 0, Offset: 5}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, standalone(groups.OffsetCommit{Topic: "t", Partition: 0, Offset: 11}), groups.ErrInvalidOffset)
	wantErr(t, standalone(groups.OffsetCommit{Topic: "t", Partition: 0, Offset: -1}), groups.ErrInvalidOffset)
	wantErr(t, standalone(groups.OffsetCommit{Topic: "t", Partition: 2, Offset: 0}), groups.ErrPartitionNotFound)
	wantErr(t, standalone(groups.OffsetCommit{Topic: "nope", Partition: 0, Offset: 0}), groups.ErrTopicNotFound)
	wantErr(t, standalone(groups.OffsetCommit{Topic: "t", Partition: 1, Offset: 0}, groups.OffsetCommit{Topic: "t", Partition: 1, Offset: 1}), groups.ErrInvalidArgument)
	wantErr(t, standalone(), groups.ErrInvalidArgument)

	m1 := e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Minute})
	m2 := e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Minute})
	m1 = e.join("g", groups.JoinRequest{MemberID: m1.MemberID, Topics: []string{"t"}, SessionTimeout: time.Minute})
	if parts(m1.Assignments) != "t/0@3" || parts(m2.Assignments) != "t/1@10" {
		t.Fatalf("assignments %s | %s", parts(m1.Assignments), parts(m2.Assignments))
	}
	wantErr(t, standalone(groups.OffsetCommit{Topic: "t", Partition: 0, Offset: 4}), groups.ErrGroupNotEmpty)
	commit := func(m groups.JoinResult, gen int64, part int32, off int64) error {
		return e.c.Commit(e.ctx, "g", groups.CommitRequest{MemberID: m.MemberID, Generation: gen, Offsets: []groups.OffsetCommit{{Topic: "t", Partition: part, Offset: off}}})
	}
	wantErr(t, commit(m1, m1.Generation, 1, 4), groups.ErrNotAssigned)
	wantErr(t, commit(m1, m1.Generation-1, 0, 4), groups.ErrStaleGeneration)
	wantErr(t, commit(m1, m1.Generation, 0, 11), groups.ErrInvalidOffset)
	wantErr(t, commit(groups.JoinResult{MemberID: "m-ghost"}, m1.Generation, 0, 1), groups.ErrMemberNotFound)
	if err := commit(m1, m1.Generation, 0, 10); err != nil {
		t.Fatal(err)
	}
	if err := commit(m2, m2.Generation, 1, 6); err != nil {
		t.Fatal(err)
	}
	e.produce(top, 0, 4)
	lags, err := e.c.Offsets(e.ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range lags {
		got = append(got, fmt.Sprintf("%s/%d c=%d hw=%d lag=%d", l.Topic, l.Partition, *l.Committed, l.HighWatermark, l.Lag))
	}
	if want := "[t/0 c=10 hw=10 lag=0 t/1 c=6 hw=14 lag=8 u/0 c=5 hw=5 lag=0]"; fmt.Sprint(got) != want {
		t.Fatalf("offsets %v, want %s", got, want)
	}

	// Delete needs an empty group.
	wantErr(t, e.c.Delete(e.ctx, "g"), groups.ErrGroupNotEmpty)
	for _, m := range []groups.JoinResult{m1, m2} {
		if err := e.c.Leave(e.ctx, "g", m.MemberID); err != nil {
			t.Fatal(err)
		}
	}
	if err := standalone(groups.OffsetCommit{Topic: "t", Partition: 0, Offset: 0}); err != nil {
		t.Fatalf("standalone commit after everyone left: %v", err)
	}
	if err := e.c.Delete(e.ctx, "g"); err != nil {
		t.Fatal(err)
	}
	_, err = e.c.Offsets(e.ctx, "g")
	wantErr(t, err, groups.ErrGroupNotFound)
	wantErr(t, e.c.Delete(e.ctx, "g"), groups.ErrGroupNotFound)
}

// Lag without commits counts from the log start.
func TestOffsetsWithoutCommits(t *testing.T) {
	e := newEnv(t)
	e.topic("t", 2, 3, 0)
	e.join("g", groups.JoinRequest{Topics: []string{"t"}})
	lags, err := e.c.Offsets(e.ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if len(lags) != 2 || lags[0].Committed != nil || lags[0].Lag != 3 || lags[1].Lag != 0 {
		t.Fatalf("lags %+v", lags)
	}
}

func TestConcurrentJoinsAgree(t *testing.T) {
	e := newEnv(t)
	e.topic("a", 7)
	e.topic("b", 3)
	const n = 8
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := e.c.Join(e.ctx, "g", groups.JoinRequest{Topics: []string{"a", "b"}, SessionTimeout: time.Minute})
			if err != nil {
				errs <- err
				return
			}
			ids[i] = res.MemberID
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Everyone rejoins at the final generation.
	owner := map[string]string{}
	for _, id := range ids {
		res := e.join("g", groups.JoinRequest{MemberID: id, Topics: []string{"a", "b"}, SessionTimeout: time.Minute})
		if res.Generation != n {
			t.Fatalf("generation %d after %d joins", res.Generation, n)
		}
		for _, a := range res.Assignments {
			k := fmt.Sprintf("%s/%d", a.Topic, a.Partition)
			if prev, dup := owner[k]; dup {
				t.Fatalf("%s owned by %s and %s", k, prev, id)
			}
			owner[k] = id
		}
	}
	if len(owner) != 10 {
		t.Fatalf("%d partitions assigned, want 10", len(owner))
	}
	d, err := e.c.Describe(e.ctx, "g")
	if err != nil || d.State != groups.StateStable || len(d.Members) != n {
		t.Fatalf("describe %+v, %v", d, err)
	}
}

func TestTopicChangesRebalance(t *testing.T) {
	e := newEnv(t)
	e.topic("t", 2)
	m := e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Minute})
	four := int32(4)
	if _, err := e.store.AlterTopic(e.ctx, "t", metadata.TopicUpdate{Partitions: &four}); err != nil {
		t.Fatal(err)
	}
	if hb := e.heartbeat("g", m.MemberID, m.Generation); !hb.Rejoin || hb.Generation != 2 {
		t.Fatalf("after growth: %+v", hb)
	}
	m = e.join("g", groups.JoinRequest{MemberID: m.MemberID, Topics: []string{"t"}, SessionTimeout: time.Minute})
	if len(m.Assignments) != 4 {
		t.Fatalf("after growth: %s", parts(m.Assignments))
	}
	// Changing the subscription rebalances too.
	e.topic("u", 1)
	m = e.join("g", groups.JoinRequest{MemberID: m.MemberID, Topics: []string{"t", "u"}, SessionTimeout: time.Minute})
	if m.Generation != 3 || len(m.Assignments) != 5 {
		t.Fatalf("after subscribing to u: %+v", m)
	}
	if err := e.store.DeleteTopic(e.ctx, "u"); err != nil {
		t.Fatal(err)
	}
	if hb := e.heartbeat("g", m.MemberID, m.Generation); !hb.Rejoin || hb.Generation != 4 {
		t.Fatalf("after deletion: %+v", hb)
	}
	m = e.join("g", groups.JoinRequest{MemberID: m.MemberID, Topics: []string{"t", "u"}, SessionTimeout: time.Minute})
	if len(m.Assignments) != 4 {
		t.Fatalf("after deletion: %s", parts(m.Assignments))
	}
}

func TestFetchPositions(t *testing.T) {
	e := newEnv(t)
	e.topic("t", 2, 5, 5)
	m := e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Minute, AutoOffsetReset: groups.ResetEarliest})
	fs, err := e.c.StartFetch(e.ctx, "g", m.MemberID, groups.AnyGeneration, true)
	if err != nil {
		t.Fatal(err)
	}
	if fs.Generation != 1 || len(fs.Positions) != 2 || fs.Positions[0].Offset != 0 || fs.Positions[1].Topic != "t" || fs.AutoOffsetReset != groups.ResetEarliest {
		t.Fatalf("start: %+v", fs)
	}
	reached := []groups.Position{fs.Positions[0], fs.Positions[1]}
	reached[0].Offset, reached[1].Offset = 3, 5
	if err := e.c.FinishFetch(e.ctx, "g", m.MemberID, fs.Generation, reached); err != nil {
		t.Fatal(err)
	}
	// The next fetch starts there and, with auto-commit, commits it first.
	fs, err = e.c.StartFetch(e.ctx, "g", m.MemberID, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	if fs.Positions[0].Offset != 3 || fs.Positions[1].Offset != 5 {
		t.Fatalf("positions %+v", fs.Positions)
	}
	lags, err := e.c.Offsets(e.ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if *lags[0].Committed != 3 || *lags[1].Committed != 5 || lags[0].Lag != 2 {
		t.Fatalf("auto-committed %+v", lags)
	}
	// After a rebalance the fetch is stale, and a rejoin resets positions
	// to the committed offsets.
	other := e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Minute})
	_, err = e.c.StartFetch(e.ctx, "g", m.MemberID, groups.AnyGeneration, false)
	wantErr(t, err, groups.ErrStaleGeneration)
	wantErr(t, e.c.FinishFetch(e.ctx, "g", m.MemberID, 1, reached), groups.ErrStaleGeneration)
	// A rejoin that names nothing keeps the subscription, session and reset policy.
	m = e.join("g", groups.JoinRequest{MemberID: m.MemberID})
	if m.SessionTimeout != time.Minute {
		t.Fatalf("rejoin changed the session: %+v", m)
	}
	fs, err = e.c.StartFetch(e.ctx, "g", m.MemberID, m.Generation, false)
	if err != nil {
		t.Fatal(err)
	}
	if fs.AutoOffsetReset != groups.ResetEarliest || len(fs.Positions) != 1 || fs.Positions[0].Partition != 0 || fs.Positions[0].Offset != 3 {
		t.Fatalf("positions after rejoin %+v", fs.Positions)
	}
	_, err = e.c.StartFetch(e.ctx, "g", other.MemberID, 1, false)
	wantErr(t, err, groups.ErrStaleGeneration)
	_, err = e.c.StartFetch(e.ctx, "g", "m-ghost", groups.AnyGeneration, false)
	wantErr(t, err, groups.ErrMemberNotFound)
}

func TestListStates(t *testing.T) {
	e := newEnv(t)
	e.topic("t", 2)
	e.join("stable", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Minute})
	e.join("moving", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Minute})
	e.join("moving", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Minute})
	if err := e.c.Commit(e.ctx, "empty", groups.CommitRequest{Offsets: []groups.OffsetCommit{{Topic: "t", Partition: 0, Offset: 0}}}); err != nil {
		t.Fatal(err)
	}
	list, err := e.c.List(e.ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range list {
		got = append(got, fmt.Sprintf("%s:%s:%d:%d", g.Name, g.State, g.Generation, g.Members))
	}
	sort.Strings(got)
	if want := "[empty:empty:0:0 moving:rebalancing:2:2 stable:stable:1:1]"; fmt.Sprint(got) != want {
		t.Fatalf("list %v, want %s", got, want)
	}
}

func TestLagCollector(t *testing.T) {
	e := newEnv(t, func(c *groups.Config) { c.LagCacheTTL = time.Hour; c.LagMaxSeries = 2 })
	e.topic("t", 3, 10, 10, 10)
	err := e.c.Commit(e.ctx, "g", groups.CommitRequest{Offsets: []groups.OffsetCommit{
		{Topic: "t", Partition: 0, Offset: 4}, {Topic: "t", Partition: 1, Offset: 10}, {Topic: "t", Partition: 2, Offset: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := groups.DefaultConfig()
	cfg.LagCacheTTL, cfg.LagMaxSeries = time.Hour, 2
	lc, err := groups.NewLagCollector(cfg, e.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(lc)
	scrape := func() map[string]float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				var labels []string
				for _, l := range m.GetLabel() {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
				out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
		return out
	}
	got := scrape()
	want := map[string]float64{
		"silt_group_lag_records{group=g,partition=0,topic=t}": 6,
		"silt_group_lag_records{group=g,partition=1,topic=t}": 0,
		"silt_group_lag_truncated{}":                          1,
		"silt_group_lag_read_errors_total{}":                  0,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("scrape %v\nwant %v", got, want)
	}
	// Within the cache TTL a scrape does not read Postgres again.
	e.produce(metadata.Topic{ID: 1}, 5)
	if again := scrape(); fmt.Sprint(again) != fmt.Sprint(want) {
		t.Fatalf("cached scrape %v", again)
	}
}

// Members that join and are never heard from again hold their places for
// NewMemberTimeout, not their whole session; a full group says when a
// place may free up.
func TestPhantomMembersExpireFirst(t *testing.T) {
	const grace = 300 * time.Millisecond
	e := newEnv(t, func(c *groups.Config) { c.MaxMembers = 3; c.NewMemberTimeout = grace })
	e.topic("t", 3)
	real := e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Minute})
	e.heartbeat("g", real.MemberID, real.Generation) // heard from: its session applies
	var phantoms []string
	for range 2 {
		phantoms = append(phantoms, e.join("g", groups.JoinRequest{Topics: []string{"t"}, SessionTimeout: time.Minute}).MemberID)
	}
	_, err := e.c.Join(e.ctx, "g", groups.JoinRequest{Topics: []string{"t"}})
	var full *groups.GroupFullError
	if !errors.As(err, &full) || !errors.Is(err, groups.ErrGroupFull) || full.Members != 3 || full.RetryAfter != time.Second {
		t.Fatalf("join of a full group: %v (%+v)", err, full)
	}
	// The phantoms go after the grace, long before their session ends;
	// the member that was heard from stays.
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var joined groups.JoinResult
	for {
		e.heartbeat("g", real.MemberID, real.Generation)
		joined, err = e.c.Join(e.ctx, "g", groups.JoinRequest{Topics: []string{"t"}})
		if err == nil {
			break
		}
		if !errors.Is(err, groups.ErrGroupFull) || time.Now().After(deadline) {
			t.Fatalf("join after the grace: %v", err)
		}
		<-tick.C
	}
	// The second phantom joined a little after the first, so it may go a
	// little later; both go, and the members heard from stay.
	var ids map[string]bool
	for {
		e.heartbeat("g", real.MemberID, real.Generation)
		_, _ = e.c.Heartbeat(e.ctx, "g", joined.MemberID, joined.Generation) // heard from
		d, err := e.c.Describe(e.ctx, "g")
		if err != nil {
			t.Fatal(err)
		}
		ids = map[string]bool{}
		for _, m := range d.Members {
			ids[m.ID] = true
		}
		if !ids[phantoms[0]] && !ids[phantoms[1]] || time.Now().After(deadline) {
			break
		}
		<-tick.C
	}
	if !ids[real.MemberID] || !ids[joined.MemberID] || ids[phantoms[0]] || ids[phantoms[1]] {
		t.Fatalf("members %v: want %s and %s, without the phantoms %v", ids, real.MemberID, joined.MemberID, phantoms)
	}
	// A phantom learns it is gone.
	_, err = e.c.Heartbeat(e.ctx, "g", phantoms[0], real.Generation)
	wantErr(t, err, groups.ErrMemberNotFound)
}
