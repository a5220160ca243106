package groups

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"silt/metadata"
)

func TestRangeAssignKafkaExample(t *testing.T) {
	// Kafka's documented example: two consumers, two topics of three
	// partitions: C0 gets t0p0, t0p1, t1p0, t1p1; C1 gets t0p2, t1p2.
	topics := map[string]metadata.GroupTopic{"t0": {ID: 1, Partitions: 3}, "t1": {ID: 2, Partitions: 3}}
	got := RangeAssign(map[string][]string{"c1": {"t1", "t0"}, "c0": {"t0", "t1"}}, topics)
	want := map[string]string{
		"c0": "[t0/0 t0/1 t1/0 t1/1]",
		"c1": "[t0/2 t1/2]",
	}
	for id, w := range want {
		if s := render(got[id]); s != w {
			t.Errorf("%s: %s, want %s", id, s, w)
		}
	}
}

func TestRangeAssignPerTopicSubscriptions(t *testing.T) {
	topics := map[string]metadata.GroupTopic{"a": {ID: 1, Partitions: 7}, "b": {ID: 2, Partitions: 2}}
	got := RangeAssign(map[string][]string{
		"m1": {"a"},
		"m2": {"a", "b", "missing"},
		"m3": {"a", "b"},
		"m4": {"missing"},
	}, topics)
	want := map[string]string{
		"m1": "[a/0 a/1 a/2]",
		"m2": "[a/3 a/4 b/0]",
		"m3": "[a/5 a/6 b/1]",
		"m4": "[]",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d members, want %d", len(got), len(want))
	}
	for id, w := range want {
		if s := render(got[id]); s != w {
			t.Errorf("%s: %s, want %s", id, s, w)
		}
		if got[id] == nil {
			t.Errorf("%s: nil assignment, want empty", id)
		}
	}
	if got["m2"][2].TopicID != 2 {
		t.Errorf("topic id not carried: %+v", got["m2"])
	}
}

// Every partition of every subscribed topic goes to exactly one
// subscribed member, member loads differ by at most one per topic, and
// the result does not depend on map order.
func TestRangeAssignProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		topics := map[string]metadata.GroupTopic{}
		nt := 1 + r.IntN(4)
		for i := range nt {
			topics[fmt.Sprint("t", i)] = metadata.GroupTopic{ID: int64(i + 1), Partitions: int32(r.IntN(12))}
		}
		subs := map[string][]string{}
		for i := range 1 + r.IntN(8) {
			var ts []string
			for name := range topics {
				if r.IntN(3) > 0 {
					ts = append(ts, name)
				}
			}
			subs[fmt.Sprintf("m%02d", i)] = ts
		}
		got := RangeAssign(subs, topics)
		if again := RangeAssign(subs, topics); fmt.Sprint(again) != fmt.Sprint(got) {
			t.Fatalf("round %d: not deterministic", round)
		}
		owner := map[string]string{}
		for id, parts := range got {
			for _, p := range parts {
				k := fmt.Sprintf("%s/%d", p.Topic, p.Partition)
				if prev, ok := owner[k]; ok {
					t.Fatalf("round %d: %s assigned to %s and %s", round, k, prev, id)
				}
				owner[k] = id
				if !contains(subs[id], p.Topic) {
					t.Fatalf("round %d: %s got %s without subscribing", round, id, k)
				}
			}
		}
		for name, ti := range topics {
			var members []string
			for id, ts := range subs {
				if contains(ts, name) {
					members = append(members, id)
				}
			}
			for p := range ti.Partitions {
				if _, ok := owner[fmt.Sprintf("%s/%d", name, p)]; !ok && len(members) > 0 {
					t.Fatalf("round %d: %s/%d unassigned", round, name, p)
				}
			}
			if len(members) == 0 {
				continue
			}
			lo, hi := int(ti.Partitions), 0
			for _, id := range members {
				n := 0
				for _, p := range got[id] {
					if p.Topic == name {
						n++
					}
				}
				lo, hi = min(lo, n), max(hi, n)
			}
			if hi-lo > 1 {
				t.Fatalf("round %d: topic %s loads from %d to %d", round, name, lo, hi)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func render(parts []metadata.GroupPartition) string {
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = fmt.Sprintf("%s/%d", p.Topic, p.Partition)
	}
	return fmt.Sprint(out)
}
