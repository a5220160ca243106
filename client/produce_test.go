package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"silt/client"
	"silt/partitioner"
	"silt/problem"
)

// produceFunc is Produce or ProduceBinary.
type produceFunc func(c *client.Client) func(context.Context, string, []client.Message, ...client.ProduceOption) (client.ProduceResult, error)

var produceFormats = []struct {
	name string
	fn   produceFunc
}{
	{"json", func(c *client.Client) func(context.Context, string, []client.Message, ...client.ProduceOption) (client.ProduceResult, error) {
		return c.Produce
	}},
	{"binary", func(c *client.Client) func(context.Context, string, []client.Message, ...client.ProduceOption) (client.ProduceResult, error) {
		return c.ProduceBinary
	}},
}

// highWatermarks reads every partition's high watermark from describe.
func highWatermarks(t *testing.T, c *client.Client, topic string) []int64 {
	t.Helper()
	d, err := c.DescribeTopic(testContext(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int64, len(d.PartitionStates))
	for _, ps := range d.PartitionStates {
		out[ps.Partition] = ps.HighWatermark
	}
	return out
}

func TestProduce(t *testing.T) {
	for _, f := range produceFormats {
		t.Run(f.name, func(t *testing.T) {
			c, _ := start(t)
			ctx := testContext(t)
			const parts = 4
			if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "events", Partitions: parts}); err != nil {
				t.Fatal(err)
			}
			produce := f.fn(c)

			// Keyed records go where murmur2 says, in request order.
			var msgs []client.Message
			for i := range 20 {
				msgs = append(msgs, client.Message{Key: fmt.Appendf(nil, "user-%d", i), Value: fmt.Appendf(nil, `{"n":%d}`, i)})
			}
			res, err := produce(ctx, "events", msgs)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Offsets) != len(msgs) || res.Duplicate {
				t.Fatalf("result %+v", res)
			}
			next := map[int32]int64{}
			for i, o := range res.Offsets {
				if want := partitioner.ForKey(msgs[i].Key, parts); o.Partition != want {
					t.Fatalf("record %d: partition %d, want %d", i, o.Partition, want)
				}
				if o.Offset != next[o.Partition] {
					t.Fatalf("record %d: offset %d in partition %d, want %d", i, o.Offset, o.Partition, next[o.Partition])
				}
				next[o.Partition]++
			}

			// Keyless records of one request share a partition; explicit
			// partitions win; timestamps and headers are accepted.
			res, err = produce(ctx, "events", []client.Message{
				{Value: []byte("a")},
				{Value: nil},
				{Value: []byte{}, Headers: []client.Header{{Key: "h", Value: []byte("v")}, {Key: "n", Value: nil}}},
				{Partition: client.Partition(2), Key: []byte("ignored-for-partitioning"), Value: []byte("b"), Timestamp: time.UnixMilli(1_700_000_000_000)},
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Offsets[0].Partition != res.Offsets[1].Partition || res.Offsets[1].Partition != res.Offsets[2].Partition {
				t.Fatalf("keyless records split across partitions: %+v", res.Offsets)
			}
			if res.Offsets[3].Partition != 2 {
				t.Fatalf("explicit partition ignored: %+v", res.Offsets[3])
			}
			for i := range 3 {
				if res.Offsets[i].Offset != next[res.Offsets[i].Partition]+int64(i) {
					t.Fatalf("keyless offsets %+v (next %v)", res.Offsets, next)
				}
			}
			next[res.Offsets[0].Partition] += 3
			next[2]++

			hw := highWatermarks(t, c, "events")
			for p := range int32(parts) {
				if hw[p] != next[p] {
					t.Fatalf("partition %d: high watermark %d, want %d", p, hw[p], next[p])
				}
			}
		})
	}
}

func TestProduceWithSequencesDeduplicates(t *testing.T) {
	for _, f := range produceFormats {
		t.Run(f.name, func(t *testing.T) {
			c, _ := start(t)
			ctx := testContext(t)
			if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t", Partitions: 2}); err != nil {
				t.Fatal(err)
			}
			pid, err := c.NewProducerID(ctx)
			if err != nil {
				t.Fatal(err)
			}
			msgs := []client.Message{
				{Partition: client.Partition(0), Value: []byte("a")},
				{Partition: client.Partition(1), Value: []byte("b")},
				{Partition: client.Partition(0), Value: []byte("c")},
			}
			seqs := map[int32]int32{0: 0, 1: 0}
			first, err := f.fn(c)(ctx, "t", msgs, client.WithSequences(pid, seqs))
			if err != nil {
				t.Fatal(err)
			}
			again, err := f.fn(c)(ctx, "t", msgs, client.WithSequences(pid, seqs))
			if err != nil {
				t.Fatal(err)
			}
			if !again.Duplicate || fmt.Sprint(again.Offsets) != fmt.Sprint(first.Offsets) {
				t.Fatalf("resend: %+v, first %+v", again, first)
			}
			if hw := highWatermarks(t, c, "t"); hw[0] != 2 || hw[1] != 1 {
				t.Fatalf("high watermarks %v after a duplicate", hw)
			}
			// A gap in the sequence is refused.
			_, err = f.fn(c)(ctx, "t", msgs[:1], client.WithSequences(pid, map[int32]int32{0: 5}))
			if e := asError(t, err); e.Code != problem.CodeSequenceGap {
				t.Fatalf("gap: %v", err)
			}
		})
	}
}
