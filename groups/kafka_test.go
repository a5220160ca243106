package groups_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"silt/groups"
	"silt/metadata"
	"silt/metadata/metadatatest"
)

// kenv is two coordinators on one database, as two agents: the members of
// a group call either. Parked requests wake on NOTIFY, fed to the
// coordinators' Waker by a LISTEN connection of the test; MaxParkedWait
// is long, so a missing notification fails the test by its deadline.
type kenv struct {
	*env
	c2 *groups.Coordinator
}

func newKafkaEnv(t *testing.T, configure ...func(*groups.Config)) *kenv {
	t.Helper()
	t.Parallel()
	url := metadatatest.URL(t)
	store := metadatatest.Open(t, url, nil)
	cfg := groups.DefaultConfig()
	cfg.MinSessionTimeout = 50 * time.Millisecond
	cfg.InitialRebalanceDelay = time.Second
	cfg.MaxParkedWait = 10 * time.Minute
	for _, f := range configure {
		f(&cfg)
	}
	wake := groups.NewNotifications()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+metadata.GroupsChannel); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	lctx, stop := context.WithCancel(ctx)
	go func() {
		defer close(stopped)
		defer conn.Close(context.Background())
		for {
			n, err := conn.WaitForNotification(lctx)
			if err != nil {
				return
			}
			wake.Note(n.Payload)
		}
	}()
	t.Cleanup(func() { stop(); <-stopped })
	mk := func() *groups.Coordinator {
		c, err := groups.New(cfg, groups.Deps{Store: store, Waker: wake})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return &kenv{env: &env{t: t, ctx: ctx, store: store, c: mk()}, c2: mk()}
}

// kjoin is a JoinGroup of a consumer offering the range assignor.
func kjoin(member, instance string, session, rebalance time.Duration) groups.KafkaJoinRequest {
	return groups.KafkaJoinRequest{MemberID: member, InstanceID: instance, ClientID: "test-client", ProtocolType: "consumer",
		Protocols:      []metadata.GroupProtocol{{Name: "range", Metadata: []byte("m")}},
		SessionTimeout: session, RebalanceTimeout: rebalance, Subscription: []string{"t"}}
}

type joinOut struct {
	res groups.KafkaJoinResult
	err error
}

// goJoin runs a JoinGroup that may park; its answer arrives on the channel.
func (e *kenv) goJoin(c *groups.Coordinator, group string, req groups.KafkaJoinRequest) <-chan joinOut {
	out := make(chan joinOut, 1)
	go func() {
		res, err := c.KafkaJoin(e.ctx, group, req)
		out <- joinOut{res, err}
	}()
	return out
}

func (e *kenv) wait(ch <-chan joinOut) groups.KafkaJoinResult {
	e.t.Helper()
	select {
	case o := <-ch:
		if o.err != nil {
			e.t.Fatalf("join: %v", o.err)
		}
		return o.res
	case <-e.ctx.Done():
		e.t.Fatal("a parked JoinGroup was never answered")
	}
	return groups.KafkaJoinResult{}
}

type syncOut struct {
	res groups.KafkaSyncResult
	err error
}

func (e *kenv) goSync(c *groups.Coordinator, group string, req groups.KafkaSyncRequest) <-chan syncOut {
	out := make(chan syncOut, 1)
	go func() {
		res, err := c.KafkaSync(e.ctx, group, req)
		out <- syncOut{res, err}
	}()
	return out
}

func (e *kenv) waitSync(ch <-chan syncOut) (groups.KafkaSyncResult, error) {
	e.t.Helper()
	select {
	case o := <-ch:
		return o.res, o.err
	case <-e.ctx.Done():
		e.t.Fatal("a parked SyncGroup was never answered")
	}
	return groups.KafkaSyncResult{}, nil
}

// assignment encodes a fake assignment naming partitions of topic t.
func assignment(parts ...int32) []byte { return []byte(fmt.Sprint(parts)) }

func decodeFake(protocolType string, b []byte) []groups.TopicPartitionName {
	var out []groups.TopicPartitionName
	var p0, p1 int32
	if n, _ := fmt.Sscanf(string(b), "[%d %d]", &p0, &p1); n == 2 {
		out = append(out, groups.TopicPartitionName{Topic: "t", Partition: p0}, groups.TopicPartitionName{Topic: "t", Partition: p1})
	}
	return out
}

