package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"silt/client"
	"silt/localstack"
)

// producerLoad is several idempotent producers, each with its own client
// and connections, writing unique values through the load balancer.
type producerLoad struct {
	mu    sync.Mutex
	acked map[string]client.RecordOffset // value -> where it was acknowledged
	errs  *errorLog
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startProducers(ctx context.Context, t *testing.T, c *localstack.Cluster, tally *agentTally, topic string, n int) *producerLoad {
	t.Helper()
	l := &producerLoad{acked: map[string]client.RecordOffset{}, errs: &errorLog{}, stop: make(chan struct{})}
	for w := range n {
		cl := lbClient(t, c, tally)
		p, err := cl.NewIdempotentProducer(ctx, topic, client.IdempotentOptions{})
		if err != nil {
			t.Fatal(err)
		}
		l.wg.Go(func() {
			for seq := 0; ; seq++ {
				select {
				case <-l.stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				msgs := make([]client.Message, 5)
				vals := make([]string, len(msgs))
				for i := range msgs {
					vals[i] = fmt.Sprintf("p%d-%d-%d", w, seq, i)
					msgs[i] = client.Message{Key: []byte(vals[i]), Value: []byte(vals[i])}
				}
				res, err := p.Send(ctx, msgs)
				if err != nil {
					if ctx.Err() == nil {
						l.errs.add(fmt.Sprintf("producer %d send %d", w, seq), err)
					}
					continue
				}
				l.mu.Lock()
				for i, o := range res.Offsets {
					l.acked[vals[i]] = o
				}
				l.mu.Unlock()
			}
		})
	}
	return l
}

func (l *producerLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// waitAcked waits until at least n records are acknowledged.
func (l *producerLoad) waitAcked(t *testing.T, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d acknowledged records", n), 2*time.Minute, func() bool { return l.count() >= n })
}

func (l *producerLoad) halt() {
	close(l.stop)
	l.wg.Wait()
}

// tails follow every partition over SSE through the load balancer.
type tails struct {
	mu      sync.Mutex
	records map[int32][]client.Record
	errs    *errorLog
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func startTails(ctx context.Context, t *testing.T, c *localstack.Cluster, tally *agentTally, topic string, partitions int32) *tails {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	tl := &tails{records: map[int32][]client.Record{}, errs: &errorLog{}, cancel: cancel}
	cl := lbClient(t, c, tally)
	for p := range partitions {
		tl.wg.Go(func() {
			// Offset 0: every record, however late the stream connects.
			for rec, err := range cl.Stream(ctx, topic, p, 0, client.StreamOptions{IdleTimeout: 45 * time.Second}) {
				if err != nil {
					tl.errs.add(fmt.Sprintf("stream of partition %d", p), err)
					return
				}
				tl.mu.Lock()
				tl.records[p] = append(tl.records[p], rec)
				tl.mu.Unlock()
			}
		})
	}
	return tl
}

func (tl *tails) len(p int32) int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return len(tl.records[p])
}

func (tl *tails) halt() {
	tl.cancel()
	tl.wg.Wait()
}

// Producers write through HAProxy from several clients while SSE tails
// follow every partition through HAProxy; the three agents are restarted
// one by one with SIGTERM. No acknowledged record is lost or duplicated,
// the tails see every record (those of every producer) once and in order,
// and the clients meet no error but retriable ones.
func TestLBRollingRestartUnderLoad(t *testing.T) {
	c := startLBCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	tally := newAgentTally()
	admin := lbClient(t, c, tally)
	const topic, partitions = "events", int32(4)
	if _, err := admin.CreateTopic(ctx, client.NewTopic{Name: topic, Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
	tl := startTails(ctx, t, c, tally, topic, partitions)
	defer tl.halt()
	load := startProducers(ctx, t, c, tally, topic, 4)
	stopped := false
	defer func() {
		if !stopped {
			load.halt()
		}
	}()
	load.waitAcked(t, 300)

	// Before any restart: each tail shows records of several producers.
	waitFor(t, "tails to show records of every producer", time.Minute, func() bool {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		from := map[byte]bool{}
		for _, recs := range tl.records {
			for _, r := range recs {
				from[r.Value[1]] = true // p<w>-...
			}
		}
		return len(from) == 4
	})

	for _, id := range c.AgentIDs() {
		before := load.count()
		start := time.Now()
		if err := c.RestartAgent(ctx, id); err != nil {
			t.Fatalf("rolling restart of %s: %v", id, err)
		}
		t.Logf("restarted %s in %s (SIGTERM, exit, out of HAProxy, started, back in HAProxy)", id, time.Since(start).Round(10*time.Millisecond))
		load.waitAcked(t, before+200) // writes go on through the others
	}
	load.waitAcked(t, load.count()+100) // and through the restarted ones
	load.halt()
	stopped = true

	// Every acknowledged record is in the log once, where it was acknowledged.
	logs := map[int32][]client.Record{}
	at := map[string]client.RecordOffset{}
	for p := range partitions {
		recs, err := readPartition(ctx, admin, topic, p)
		if err != nil {
			t.Fatalf("read partition %d: %v", p, err)
		}
		logs[p] = recs
		for i, r := range recs {
			if r.Offset != int64(i) {
				t.Fatalf("partition %d: offset %d at position %d", p, r.Offset, i)
			}
			v := string(r.Value)
			if prev, dup := at[v]; dup {
				t.Fatalf("value %s written twice: %v and %d/%d", v, prev, p, r.Offset)
			}
			at[v] = client.RecordOffset{Partition: p, Offset: r.Offset}
		}
	}
	var lost []string
	load.mu.Lock()
	acked := len(load.acked)
	for v, o := range load.acked {
		if got, ok := at[v]; !ok || got != o {
			lost = append(lost, fmt.Sprintf("%s acked at %v, found at %v (%v)", v, o, got, ok))
		}
	}
	load.mu.Unlock()
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged records not in the log where acknowledged: %s", len(lost), acked, short(lost))
	}

	// The tails caught up with the whole log, in order, each record once.
	for p := range partitions {
		waitFor(t, fmt.Sprintf("tail of partition %d to reach %d records", p, len(logs[p])), time.Minute,
			func() bool { return tl.len(p) >= len(logs[p]) })
	}
	tl.halt()
	for p := range partitions {
		got := tl.records[p]
		if len(got) != len(logs[p]) {
			t.Fatalf("partition %d: tail has %d records, log %d", p, len(got), len(logs[p]))
		}
		for i := range got {
			if got[i].Offset != logs[p][i].Offset || string(got[i].Value) != string(logs[p][i].Value) {
				t.Fatalf("partition %d: tail record %d is %d/%q, log has %d/%q", p, i, got[i].Offset, got[i].Value, logs[p][i].Offset, logs[p][i].Value)
			}
		}
	}

	// Only retriable errors reached the clients (and the clients retried them).
	for name, l := range map[string]*errorLog{"producers": load.errs, "tails": tl.errs} {
		retried, bad := l.counts()
		if len(bad) > 0 {
			t.Errorf("%s: %d non-retriable errors: %s", name, len(bad), short(bad))
		}
		if retried > 0 {
			t.Logf("%s: %d requests failed for good with retriable errors after their retries", name, retried)
		}
	}
	if got := tally.agents(); len(got) != 3 {
		t.Errorf("responses came from agents %v, want all three", got)
	}
	t.Logf("%d records acknowledged, all in the log once and seen by the tails; responses per agent: %s; failed attempts the clients retried: %v",
		acked, tally, tally.failed())
}
