package e2e

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

type clusterView struct {
	Agents []struct {
		ID         string `json:"id"`
		Partitions []struct {
			Topic     string `json:"topic"`
			Partition int32  `json:"partition"`
			Epoch     int64  `json:"epoch"`
		} `json:"partitions"`
	} `json:"agents"`
}

// epochLog remembers which agent held each (partition, epoch), to prove no
// epoch ever had two owners.
type epochLog struct {
	mu    sync.Mutex
	owner map[string]string
	err   error
}

func (e *epochLog) observe(v clusterView) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, a := range v.Agents {
		for _, p := range a.Partitions {
			k := fmt.Sprintf("%s/%d@%d", p.Topic, p.Partition, p.Epoch)
			if prev, ok := e.owner[k]; ok && prev != a.ID && e.err == nil {
				e.err = fmt.Errorf("%s owned by both %s and %s", k, prev, a.ID)
			}
			e.owner[k] = a.ID
		}
	}
}

// converged reports whether every partition has exactly one owner among
// the expected live agents, spread evenly.
func converged(t *testing.T, c *cluster, log *epochLog, live []string, partitions int) bool {
	t.Helper()
	urls := c.live()
	if len(urls) == 0 {
		return false
	}
	var v clusterView
	if _, err := request("GET", urls[rand.IntN(len(urls))]+"/v1/cluster", nil, &v); err != nil {
		return false
	}
	log.observe(v)
	want := map[string]bool{}
	for _, id := range live {
		want[id] = true
	}
	owned := map[string]bool{}
	per := map[string]int{}
	for _, a := range v.Agents {
		for _, p := range a.Partitions {
			k := fmt.Sprintf("%s/%d", p.Topic, p.Partition)
			if owned[k] || !want[a.ID] {
				return false
			}
			owned[k] = true
			per[a.ID]++
		}
	}
	if len(owned) != partitions {
		return false
	}
	share := (partitions + len(live) - 1) / len(live)
	for _, id := range live {
		if per[id] < partitions/len(live) || per[id] > share {
			return false
		}
	}
	return true
}

type acked struct {
	partition int32
	offset    int64
}

