package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"silt/client"
	"silt/internal/agenttest"
	"silt/problem"
)

// groupClients starts two agents on one database and bucket and returns a
// client of each.
func groupClients(t *testing.T) (context.Context, *client.Client, *client.Client) {
	t.Helper()
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Bucket: agenttest.MinIOBucket(t)})
	b := agenttest.Start(t, agenttest.Options{DatabaseURL: a.DatabaseURL, Bucket: a.Raw})
	ca, err := client.New(a.URL)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := client.New(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx, ca, cb
}

func wantCode(t *testing.T, err error, code client.Code) {
	t.Helper()
	if !client.IsCode(err, code) {
		t.Fatalf("error %v, want code %s", err, code)
	}
}

func TestGroupClient(t *testing.T) {
	ctx, ca, cb := groupClients(t)
	orders, err := ca.CreateTopic(ctx, client.NewTopic{Name: "orders", Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []client.Message
	for i := range 9 {
		msgs = append(msgs, client.Message{Partition: client.Partition(int32(i % 3)), Key: []byte(fmt.Sprint("k", i)), Value: []byte{0xff, byte(i)},
			Headers: []client.Header{{Key: "h", Value: []byte("v")}}})
	}
	if _, err := ca.Produce(ctx, "orders", msgs); err != nil {
		t.Fatal(err)
	}

	m1, err := ca.JoinGroup(ctx, "g", client.JoinGroupRequest{Topics: []string{"orders"}, SessionTimeout: 20 * time.Second, AutoOffsetReset: client.ResetEarliest})
	if err != nil {
		t.Fatal(err)
	}
	if m1.Generation != 1 || len(m1.Assignments) != 3 || m1.HeartbeatInterval != 3*time.Second || m1.SessionTimeout != 20*time.Second {
		t.Fatalf("join %+v", m1)
	}
	for _, a := range m1.Assignments {
		if a.CommittedOffset != nil || a.Offset != 0 || a.TopicID != orders.ID {
			t.Fatalf("assignment %+v", a)
		}
	}
	m2, err := cb.JoinGroup(ctx, "g", client.JoinGroupRequest{Topics: []string{"orders"}, SessionTimeout: 20 * time.Second, AutoOffsetReset: client.ResetEarliest})
	if err != nil {
		t.Fatal(err)
	}
	hb, err := cb.Heartbeat(ctx, "g", m1.MemberID, m1.Generation)
	if err != nil || !hb.Rejoin || hb.Generation != 2 {
		t.Fatalf("heartbeat %+v, %v", hb, err)
	}
	_, err = ca.GroupFetch(ctx, "g", m1.MemberID, client.GroupFetchOptions{})
	wantCode(t, err, problem.CodeStaleGeneration)
	err = ca.CommitOffsets(ctx, "g", m1.MemberID, m1.Generation, []client.OffsetCommit{{Topic: "orders", Partition: 0, Offset: 1}})
	wantCode(t, err, problem.CodeStaleGeneration)
	if m1, err = ca.JoinGroup(ctx, "g", client.JoinGroupRequest{MemberID: m1.MemberID}); err != nil {
		t.Fatal(err)
	}
	if m1.Generation != 2 || len(m1.Assignments) != 2 || len(m2.Assignments) != 1 || m2.Assignments[0].Partition != 2 {
		t.Fatalf("after rebalance %+v | %+v", m1, m2)
	}

	// m1 reads its two partitions, records exact to the byte.
	res, err := cb.GroupFetch(ctx, "g", m1.MemberID, client.GroupFetchOptions{Generation: m1.Generation, MaxRecords: 100})
	if err != nil {
		t.Fatal(err)
	}
	if res.Generation != 2 || len(res.Records) != 6 || len(res.Positions) != 2 {
		t.Fatalf("fetch %+v", res)
	}
	for _, r := range res.Records {
		i := r.Value[1]
		if r.Topic != "orders" || r.TopicID != orders.ID || r.Partition != int32(i%3) || string(r.Key) != fmt.Sprint("k", i) || r.Value[0] != 0xff ||
			len(r.Headers) != 1 || string(r.Headers[0].Value) != "v" || r.Timestamp.IsZero() {
			t.Fatalf("record %+v", r)
		}
	}
	for _, p := range res.Positions {
		if p.Offset != 3 || p.TopicID != orders.ID {
			t.Fatalf("positions %+v", res.Positions)
		}
	}
	if err := ca.CommitOffsets(ctx, "g", m1.MemberID, m1.Generation, res.Positions); err != nil {
		t.Fatal(err)
	}
	// The next one, with auto-commit and a short wait, has nothing.
	res, err = ca.GroupFetch(ctx, "g", m1.MemberID, client.GroupFetchOptions{AutoCommit: true, Wait: 50 * time.Millisecond, Base64: true})
	if err != nil || len(res.Records) != 0 {
		t.Fatalf("second fetch %+v, %v", res, err)
	}
	err = ca.CommitOffsets(ctx, "g", m1.MemberID, m1.Generation, []client.OffsetCommit{{Topic: "orders", Partition: 2, Offset: 1}})
	wantCode(t, err, problem.CodeNotAssigned)
	err = ca.CommitOffsets(ctx, "g", m1.MemberID, m1.Generation, []client.OffsetCommit{{Topic: "orders", Partition: 0, Offset: 99}})
	wantCode(t, err, problem.CodeInvalidOffset)
	err = ca.CommitOffsets(ctx, "g", m1.MemberID, m1.Generation, []client.OffsetCommit{{Topic: "orders", TopicID: orders.ID + 1, Partition: 0, Offset: 1}})
	wantCode(t, err, problem.CodeTopicIDMismatch)
	err = ca.CommitOffsets(ctx, "g", "", 0, []client.OffsetCommit{{Topic: "orders", Partition: 0, Offset: 0}})
	wantCode(t, err, problem.CodeGroupNotEmpty)

	offs, err := cb.GroupOffsets(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if len(offs) != 3 || *offs[0].CommittedOffset != 3 || offs[0].Lag != 0 || offs[2].CommittedOffset != nil || offs[2].Lag != 3 || offs[2].HighWatermark != 3 {
		t.Fatalf("offsets %+v", offs)
	}
	list, err := ca.ListGroups(ctx)
	if err != nil || len(list) != 1 || list[0] != (client.GroupSummary{Name: "g", State: "stable", Generation: 2, Members: 2}) {
		t.Fatalf("list %+v, %v", list, err)
	}
	d, err := cb.DescribeGroup(ctx, "g")
	if err != nil || d.State != "stable" || len(d.Members) != 2 || d.Members[0].MemberID != m1.MemberID ||
		len(d.Members[0].Assignments) != 2 || d.Members[0].SessionTimeout != 20*time.Second || d.Members[0].LastHeartbeat.IsZero() {
		t.Fatalf("describe %+v, %v", d, err)
	}

	wantCode(t, ca.DeleteGroup(ctx, "g"), problem.CodeGroupNotEmpty)
	for _, m := range []client.GroupMembership{m1, m2} {
		if err := cb.LeaveGroup(ctx, "g", m.MemberID); err != nil {
			t.Fatal(err)
		}
	}
	_, err = ca.Heartbeat(ctx, "g", m1.MemberID, 3)
	wantCode(t, err, problem.CodeMemberNotFound)
	wantCode(t, ca.LeaveGroup(ctx, "g", m1.MemberID), problem.CodeMemberNotFound)
	if err := ca.CommitOffsets(ctx, "g", "", 0, []client.OffsetCommit{{Topic: "orders", Partition: 2, Offset: 3, Metadata: "reset"}}); err != nil {
		t.Fatal(err)
	}
	if err := ca.DeleteGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	_, err = cb.DescribeGroup(ctx, "g")
	wantCode(t, err, problem.CodeGroupNotFound)
	_, err = cb.GroupOffsets(ctx, "g")
	wantCode(t, err, problem.CodeGroupNotFound)
	_, err = cb.JoinGroup(ctx, "bad name", client.JoinGroupRequest{Topics: []string{"orders"}})
	wantCode(t, err, problem.CodeInvalidGroupName)
}
