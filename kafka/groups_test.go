package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"silt/client"
	"silt/internal/agentd"
	"silt/internal/agenttest"
)

// groupConfig makes group rebalances quick for tests. Parked requests
// look at their group again only when notified: a lost notification
// shows as a test that times out.
func groupConfig(cfg *agentd.Config) {
	cfg.Groups.InitialRebalanceDelay = 200 * time.Millisecond
	cfg.Groups.MinSessionTimeout = time.Second
	cfg.Groups.MaxParkedWait = 10 * time.Minute
}

// setupAgents starts n agents on one database and bucket, each with its
// Kafka listener advertising itself: a client seeded with an agent sends
// everything to that agent, so the members of one group talk to
// different agents.
func setupAgents(t *testing.T, n int, configure func(*agentd.Config)) []*agenttest.Agent {
	t.Helper()
	cfg := func(c *agentd.Config) {
		groupConfig(c)
		if configure != nil {
			configure(c)
		}
	}
	first := setup(t, cfg)
	out := []*agenttest.Agent{first}
	for range n - 1 {
		out = append(out, agenttest.Start(t, agenttest.Options{Kafka: true, DatabaseURL: first.DatabaseURL, Bucket: first.Raw, Configure: cfg}))
	}
	return out
}

func groupName(t *testing.T) string {
	t.Helper()
	return "g-" + topicName(t)
}

// produceN produces n records keyed k-0 ... k-(n-1) (with offset from) and
// waits for them.
func produceN(t *testing.T, cl *kgo.Client, topic string, from, n int) {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	var recs []*kgo.Record
	for i := from; i < from+n; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("k-%d", i)), Value: []byte(fmt.Sprint(i))})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// groupMember is a kgo group consumer that records what it reads and
// commits after each poll.
type groupMember struct {
	name   string
	cl     *kgo.Client
	mu     sync.Mutex
	seen   map[string]int
	owned  map[int32]bool
	cancel context.CancelFunc
	done   chan struct{}
}

func startMember(t *testing.T, name string, a *agenttest.Agent, group, topic string, opts ...kgo.Opt) *groupMember {
	t.Helper()
	m := &groupMember{name: name, seen: map[string]int{}, owned: map[int32]bool{}, done: make(chan struct{})}
	base := []kgo.Opt{
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(500 * time.Millisecond),
		kgo.SessionTimeout(6 * time.Second), kgo.HeartbeatInterval(500 * time.Millisecond),
		kgo.RebalanceTimeout(10 * time.Second), kgo.ClientID(name),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, as map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, p := range as[topic] {
				m.owned[p] = true
			}
		}),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, rs map[string][]int32) {
			_ = cl.CommitMarkedOffsets(ctx)
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, p := range rs[topic] {
				delete(m.owned, p)
			}
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, ls map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, p := range ls[topic] {
				delete(m.owned, p)
			}
		}),
	}
	m.cl = newClient(t, a, append(base, opts...)...)
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			fs := m.cl.PollFetches(ctx)
			if ctx.Err() != nil {
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				m.mu.Lock()
				m.seen[string(r.Key)]++
				m.mu.Unlock()
			})
			if err := m.cl.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
				t.Logf("%s: commit: %v", name, err)
			}
		}
	}()
	t.Cleanup(m.stop)
	return m
}

func (m *groupMember) stop() {
	m.cancel()
	<-m.done
}

func (m *groupMember) partitions() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []int32
	for p := range m.owned {
		out = append(out, p)
	}
	return out
}

func (m *groupMember) keys() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for k, n := range m.seen {
		out[k] = n
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

// allSeen reports whether the members together read keys k-0..k-(n-1).
func allSeen(n int, ms ...*groupMember) bool {
	seen := map[string]bool{}
	for _, m := range ms {
		for k := range m.keys() {
			seen[k] = true
		}
	}
	for i := range n {
		if !seen[fmt.Sprintf("k-%d", i)] {
			return false
		}
	}
	return true
}

// Three franz-go members of one group, each talking to another agent,
// share the partitions; when one leaves, the others take its partitions
// and read on from its commits.
func TestGroupAcrossAgents(t *testing.T) {
	agents := setupAgents(t, 3, nil)
	adm := newAdmin(t, agents[0])
	topic, group := topicName(t), groupName(t)
	const parts = 6
	createTopic(t, adm, topic, parts, nil)
	prod := newClient(t, agents[0], kgo.DefaultProduceTopic(topic))
	produceN(t, prod, topic, 0, 300)

	var ms []*groupMember
	for i, a := range agents {
		ms = append(ms, startMember(t, fmt.Sprintf("m%d", i), a, group, topic))
	}
	waitFor(t, "every member assigned two partitions", time.Minute, func() bool {
		for _, m := range ms {
			if len(m.partitions()) != parts/len(ms) {
				return false
			}
		}
		return true
	})
	waitFor(t, "all 300 records read", time.Minute, func() bool { return allSeen(300, ms...) })

	// The same group over HTTP: three members, their assignment, lag 0
	// once the commits are in.
	hc, err := client.New(agents[1].URL)
	if err != nil {
		t.Fatal(err)
	}
	d, err := hc.DescribeGroup(ctxT(t, 10*time.Second), group)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Members) != 3 || d.State != "stable" {
		t.Fatalf("HTTP describe: %+v", d)
	}
	for _, m := range d.Members {
		if len(m.Assignments) != 2 || len(m.Topics) != 1 || m.Topics[0] != topic {
			t.Fatalf("HTTP describe member: %+v", m)
		}
	}

	ms[2].stop()
	ms[2].cl.Close() // leaves the group
	waitFor(t, "the two left share the six partitions", time.Minute, func() bool {
		return len(ms[0].partitions())+len(ms[1].partitions()) == parts && len(ms[0].partitions()) == 3
	})
	produceN(t, prod, topic, 300, 300)
	waitFor(t, "all 600 records read", time.Minute, func() bool { return allSeen(600, ms...) })

	// Committed offsets are the high watermarks.
	ctx := ctxT(t, 30*time.Second)
	waitFor(t, "lag 0", 30*time.Second, func() bool {
		lags, err := adm.Lag(ctx, group)
		if err != nil {
			t.Fatal(err)
		}
		l := lags[group]
		if l.Error() != nil {
			t.Fatal(l.Error())
		}
		return l.Lag.Total() == 0 && len(l.Lag[topic]) == parts
	})
}