// Three real agents under continuous produce and consume: kill -9 one,
// start a new one, SIGTERM another. Ownership converges each time with no
// epoch owned twice, and the consumer reads every acknowledged record
// exactly once, in offset order.
func TestFailoverUnderLoad(t *testing.T) {
	t.Parallel()
	c := newCluster(t,
		"SILT_HEARTBEAT_INTERVAL=300ms", "SILT_AGENT_TTL=3s",
		"SILT_LEASE_TTL=3s", "SILT_LEASE_INTERVAL=500ms",
	)
	for _, id := range []string{"a1", "a2", "a3"} {
		c.start(id)
	}
	const partitions = 6
	if _, err := request("POST", c.live()[0]+"/v1/topics", map[string]any{"name": "orders", "partitions": partitions}, nil); err != nil {
		t.Fatal(err)
	}
	elog := &epochLog{owner: map[string]string{}}
	waitFor(t, "initial ownership", time.Minute, func() bool { return converged(t, c, elog, []string{"a1", "a2", "a3"}, partitions) })

	// Producers: each value is unique; only 200 answers count as acknowledged.
	var (
		mu       sync.Mutex
		ackedBy  = map[string]acked{}
		seq      int
		stop     = make(chan struct{})
		prodWG   sync.WaitGroup
		failures int
	)
	for w := 0; w < 3; w++ {
		prodWG.Add(1)
		go func() {
			defer prodWG.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				urls := c.live()
				mu.Lock()
				seq++
				vals := make([]string, 5)
				for i := range vals {
					vals[i] = fmt.Sprintf("w%d-%d-%d", w, seq, i)
				}
				mu.Unlock()
				var recs []map[string]any
				for _, v := range vals {
					recs = append(recs, map[string]any{"key": v, "value": v})
				}
				var resp struct {
					Offsets []struct {
						Partition int32 `json:"partition"`
						Offset    int64 `json:"offset"`
					} `json:"offsets"`
				}
				_, err := request("POST", urls[rand.IntN(len(urls))]+"/v1/topics/orders/records", map[string]any{"records": recs}, &resp)
				mu.Lock()
				if err != nil {
					failures++
				} else {
					for i, o := range resp.Offsets {
						ackedBy[vals[i]] = acked{o.Partition, o.Offset}
					}
				}
				mu.Unlock()
			}
		}()
	}
	// Consumers: one per partition, reading through any live agent.
	type seen struct {
		offset int64
		value  string
	}
	var (
		readMu  sync.Mutex
		read    = map[int32][]seen{}
		consErr = make(chan error, partitions)
		consWG  sync.WaitGroup
		done    = make(chan struct{})
	)
	for p := int32(0); p < partitions; p++ {
		consWG.Add(1)
		go func() {
			defer consWG.Done()
			next := int64(0)
			for {
				// Once producers are done, a fetch issued from here on sees
				// every acknowledged record; only such a fetch may end the loop.
				final := false
				select {
				case <-done:
					final = true
				default:
				}
				urls := c.live()
				var resp struct {
					Records []struct {
						Offset int64  `json:"offset"`
						Value  string `json:"value"`
					} `json:"records"`
					NextOffset    int64 `json:"next_offset"`
					HighWatermark int64 `json:"high_watermark"`
				}
				url := fmt.Sprintf("%s/v1/topics/orders/partitions/%d/records?offset=%d&wait_ms=500", urls[rand.IntN(len(urls))], p, next)
				if _, err := request("GET", url, nil, &resp); err != nil {
					continue // the agent may be going away: try another
				}
				for _, r := range resp.Records {
					if r.Offset != next {
						consErr <- fmt.Errorf("partition %d: got offset %d, expected %d", p, r.Offset, next)
						return
					}
					readMu.Lock()
					read[p] = append(read[p], seen{r.Offset, r.Value})
					readMu.Unlock()
					next++
				}
				if final && next >= resp.HighWatermark {
					return
				}
			}
		}()
	}
	progress := func(n int) {
		waitFor(t, fmt.Sprintf("%d acknowledged records", n), time.Minute, func() bool { mu.Lock(); defer mu.Unlock(); return len(ackedBy) >= n })
	}
	progress(200)

	// kill -9 a2: its partitions move after about one lease TTL.
	killed := time.Now()
	if err := c.agents["a2"].Kill(); err != nil {
		t.Fatal(err)
	}
	c.remove("a2")
	took := waitFor(t, "reassignment after kill -9", time.Minute, func() bool { return converged(t, c, elog, []string{"a1", "a3"}, partitions) })
	t.Logf("kill -9 to full reassignment: %s (lease TTL 3s)", time.Since(killed).Round(10*time.Millisecond))
	_ = took
	mu.Lock()
	atKill := len(ackedBy)
	mu.Unlock()
	progress(atKill + 200) // writes never stopped

	c.start("a4")
	waitFor(t, "rebalance onto a new agent", time.Minute, func() bool { return converged(t, c, elog, []string{"a1", "a3", "a4"}, partitions) })
	progress(atKill + 400)

	// SIGTERM a3: it flushes, releases its leases and exits cleanly.
	a3 := c.agents["a3"]
	c.remove("a3")
	termAt := time.Now()
	if err := a3.Terminate(30 * time.Second); err != nil {
		t.Fatalf("a3 exit after SIGTERM: %v", err)
	}
	waitFor(t, "reassignment after SIGTERM", time.Minute, func() bool { return converged(t, c, elog, []string{"a1", "a4"}, partitions) })
	t.Logf("SIGTERM to full reassignment: %s", time.Since(termAt).Round(10*time.Millisecond))
	progress(atKill + 600)

	close(stop)
	prodWG.Wait()
	close(done)
	consWG.Wait()
	close(consErr)
	for err := range consErr {
		t.Fatal(err)
	}
	if elog.err != nil {
		t.Fatal(elog.err)
	}
	// Every acknowledged record was read once, at its acknowledged offset.
	at := map[string]acked{}
	for p, recs := range read {
		for _, r := range recs {
			if prev, dup := at[r.value]; dup {
				t.Fatalf("value %s read twice: %v and %d/%d", r.value, prev, p, r.offset)
			}
			at[r.value] = acked{p, r.offset}
		}
	}
	var missing []string
	for v, a := range ackedBy {
		if got, ok := at[v]; !ok || got != a {
			missing = append(missing, fmt.Sprintf("%s acked at %v read at %v (%v)", v, a, got, ok))
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("%d acknowledged records not read back as acknowledged, e.g. %s", len(missing), strings.Join(missing[:min(5, len(missing))], "; "))
	}
	t.Logf("%d records acknowledged and read back exactly once; %d produce calls failed during the failovers", len(ackedBy), failures)
}