// stable brings a group of the given members (ids already known or new)
// to a stable generation and returns the join answers in order.
func (e *kenv) stable(group string, reqs ...groups.KafkaJoinRequest) []groups.KafkaJoinResult {
	e.t.Helper()
	var chans []<-chan joinOut
	for i, r := range reqs {
		c := e.c
		if i%2 == 1 {
			c = e.c2
		}
		chans = append(chans, e.goJoin(c, group, r))
	}
	var res []groups.KafkaJoinResult
	for _, ch := range chans {
		res = append(res, e.wait(ch))
	}
	var syncs []<-chan syncOut
	for i, r := range res {
		req := groups.KafkaSyncRequest{MemberID: r.MemberID, Generation: r.Generation, Decode: decodeFake}
		if r.MemberID == r.Leader {
			for j, m := range r.Members {
				req.Assignments = append(req.Assignments, groups.KafkaAssignment{MemberID: m.ID, Assignment: assignment(int32(2*j), int32(2*j+1))})
			}
		}
		c := e.c
		if i%2 == 1 {
			c = e.c2
		}
		syncs = append(syncs, e.goSync(c, group, req))
	}
	for _, ch := range syncs {
		if s, err := e.waitSync(ch); err != nil || len(s.Assignment) == 0 {
			e.t.Fatalf("sync: %v %q", err, s.Assignment)
		}
	}
	return res
}