// The group protocol's answers as Kafka gives them, over raw requests.
func TestGroupProtocolErrors(t *testing.T) {
	a := setup(t, groupConfig)
	adm := newAdmin(t, a)
	topic, group := topicName(t), groupName(t)
	createTopic(t, adm, topic, 2, nil)
	c := dialRaw(t, a.KafkaAddr)

	meta := (&kmsg.ConsumerMemberMetadata{Version: 0, Topics: []string{topic}}).AppendTo(nil)
	join := func(member string, v int16, protoType string) *kmsg.JoinGroupResponse {
		req := kmsg.NewPtrJoinGroupRequest()
		req.Group, req.MemberID, req.ProtocolType = group, member, protoType
		req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = 6000, 6000
		p := kmsg.NewJoinGroupRequestProtocol()
		p.Name, p.Metadata = "range", meta
		req.Protocols = append(req.Protocols, p)
		return c.do(req, v).(*kmsg.JoinGroupResponse)
	}
	// Version 4 and later: a new member is first given its id.
	r := join("", 9, "consumer")
	if r.ErrorCode != kerr.MemberIDRequired.Code || r.MemberID == "" {
		t.Fatalf("first join: %+v", r)
	}
	id := r.MemberID
	r = join(id, 9, "consumer")
	if r.ErrorCode != 0 || r.MemberID != id || r.LeaderID != id || r.Generation != 1 || len(r.Members) != 1 {
		t.Fatalf("join: %+v", r)
	}
	// Another protocol type: INCONSISTENT_GROUP_PROTOCOL.
	if r := join("", 3, "connect"); r.ErrorCode != kerr.InconsistentGroupProtocol.Code {
		t.Fatalf("connect member: %+v", r)
	}
	// An unknown member.
	if r := join("nobody", 9, "consumer"); r.ErrorCode != kerr.UnknownMemberID.Code {
		t.Fatalf("unknown member: %+v", r)
	}
	hb := func(member string, gen int32) int16 {
		req := kmsg.NewPtrHeartbeatRequest()
		req.Group, req.MemberID, req.Generation = group, member, gen
		return c.do(req, 4).(*kmsg.HeartbeatResponse).ErrorCode
	}
	// Completing the rebalance: heartbeats are fine, commits are not.
	if code := hb(id, 1); code != 0 {
		t.Fatalf("heartbeat while completing: %v", kerr.ErrorForCode(code))
	}
	if code := hb(id, 7); code != kerr.IllegalGeneration.Code {
		t.Fatalf("heartbeat at another generation: %v", kerr.ErrorForCode(code))
	}
	if code := hb("nobody", 1); code != kerr.UnknownMemberID.Code {
		t.Fatalf("heartbeat of an unknown member: %v", kerr.ErrorForCode(code))
	}
	commit := func(member string, gen int32, off int64) int16 {
		req := kmsg.NewPtrOffsetCommitRequest()
		req.Group, req.MemberID, req.Generation = group, member, gen
		rt := kmsg.NewOffsetCommitRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset = 0, off
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		return c.do(req, 8).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode
	}
	if code := commit(id, 1, 0); code != kerr.RebalanceInProgress.Code {
		t.Fatalf("commit while completing: %v", kerr.ErrorForCode(code))
	}
	// The leader's SyncGroup completes the rebalance.
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.MemberID, sync.Generation = group, id, 1
	ga := kmsg.NewSyncGroupRequestGroupAssignment()
	asg := kmsg.ConsumerMemberAssignment{Topics: []kmsg.ConsumerMemberAssignmentTopic{{Topic: topic, Partitions: []int32{0, 1}}}}
	ga.MemberID, ga.MemberAssignment = id, asg.AppendTo(nil)
	sync.GroupAssignment = append(sync.GroupAssignment, ga)
	sr := c.do(sync, 5).(*kmsg.SyncGroupResponse)
	if sr.ErrorCode != 0 || string(sr.MemberAssignment) != string(ga.MemberAssignment) {
		t.Fatalf("sync: %+v", sr)
	}
	if code := commit(id, 1, 0); code != 0 {
		t.Fatalf("commit: %v", kerr.ErrorForCode(code))
	}
	if code := commit(id, 0, 0); code != kerr.IllegalGeneration.Code {
		t.Fatalf("commit at an old generation: %v", kerr.ErrorForCode(code))
	}
	if code := commit(id, 1, 5); code != kerr.OffsetOutOfRange.Code {
		t.Fatalf("commit past the high watermark: %v", kerr.ErrorForCode(code))
	}
	// A standalone commit while the group has a member.
	if code := commit("", -1, 0); code != kerr.UnknownMemberID.Code {
		t.Fatalf("standalone commit of a group with members: %v", kerr.ErrorForCode(code))
	}

	// HTTP members may not join a Kafka group: 409.
	hc, err := client.New(a.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = hc.JoinGroup(ctxT(t, 10*time.Second), group, client.JoinGroupRequest{Topics: []string{topic}})
	var pe *client.Error
	if !errors.As(err, &pe) || pe.Status != 409 || pe.Code != "inconsistent_group_protocol" {
		t.Fatalf("HTTP join of a Kafka group: %v", err)
	}

	// Describe, list, then leave: the group is empty and can be deleted.
	ctx := ctxT(t, 30*time.Second)
	dg, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if g := dg[group]; g.State != "Stable" || len(g.Members) != 1 || g.Protocol != "range" || g.ProtocolType != "consumer" {
		t.Fatalf("describe: %+v", g)
	}
	lg, err := adm.ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := lg[group]; !ok || g.ProtocolType != "consumer" || g.State != "Stable" {
		t.Fatalf("list: %+v", lg)
	}
	if res, err := adm.DeleteGroups(ctx, group); err != nil || !errors.Is(res[group].Err, kerr.NonEmptyGroup) {
		t.Fatalf("delete a group with members: %v %+v", err, res)
	}
	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Group = group
	lm := kmsg.NewLeaveGroupRequestMember()
	lm.MemberID = id
	leave.Members = append(leave.Members, lm)
	if lr := c.do(leave, 5).(*kmsg.LeaveGroupResponse); lr.ErrorCode != 0 || lr.Members[0].ErrorCode != 0 {
		t.Fatalf("leave: %+v", lr)
	}
	fo, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := fo.Lookup(topic, 0); !ok || o.At != 0 {
		t.Fatalf("fetch offsets: %+v", fo)
	}
	if res, err := adm.DeleteGroups(ctx, group); err != nil || res[group].Err != nil {
		t.Fatalf("delete: %v %+v", err, res)
	}
	dg, err = adm.DescribeGroups(ctx, group)
	if err != nil || dg[group].State != "Dead" {
		t.Fatalf("describe a deleted group: %v %+v", err, dg)
	}
	_ = kadm.ErrEmpty
}

// On shutdown, a parked JoinGroup answers NOT_COORDINATOR at once: its
// client finds the coordinator again, through the load balancer, on
// another agent.
func TestShutdownAnswersParkedJoin(t *testing.T) {
	a := setup(t, groupConfig)
	topic, group := topicName(t), groupName(t)
	createTopic(t, newAdmin(t, a), topic, 1, nil)
	meta := (&kmsg.ConsumerMemberMetadata{Topics: []string{topic}}).AppendTo(nil)
	join := func(c *rawConn, member string) int32 {
		req := kmsg.NewPtrJoinGroupRequest()
		req.Group, req.MemberID, req.ProtocolType = group, member, "consumer"
		req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = 30000, 60000
		p := kmsg.NewJoinGroupRequestProtocol()
		p.Name, p.Metadata = "range", meta
		req.Protocols = append(req.Protocols, p)
		req.SetVersion(3)
		return c.send(req)
	}
	// A first member, alone in generation 1.
	c1 := dialRaw(t, a.KafkaAddr)
	r := kmsg.NewPtrJoinGroupResponse()
	r.SetVersion(3)
	if err := c1.receive(join(c1, ""), r); err != nil || r.ErrorCode != 0 || r.Generation != 1 {
		t.Fatalf("first join: %v %+v", err, r)
	}
	// A second one: its join waits for the first to rejoin (up to the
	// rebalance timeout, a minute).
	c2 := dialRaw(t, a.KafkaAddr)
	corr := join(c2, "")
	waitGauge(t, a, "silt_kafka_group_requests_waiting", 1)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		a.Stop(t)
	}()
	r2 := kmsg.NewPtrJoinGroupResponse()
	r2.SetVersion(3)
	if err := c2.receive(corr, r2); err != nil || r2.ErrorCode != kerr.NotCoordinator.Code {
		t.Fatalf("parked join on shutdown: %v %+v", err, r2)
	}
	<-stopped
}
