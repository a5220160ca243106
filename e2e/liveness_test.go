package e2e

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"syscall"
	"testing"
	"time"

	"silt/client"
	"silt/internal/testenv"
	"silt/internal/toxiproxy"
	"silt/metadata"
)

// stallBound is how soon after one agent stalls the others must
// acknowledge produce to every partition again (issue: liveness).
const stallBound = 15 * time.Second

// proxiedDB returns the cluster database's URL through a new toxiproxy
// proxy, with the proxy's client and name.
func (c *cluster) proxiedDB(t *testing.T) (string, *toxiproxy.Client, string) {
	t.Helper()
	tp := testenv.Toxiproxy(t)
	u, err := url.Parse(c.db)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := tp.CreateProxy(ctx, "postgres", "", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.Listen
	return u.String(), tp, p.Name
}

// acks collects acknowledged records: partition -> offset -> value.
type acks struct {
	mu   sync.Mutex
	got  map[int32]map[int64]string
	dups []string
}

func newAcks() *acks { return &acks{got: map[int32]map[int64]string{}} }

func (a *acks) add(p int32, off int64, v string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.got[p] == nil {
		a.got[p] = map[int64]string{}
	}
	if prev, ok := a.got[p][off]; ok {
		a.dups = append(a.dups, fmt.Sprintf("%d@%d acknowledged as %q and %q", p, off, prev, v))
	}
	a.got[p][off] = v
}

// produceEach produces one record to each partition through url, retrying
// refusals, until all are acknowledged or ctx ends; it returns when the
// first and the last were acknowledged.
func produceEach(ctx context.Context, t *testing.T, u, topic, tag string, partitions int32, a *acks) (first, last time.Time) {
	t.Helper()
	cl, err := client.New(u, client.WithRetry(client.RetryPolicy{MaxAttempts: 1000, Backoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, MaxElapsed: time.Minute}))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for p := range partitions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := fmt.Sprintf("%s-%d", tag, p)
			res, err := cl.Produce(ctx, topic, []client.Message{{Partition: client.Partition(p), Value: []byte(v)}})
			if err != nil {
				t.Errorf("produce %s: %v", v, err)
				return
			}
			a.add(p, res.Offsets[0].Offset, v)
			now := time.Now()
			mu.Lock()
			if first.IsZero() || now.Before(first) {
				first = now
			}
			if now.After(last) {
				last = now
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return first, last
}

// checkLog reads every partition through url and checks that offsets are
// contiguous from 0 and that each acknowledged record is where it was
// acknowledged, and that no offset was acknowledged twice.
func checkLog(t *testing.T, u, topic string, partitions int32, a *acks) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, d := range a.dups {
		t.Errorf("acknowledged twice: %s", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := client.New(u)
	if err != nil {
		t.Fatal(err)
	}
	for p := range partitions {
		recs, err := readPartition(ctx, cl, topic, p)
		if err != nil {
			t.Fatalf("read partition %d: %v", p, err)
		}
		got := map[int64]string{}
		for i, r := range recs {
			if r.Offset != int64(i) {
				t.Fatalf("partition %d: record %d has offset %d: not contiguous", p, i, r.Offset)
			}
			got[r.Offset] = string(r.Value)
		}
		for off, v := range a.got[p] {
			if got[off] != v {
				t.Errorf("partition %d offset %d: %q, acknowledged as %q", p, off, got[off], v)
			}
		}
	}
}

// One agent's connection to Postgres freezes (bytes stop, sockets stay
// open) while that agent is inside a flush commit. The other agent keeps
// acknowledging produce to every partition within the bound; when the
// frozen agent thaws, its request fails or succeeds cleanly, nothing is
// acknowledged twice and offsets stay contiguous.
func TestFrozenAgentDoesNotStopOthers(t *testing.T) {
	t.Parallel()
	const partitions = 8
	c := newCluster(t, "SILT_FLUSH_TIMEOUT=5s", "SILT_DB_STATEMENT_TIMEOUT=4s", "SILT_DB_IDLE_IN_TRANSACTION_TIMEOUT=4s")
	dbURL, tp, proxy := c.proxiedDB(t)
	a1 := c.start("a1", "SILT_DATABASE_URL="+dbURL)
	a2 := c.start("a2")
	topic := "frozen"
	if _, err := request("POST", a2.URL+"/v1/topics", map[string]any{"name": topic, "partitions": partitions}, nil); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a := newAcks()
	produceEach(ctx, t, a1.URL, topic, "warm1", partitions, a)
	produceEach(ctx, t, a2.URL, topic, "warm2", partitions, a)

	conn, holder := c.dbConn(t), c.dbConn(t)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM partitions ORDER BY topic_id, partition FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	// a1 reaches its commit, which waits on the held rows.
	frozenDone := make(chan error, 1)
	go func() {
		cl, err := client.New(a1.URL)
		if err != nil {
			frozenDone <- err
			return
		}
		msgs := make([]client.Message, partitions)
		for p := range msgs {
			msgs[p] = client.Message{Partition: client.Partition(int32(p)), Value: []byte(fmt.Sprint("frozen-", p))}
		}
		res, err := cl.Produce(ctx, topic, msgs)
		if err == nil {
			for i, o := range res.Offsets {
				a.add(o.Partition, o.Offset, string(msgs[i].Value))
			}
		}
		frozenDone <- err
	}()
	waitBlocked(t, conn, "a1", "silt_commit_flush")
	// Freeze a1's connection to Postgres in both directions, then let
	// its commit through.
	for _, stream := range []string{toxiproxy.Upstream, toxiproxy.Downstream} {
		if _, err := tp.AddToxic(ctx, proxy, toxiproxy.Freeze(stream)); err != nil {
			t.Fatal(err)
		}
	}
	frozeAt := time.Now()
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	bctx, cancel := context.WithTimeout(ctx, stallBound)
	first, last := produceEach(bctx, t, a2.URL, topic, "during", partitions, a)
	cancel()
	if t.Failed() {
		t.Fatalf("a2 did not acknowledge every partition within %v of the freeze", stallBound)
	}
	t.Logf("freeze to a2's first acknowledgement: %v; to the last partition's: %v", first.Sub(frozeAt).Round(time.Millisecond), last.Sub(frozeAt).Round(time.Millisecond))
	// a1's request ends while it is still frozen, by its own flush
	// deadline, and a2 goes on acknowledging.
	select {
	case err := <-frozenDone:
		t.Logf("the frozen agent's request ended %v after the freeze: %v", time.Since(frozeAt).Round(time.Millisecond), err)
	case <-time.After(time.Minute):
		t.Fatal("the frozen agent's request never ended")
	}
	bctx, cancel = context.WithTimeout(ctx, stallBound)
	produceEach(bctx, t, a2.URL, topic, "still", partitions, a)
	cancel()
	// Thaw; a1 works again.
	t.Logf("thawing %v after the freeze", time.Since(frozeAt).Round(time.Millisecond))
	for _, stream := range []string{toxiproxy.Upstream, toxiproxy.Downstream} {
		if err := tp.RemoveToxic(ctx, proxy, "freeze_"+stream); err != nil {
			t.Fatal(err)
		}
	}
	produceEach(ctx, t, a1.URL, topic, "after1", partitions, a)
	produceEach(ctx, t, a2.URL, topic, "after2", partitions, a)
	checkLog(t, a2.URL, topic, partitions, a)
}

// stopWhileBlocked holds rows with lockSQL, runs start, waits until agent
// id blocks on the rows in a statement containing fn, stops it (SIGSTOP)
// and releases the rows, so that the stopped agent's transaction goes on
// holding whatever it locked. It returns when the agent was stopped, and a
// func to continue it.
func stopWhileBlocked(t *testing.T, c *cluster, pid int, id, lockSQL, fn string, start func(), lockArgs ...any) (time.Time, func()) {
	t.Helper()
	ctx := context.Background()
	conn, holder := c.dbConn(t), c.dbConn(t)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, lockSQL, lockArgs...); err != nil {
		t.Fatal(err)
	}
	start()
	waitBlocked(t, conn, id, fn)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	var once sync.Once
	cont := func() { once.Do(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) }
	t.Cleanup(cont)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	return stopped, cont
}

// An agent stopped (SIGSTOP) inside a consumer group commit, holding the
// group's lock, holds it only until Postgres ends its idle transaction:
// the other agent acknowledges produce at once and serves the same group
// within the bound.
func TestStoppedGroupCommitDoesNotStopOthers(t *testing.T) {
	t.Parallel()
	const partitions = 4
	c := newCluster(t)
	a1, a2 := c.start("a1"), c.start("a2")
	topic, group := "gstop", "grp"
	if _, err := request("POST", a2.URL+"/v1/topics", map[string]any{"name": topic, "partitions": partitions}, nil); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a := newAcks()
	produceEach(ctx, t, a2.URL, topic, "warm", partitions, a)
	c1, err := client.New(a1.URL)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := client.New(a2.URL, client.WithRetry(client.RetryPolicy{MaxAttempts: 1000, Backoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, MaxElapsed: time.Minute}))
	if err != nil {
		t.Fatal(err)
	}
	m, err := c1.JoinGroup(ctx, group, client.JoinGroupRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	commit := func(cl *client.Client, off int64) error {
		return cl.CommitOffsets(ctx, group, m.MemberID, m.Generation, []client.OffsetCommit{{Topic: topic, Partition: 0, Offset: off}})
	}
	done := make(chan error, 1)
	// The group's lock held exclusive, as a membership change holds it: the
	// commit waits for it (shared) and is stopped as it is granted.
	stopped, cont := stopWhileBlocked(t, c, a1.PID(), "a1", `SELECT pg_advisory_xact_lock($1, hashtext($2))`, "pg_advisory_xact_lock_shared",
		func() { go func() { done <- commit(c1, 1) }() }, metadata.GroupLockClass, group)
	bctx, cancel := context.WithTimeout(ctx, stallBound)
	defer cancel()
	first, _ := produceEach(bctx, t, a2.URL, topic, "during", partitions, a)
	if err := c2.CommitOffsets(bctx, group, m.MemberID, m.Generation, []client.OffsetCommit{{Topic: topic, Partition: 0, Offset: 1}}); err != nil {
		t.Fatalf("a2's commit for the group a1 stopped in: %v", err)
	}
	t.Logf("stop to a2's first acknowledgement: %v; to a2's group commit: %v", first.Sub(stopped).Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond))
	cont()
	select {
	case err := <-done:
		t.Logf("the stopped agent's commit ended: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the stopped agent's commit never ended")
	}
	produceEach(ctx, t, a1.URL, topic, "after", partitions, a)
	checkLog(t, a2.URL, topic, partitions, a)
}

// ownedBy counts the partitions an agent ($1) holds valid leases on.
const ownedBy = `SELECT count(*) FROM leases l JOIN agent_leases a ON a.agent_id = l.owner_agent AND a.incarnation = l.incarnation
	WHERE l.owner_agent = $1 AND a.expires_at > now()`

// An agent stopped (SIGSTOP) inside a lease round does not hold up the
// other agent's writes.
func TestStoppedLeaseRoundDoesNotStopOthers(t *testing.T) {
	t.Parallel()
	const partitions = 4
	c := newCluster(t, "SILT_LEASE_INTERVAL=500ms", "SILT_LEASE_TTL=5s")
	a1, a2 := c.start("a1"), c.start("a2")
	topic := "lstop"
	if _, err := request("POST", a2.URL+"/v1/topics", map[string]any{"name": topic, "partitions": partitions}, nil); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a := newAcks()
	produceEach(ctx, t, a2.URL, topic, "warm", partitions, a)
	conn := c.dbConn(t)
	waitFor(t, "a1 holds leases", time.Minute, func() bool {
		return count(t, conn, ownedBy, "a1") > 0
	})
	stopped, cont := stopWhileBlocked(t, c, a1.PID(), "a1",
		`SELECT 1 FROM agent_leases WHERE agent_id = 'a1' FOR UPDATE`, "silt_sync_leases", func() {})
	bctx, cancel := context.WithTimeout(ctx, stallBound)
	first, last := produceEach(bctx, t, a2.URL, topic, "during", partitions, a)
	cancel()
	t.Logf("stop to a2's first acknowledgement: %v; to the last partition's: %v", first.Sub(stopped).Round(time.Millisecond), last.Sub(stopped).Round(time.Millisecond))
	// The stopped agent's leases lapse and a2 takes its partitions.
	waitFor(t, "a2 owns every partition", time.Minute, func() bool {
		return count(t, conn, ownedBy, "a2") == partitions
	})
	cont()
	produceEach(ctx, t, a1.URL, topic, "after", partitions, a)
	checkLog(t, a2.URL, topic, partitions, a)
}