// Members join through two coordinators; the join completes once both
// joined, the leader assigns, the follower's parked SyncGroup gets its
// part; a third member rebalances the group, and heartbeats say so.
func TestKafkaJoinSyncAcrossAgents(t *testing.T) {
	e := newKafkaEnv(t)
	e.topic("t", 4)
	const g = "kg"
	// Version 4 and later: the first join hands out a member id.
	first := kjoin("", "", 10*time.Second, 5*time.Second)
	first.RequireKnownMemberID = true
	_, err := e.c.KafkaJoin(e.ctx, g, first)
	var mir *groups.MemberIDRequiredError
	if !errors.As(err, &mir) || mir.MemberID == "" {
		t.Fatalf("first join: %v", err)
	}
	a := e.goJoin(e.c, g, kjoin(mir.MemberID, "", 10*time.Second, 5*time.Second))
	b := e.goJoin(e.c2, g, kjoin("", "", 10*time.Second, 5*time.Second))
	ra, rb := e.wait(a), e.wait(b)
	if ra.Generation != 1 || rb.Generation != 1 || ra.Leader != rb.Leader || ra.ProtocolName != "range" {
		t.Fatalf("joins: %+v %+v", ra, rb)
	}
	leader, follower := ra, rb
	if rb.MemberID == rb.Leader {
		leader, follower = rb, ra
	}
	if len(leader.Members) != 2 || len(follower.Members) != 0 {
		t.Fatalf("the leader gets the members, the follower none: %+v %+v", leader, follower)
	}

	// The follower's SyncGroup waits for the leader's.
	fs := e.goSync(e.c2, g, groups.KafkaSyncRequest{MemberID: follower.MemberID, Generation: 1, Decode: decodeFake})
	if err := e.c.KafkaHeartbeat(e.ctx, g, leader.MemberID, "", 1); err != nil {
		t.Fatalf("heartbeat while completing: %v", err)
	}
	ls, err := e.c.KafkaSync(e.ctx, g, groups.KafkaSyncRequest{MemberID: leader.MemberID, Generation: 1, Decode: decodeFake,
		Assignments: []groups.KafkaAssignment{
			{MemberID: leader.MemberID, Assignment: assignment(0, 1)},
			{MemberID: follower.MemberID, Assignment: assignment(2, 3)},
		}})
	if err != nil || string(ls.Assignment) != string(assignment(0, 1)) {
		t.Fatalf("leader's sync: %v %q", err, ls.Assignment)
	}
	if s, err := e.waitSync(fs); err != nil || string(s.Assignment) != string(assignment(2, 3)) || s.ProtocolName != "range" {
		t.Fatalf("follower's sync: %v %+v", err, s)
	}

	// The HTTP view: two members, their assignments, a stable group.
	d, err := e.c.Describe(e.ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if d.State != groups.StateStable || len(d.Members) != 2 || len(d.Members[0].Assignment) != 2 || d.Members[0].Topics[0] != "t" {
		t.Fatalf("describe: %+v", d)
	}
	// HTTP members may not join, heartbeat or commit as members.
	_, err = e.c.Join(e.ctx, g, groups.JoinRequest{Topics: []string{"t"}})
	wantErr(t, err, groups.ErrProtocolMismatch)
	_, err = e.c.Heartbeat(e.ctx, g, follower.MemberID, 1)
	wantErr(t, err, groups.ErrProtocolMismatch)

	// A third member: a rebalance; the others learn it from heartbeats.
	c := e.goJoin(e.c, g, kjoin("", "", 10*time.Second, 5*time.Second))
	waitUntil(t, "the third member's join to start a rebalance", func() bool {
		return errors.Is(e.c2.KafkaHeartbeat(e.ctx, g, follower.MemberID, "", 1), groups.ErrRebalanceInProgress)
	})
	a = e.goJoin(e.c2, g, kjoin(leader.MemberID, "", 10*time.Second, 5*time.Second))
	b = e.goJoin(e.c, g, kjoin(follower.MemberID, "", 10*time.Second, 5*time.Second))
	rc, ra, rb := e.wait(c), e.wait(a), e.wait(b)
	if rc.Generation != 2 || ra.Generation != 2 || rb.Generation != 2 || ra.Leader != leader.MemberID || len(ra.Members) != 3 {
		t.Fatalf("second generation: %+v %+v %+v", rc, ra, rb)
	}
	// The old generation is fenced.
	wantErr(t, e.c.KafkaHeartbeat(e.ctx, g, follower.MemberID, "", 1), groups.ErrStaleGeneration)
	errs, err := e.c.KafkaCommit(e.ctx, g, groups.KafkaCommitRequest{MemberID: follower.MemberID, Generation: 1,
		Offsets: []groups.OffsetCommit{{Topic: "t", Partition: 0, Offset: 0}}})
	wantErr(t, err, groups.ErrStaleGeneration)
	_ = errs
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// A member that does not rejoin within the rebalance timeout is left out
// of the next generation; one that stops heartbeating is removed after its
// session and the group rebalances.
func TestKafkaRebalanceTimeoutAndSessionExpiry(t *testing.T) {
	e := newKafkaEnv(t)
	e.topic("t", 4)
	const g = "kg"
	res := e.stable(g, kjoin("", "", 10*time.Second, time.Second), kjoin("", "", 10*time.Second, time.Second))
	a, b := res[0].MemberID, res[1].MemberID

	// A new member; a rejoins, b does not (it keeps heartbeating, so its
	// session holds): after the rebalance timeout the join completes
	// without b.
	c := e.goJoin(e.c, g, kjoin("", "", 10*time.Second, time.Second))
	waitUntil(t, "the rebalance", func() bool {
		return errors.Is(e.c.KafkaHeartbeat(e.ctx, g, a, "", 1), groups.ErrRebalanceInProgress)
	})
	ra := e.goJoin(e.c2, g, kjoin(a, "", 10*time.Second, time.Second))
	wantErr(t, e.c.KafkaHeartbeat(e.ctx, g, b, "", 1), groups.ErrRebalanceInProgress)
	rc, rA := e.wait(c), e.wait(ra)
	if rc.Generation != 2 || rA.Generation != 2 {
		t.Fatalf("second generation: %+v %+v", rc, rA)
	}
	leader := rA
	if rc.MemberID == rc.Leader {
		leader = rc
	}
	if len(leader.Members) != 2 {
		t.Fatalf("b should be out: %+v", leader)
	}
	wantErr(t, e.c.KafkaHeartbeat(e.ctx, g, b, "", 1), groups.ErrMemberNotFound)
	// The two sync; then c stops heartbeating and its session ends.
	for _, r := range []groups.KafkaJoinResult{rA, rc} {
		req := groups.KafkaSyncRequest{MemberID: r.MemberID, Generation: 2}
		if r.MemberID == r.Leader {
			for _, m := range r.Members {
				req.Assignments = append(req.Assignments, groups.KafkaAssignment{MemberID: m.ID, Assignment: []byte("x")})
			}
		}
		e.goSync(e.c, g, req)
	}
	// A heartbeat succeeds while the group completes its rebalance too
	// (as in Kafka), so wait for the syncs to be applied.
	waitUntil(t, "a stable group", func() bool {
		d, err := e.c.KafkaDescribe(e.ctx, g)
		if err != nil {
			t.Fatal(err)
		}
		return d.State == "Stable"
	})
	if err := e.c.KafkaHeartbeat(e.ctx, g, a, "", 2); err != nil {
		t.Fatalf("heartbeat of a in the stable group: %v", err)
	}
	d, err := e.c.KafkaDescribe(e.ctx, g)
	if err != nil || d.State != "Stable" || len(d.Members) != 2 {
		t.Fatalf("describe: %v %+v", err, d)
	}
}

// Sessions end: a member not heard from for its session timeout is
// removed by the next request on the group.
func TestKafkaSessionExpiry(t *testing.T) {
	e := newKafkaEnv(t)
	e.topic("t", 4)
	const g = "kg"
	res := e.stable(g, kjoin("", "", 10*time.Second, time.Second), kjoin("", "", 300*time.Millisecond, time.Second))
	a, b := res[0].MemberID, res[1].MemberID
	waitUntil(t, "b's session to end", func() bool {
		return errors.Is(e.c.KafkaHeartbeat(e.ctx, g, a, "", 1), groups.ErrRebalanceInProgress)
	})
	wantErr(t, e.c.KafkaHeartbeat(e.ctx, g, b, "", 1), groups.ErrMemberNotFound)
	r := e.wait(e.goJoin(e.c2, g, kjoin(a, "", 10*time.Second, time.Second)))
	if r.Generation != 2 || r.Leader != a || len(r.Members) != 1 {
		t.Fatalf("alone: %+v", r)
	}
}

// A static member coming back under a new member id takes its old place
// and assignment without a rebalance; its old id is fenced.
func TestKafkaStaticMembership(t *testing.T) {
	e := newKafkaEnv(t)
	e.topic("t", 4)
	const g = "kg"
	res := e.stable(g, kjoin("", "static-1", 10*time.Second, time.Second), kjoin("", "", 10*time.Second, time.Second))
	old := res[0]
	var oldAssignment []byte
	s, err := e.c.KafkaSync(e.ctx, g, groups.KafkaSyncRequest{MemberID: old.MemberID, InstanceID: "static-1", Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	oldAssignment = s.Assignment

	r, err := e.c2.KafkaJoin(e.ctx, g, kjoin("", "static-1", 10*time.Second, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if r.Generation != 1 || r.MemberID == old.MemberID || r.Leader != old.Leader || len(r.Members) != 0 {
		t.Fatalf("static rejoin: %+v (old %+v)", r, old)
	}
	s, err = e.c2.KafkaSync(e.ctx, g, groups.KafkaSyncRequest{MemberID: r.MemberID, InstanceID: "static-1", Generation: 1})
	if err != nil || string(s.Assignment) != string(oldAssignment) {
		t.Fatalf("static member's sync: %v %q, want %q", err, s.Assignment, oldAssignment)
	}
	wantErr(t, e.c.KafkaHeartbeat(e.ctx, g, old.MemberID, "static-1", 1), groups.ErrFencedInstance)
	if err := e.c.KafkaHeartbeat(e.ctx, g, res[1].MemberID, "", 1); err != nil {
		t.Fatalf("the other member saw a rebalance: %v", err)
	}
	d, err := e.c.KafkaDescribe(e.ctx, g)
	if err != nil || d.State != "Stable" || len(d.Members) != 2 {
		t.Fatalf("describe: %v %+v", err, d)
	}
	// Leaving by instance id.
	errs, err := e.c.KafkaLeave(e.ctx, g, []groups.KafkaMemberRef{{InstanceID: "static-1", MemberID: old.MemberID}, {InstanceID: "static-1"}})
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, errs[0], groups.ErrFencedInstance)
	if errs[1] != nil {
		t.Fatalf("leave: %v", errs[1])
	}
	wantErr(t, e.c.KafkaHeartbeat(e.ctx, g, res[1].MemberID, "", 1), groups.ErrRebalanceInProgress)
}

// A member leaving while the others wait for the leader's SyncGroup: the
// parked SyncGroups answer REBALANCE_IN_PROGRESS.
func TestKafkaLeaveDuringSync(t *testing.T) {
	e := newKafkaEnv(t)
	e.topic("t", 4)
	const g = "kg"
	a := e.goJoin(e.c, g, kjoin("", "", 10*time.Second, 5*time.Second))
	b := e.goJoin(e.c2, g, kjoin("", "", 10*time.Second, 5*time.Second))
	ra, rb := e.wait(a), e.wait(b)
	leader, follower := ra, rb
	if rb.MemberID == rb.Leader {
		leader, follower = rb, ra
	}
	fs := e.goSync(e.c2, g, groups.KafkaSyncRequest{MemberID: follower.MemberID, Generation: 1})
	errs, err := e.c.KafkaLeave(e.ctx, g, []groups.KafkaMemberRef{{MemberID: leader.MemberID}})
	if err != nil || errs[0] != nil {
		t.Fatalf("leave: %v %v", err, errs)
	}
	_, err = e.waitSync(fs)
	wantErr(t, err, groups.ErrRebalanceInProgress)
	r := e.wait(e.goJoin(e.c, g, kjoin(follower.MemberID, "", 10*time.Second, 5*time.Second)))
	if r.Generation != 2 || r.Leader != follower.MemberID {
		t.Fatalf("rejoin: %+v", r)
	}
}

// HTTP and Kafka groups share the tables: a group is consumed over one
// protocol at a time, offsets committed over Kafka show over HTTP, and an
// empty group changes hands.
func TestKafkaAndHTTPGroups(t *testing.T) {
	e := newKafkaEnv(t)
	e.topic("t", 4, 10, 10, 10, 10)
	// An HTTP group with a member refuses Kafka members.
	h := e.join("http-g", groups.JoinRequest{Topics: []string{"t"}})
	_, err := e.c.KafkaJoin(e.ctx, "http-g", kjoin("", "", 10*time.Second, time.Second))
	wantErr(t, err, groups.ErrProtocolMismatch)
	// Once it is empty, a Kafka member takes it over.
	if err := e.c.Leave(e.ctx, "http-g", h.MemberID); err != nil {
		t.Fatal(err)
	}
	r := e.stable("http-g", kjoin("", "", 10*time.Second, time.Second))
	errs, err := e.c.KafkaCommit(e.ctx, "http-g", groups.KafkaCommitRequest{MemberID: r[0].MemberID, Generation: r[0].Generation,
		Offsets: []groups.OffsetCommit{{Topic: "t", Partition: 1, Offset: 7}, {Topic: "nope", Partition: 0, Offset: 1}, {Topic: "t", Partition: 9, Offset: 1}}})
	if err != nil || errs[0] != nil {
		t.Fatalf("commit: %v %v", err, errs)
	}
	wantErr(t, errs[1], groups.ErrTopicNotFound)
	wantErr(t, errs[2], groups.ErrPartitionNotFound)
	offs, err := e.c.Offsets(e.ctx, "http-g")
	if err != nil {
		t.Fatal(err)
	}
	if len(offs) != 4 || offs[1].Committed == nil || *offs[1].Committed != 7 || offs[1].Lag != 3 {
		t.Fatalf("offsets over HTTP: %+v", offs)
	}
	// A standalone commit is refused while the Kafka member is there.
	_, err = e.c.KafkaCommit(e.ctx, "http-g", groups.KafkaCommitRequest{Generation: -1, Offsets: []groups.OffsetCommit{{Topic: "t", Partition: 1, Offset: 1}}})
	wantErr(t, err, groups.ErrMemberNotFound)
	_, err = e.c.Join(e.ctx, "http-g", groups.JoinRequest{Topics: []string{"t"}})
	wantErr(t, err, groups.ErrProtocolMismatch)
	l, err := e.c.List(e.ctx, "", 0)
	if err != nil || len(l) != 1 || l[0].Protocol != metadata.GroupProtocolKafka || l[0].KafkaState != "Stable" || l[0].ProtocolType != "consumer" {
		t.Fatalf("list: %v %+v", err, l)
	}
	// OffsetDelete keeps the offsets of a topic members read.
	derrs, err := e.c.KafkaDeleteOffsets(e.ctx, "http-g", []groups.TopicPartitionName{{Topic: "t", Partition: 1}})
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, derrs[0], groups.ErrGroupSubscribed)
	lerrs, err := e.c.KafkaLeave(e.ctx, "http-g", []groups.KafkaMemberRef{{MemberID: r[0].MemberID}})
	if err != nil || lerrs[0] != nil {
		t.Fatalf("leave: %v %v", err, lerrs)
	}
	if derrs, err := e.c.KafkaDeleteOffsets(e.ctx, "http-g", []groups.TopicPartitionName{{Topic: "t", Partition: 1}}); err != nil || derrs[0] != nil {
		t.Fatalf("delete offsets: %v %v", err, derrs)
	}
	// Empty again: HTTP takes it back.
	e.join("http-g", groups.JoinRequest{Topics: []string{"t"}})
}
