package groups

import (
	"sort"

	"silt/metadata"
)

// RangeAssign is Kafka's range assignor. For each topic separately, the
// members subscribed to it are sorted by member id and the partitions are
// divided into contiguous ranges in that order: with n partitions and c
// members, each member gets n/c partitions and the first n%c members one
// more. Topics absent from topics (deleted, or never created) give
// nothing. subscriptions maps member id to topic names; the result has an
// entry, possibly empty, for every member, sorted by topic and partition.
//
// As in Kafka, the first members in id order get the extra partition of
// every topic, so many topics with few partitions each load the first
// members more than the last. Member ids grow with join time, so a new
// member sorts last and moves few partitions of the existing ones.
func RangeAssign(subscriptions map[string][]string, topics map[string]metadata.GroupTopic) map[string][]metadata.GroupPartition {
	out := make(map[string][]metadata.GroupPartition, len(subscriptions))
	byTopic := map[string][]string{}
	for id, ts := range subscriptions {
		out[id] = []metadata.GroupPartition{}
		seen := map[string]bool{}
		for _, t := range ts {
			if !seen[t] {
				seen[t] = true
				byTopic[t] = append(byTopic[t], id)
			}
		}
	}
	names := make([]string, 0, len(byTopic))
	for t := range byTopic {
		names = append(names, t)
	}
	sort.Strings(names)
	for _, name := range names {
		t, ok := topics[name]
		if !ok || t.Partitions < 1 {
			continue
		}
		members := byTopic[name]
		sort.Strings(members)
		n, c := int(t.Partitions), len(members)
		per, extra := n/c, n%c
		next := 0
		for i, id := range members {
			count := per
			if i < extra {
				count++
			}
			for p := next; p < next+count; p++ {
				out[id] = append(out[id], metadata.GroupPartition{Topic: name, TopicID: t.ID, Partition: int32(p)})
			}
			next += count
		}
	}
	return out
}
