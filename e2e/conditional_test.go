package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"silt/client"
	"silt/problem"
)

// Conditional appends (expected_offset) racing through two agents: eight
// writers make 1,000 attempts in all, each at the next offset it believes
// in. Every offset is written exactly once, by the attempt that expected
// it, and every loser is told a next offset that the log then has.
func TestConditionalAppendRace(t *testing.T) {
	t.Parallel()
	const writers, attempts = 8, 1000
	c := newCluster(t)
	a1, a2 := c.start("a1"), c.start("a2")
	topic := "cas"
	if _, err := request("POST", a1.URL+"/v1/topics", map[string]any{"name": topic, "partitions": 1}, nil); err != nil {
		t.Fatal(err)
	}
	type loss struct{ expected, told int64 }
	var (
		mu      sync.Mutex
		won     = map[int64]string{} // offset -> value
		losses  []loss
		started atomic.Int64
		wg      sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for w := range writers {
		cl, err := client.New([]string{a1.URL, a2.URL}[w%2])
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := int64(0)
			for i := 0; started.Add(1) <= attempts; i++ {
				v := fmt.Sprintf("w%d-%d", w, i)
				res, err := cl.Produce(ctx, topic, []client.Message{{Partition: client.Partition(0), Value: []byte(v)}}, client.WithExpectedOffset(next))
				var ce *client.Error
				switch {
				case err == nil:
					mu.Lock()
					if prev, ok := won[res.Offsets[0].Offset]; ok {
						t.Errorf("offset %d won by %s and %s", res.Offsets[0].Offset, prev, v)
					}
					won[res.Offsets[0].Offset] = v
					mu.Unlock()
					if res.Offsets[0].Offset != next {
						t.Errorf("%s expected %d, written at %d", v, next, res.Offsets[0].Offset)
					}
					next = res.Offsets[0].Offset + 1
				case errors.As(err, &ce) && ce.Code == problem.CodeOffsetMismatch:
					if ce.NextOffset <= next {
						t.Errorf("%s expected %d and lost, but was told the partition is at %d", v, next, ce.NextOffset)
					}
					mu.Lock()
					losses = append(losses, loss{next, ce.NextOffset})
					mu.Unlock()
					next = ce.NextOffset
				default:
					t.Errorf("%s: %v", v, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	cl, err := client.New(a2.URL)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := readPartition(ctx, cl, topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(won) || len(won)+len(losses) != attempts {
		t.Fatalf("%d records, %d wins, %d losses, %d attempts", len(recs), len(won), len(losses), attempts)
	}
	for _, r := range recs {
		if won[r.Offset] != string(r.Value) {
			t.Fatalf("offset %d holds %q, won by %q", r.Offset, r.Value, won[r.Offset])
		}
	}
	hw := int64(len(recs))
	for _, l := range losses {
		if l.told > hw {
			t.Fatalf("a loser at %d was told %d, past the end %d", l.expected, l.told, hw)
		}
	}
	t.Logf("%d attempts: %d written, %d refused with the next offset", attempts, len(won), len(losses))
}
