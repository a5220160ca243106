package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"silt/client"
	"silt/problem"
)

// groupMember consumes as one member of a group through the load
// balancer: join, group fetch, commit the positions, rejoin when the group
// rebalances, leave at the end. Its requests go wherever HAProxy sends
// them, so one member's join, fetches and commits land on different agents.
type groupMember struct {
	name  string
	cl    *client.Client
	tally *agentTally
}

func (m *groupMember) run(ctx context.Context, group, topic string, consumed func([]client.GroupRecord), errs *errorLog) {
	var ms client.GroupMembership
	joined := false
	join := func() bool {
		req := client.JoinGroupRequest{Topics: []string{topic}, SessionTimeout: 10 * time.Second, AutoOffsetReset: client.ResetEarliest}
		if joined {
			req.MemberID = ms.MemberID
		}
		out, err := m.cl.JoinGroup(ctx, group, req)
		if client.IsCode(err, problem.CodeMemberNotFound) {
			joined = false // expired: join afresh
			req.MemberID = ""
			out, err = m.cl.JoinGroup(ctx, group, req)
		}
		if err != nil {
			if ctx.Err() == nil {
				errs.add(m.name+" join", err)
			}
			return false
		}
		ms, joined = out, true
		return true
	}
	defer func() {
		if joined {
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := m.cl.LeaveGroup(lctx, group, ms.MemberID); err != nil {
				errs.add(m.name+" leave", err)
			}
		}
	}()
	for ctx.Err() == nil {
		if !joined && !join() {
			select { // back off before the next try
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		page, err := m.cl.GroupFetch(ctx, group, ms.MemberID, client.GroupFetchOptions{MaxRecords: 50, Wait: time.Second, Generation: ms.Generation})
		switch {
		case ctx.Err() != nil:
			return
		case client.IsCode(err, problem.CodeStaleGeneration), client.IsCode(err, problem.CodeMemberNotFound):
			join() // the protocol: rejoin to get the new assignment
			continue
		case err != nil:
			// A fetch without an answer may have moved the positions:
			// rejoining puts them back at the committed offsets.
			errs.add(m.name+" fetch", err)
			join()
			continue
		}
		consumed(page.Records)
		if len(page.Positions) == 0 {
			continue
		}
		err = m.cl.CommitOffsets(ctx, group, ms.MemberID, ms.Generation, page.Positions)
		switch {
		case ctx.Err() != nil:
			return
		case client.IsCode(err, problem.CodeStaleGeneration), client.IsCode(err, problem.CodeMemberNotFound),
			client.IsCode(err, problem.CodeNotAssigned):
			join() // these records are read again by the partition's new owner
		case err != nil:
			errs.add(m.name+" commit", err)
		}
	}
}

// Three members of one consumer group read a topic through HAProxy; their
// requests land on different agents, which keep no group state. Then one
// member leaves and the other two take over its partitions. Every record
// is consumed, the group's commits reach the high watermarks (lag 0), and
// nothing fails but the protocol's own rejoins.
func TestLBConsumerGroup(t *testing.T) {
	c := startLBCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	admin := lbClient(t, c, newAgentTally())
	const topic, group, partitions, half = "orders", "billing", int32(6), 300
	if _, err := admin.CreateTopic(ctx, client.NewTopic{Name: topic, Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
	p, err := admin.NewIdempotentProducer(ctx, topic, client.IdempotentOptions{})
	if err != nil {
		t.Fatal(err)
	}
	produce := func(from, to int) {
		t.Helper()
		for i := from; i < to; i += 50 {
			msgs := make([]client.Message, 50)
			for j := range msgs {
				v := fmt.Sprintf("order-%d", i+j)
				msgs[j] = client.Message{Key: []byte(v), Value: []byte(v)}
			}
			if _, err := p.Send(ctx, msgs); err != nil {
				t.Fatal(err)
			}
		}
	}

	var (
		mu   sync.Mutex
		seen = map[string]int{}
	)
	consumed := func(recs []client.GroupRecord) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range recs {
			if r.Topic != topic {
				t.Errorf("record of topic %q", r.Topic)
			}
			seen[string(r.Value)]++
		}
	}
	errs := &errorLog{}
	members := make([]*groupMember, 3)
	stops := make([]context.CancelFunc, 3)
	var wg sync.WaitGroup
	for i := range members {
		tally := newAgentTally()
		members[i] = &groupMember{name: fmt.Sprintf("member%d", i+1), cl: lbClient(t, c, tally), tally: tally}
		mctx, stop := context.WithCancel(ctx)
		stops[i] = stop
		wg.Go(func() { members[i].run(mctx, group, topic, consumed, errs) })
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
		wg.Wait()
	}()

	stable := func(n int) func() bool {
		return func() bool {
			d, err := admin.DescribeGroup(ctx, group)
			if err != nil || d.State != "stable" || len(d.Members) != n {
				return false
			}
			assigned := 0
			for _, m := range d.Members {
				assigned += len(m.Assignments)
			}
			return assigned == int(partitions)
		}
	}
	caughtUp := func(total int) func() bool {
		return func() bool {
			mu.Lock()
			n := len(seen)
			mu.Unlock()
			if n < total {
				return false
			}
			offs, err := admin.GroupOffsets(ctx, group)
			if err != nil || len(offs) != int(partitions) {
				return false
			}
			for _, o := range offs {
				if o.CommittedOffset == nil || *o.CommittedOffset != o.HighWatermark || o.Lag != 0 {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, "three members sharing the partitions", 2*time.Minute, stable(3))
	produce(0, half)
	waitFor(t, "the first half consumed and committed", 2*time.Minute, caughtUp(half))

	// member1 leaves; the other two take its partitions and read on.
	stops[0]()
	waitFor(t, "two members sharing every partition", 2*time.Minute, stable(2))
	produce(half, 2*half)
	waitFor(t, "the second half consumed and committed", 2*time.Minute, caughtUp(2*half))
	for _, stop := range stops {
		stop()
	}
	wg.Wait()

	mu.Lock()
	for i := 0; i < 2*half; i++ {
		if seen[fmt.Sprintf("order-%d", i)] == 0 {
			t.Errorf("order-%d never consumed", i)
		}
	}
	again := 0
	for _, n := range seen {
		again += n - 1
	}
	distinct := len(seen)
	mu.Unlock()
	if distinct != 2*half {
		t.Errorf("consumed %d distinct values, produced %d", distinct, 2*half)
	}
	retried, bad := errs.counts()
	if len(bad) > 0 {
		t.Errorf("%d non-retriable errors: %s", len(bad), short(bad))
	}
	// Where the members' requests went: the group works across agents.
	all := map[string]bool{}
	for _, m := range members {
		t.Logf("%s: responses per agent %s", m.name, m.tally)
		for _, a := range m.tally.agents() {
			all[a] = true
		}
	}
	if len(all) < 2 {
		t.Errorf("the members' requests all went to %v; want several agents", all)
	}
	d, err := admin.DescribeGroup(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Members) != 0 || d.State != "empty" {
		t.Errorf("after every member left: state %s with %d members", d.State, len(d.Members))
	}
	t.Logf("%d records consumed (%d read again after rebalances: at least once); %d retriable errors", 2*half, again, retried)
}
