package fetch

import "testing"

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A commit wakes its partition's waiters; a topic's deletion wakes the
// waiters of all its partitions, and no others.
func TestDispatchWakesPartitionsAndDeletedTopics(t *testing.T) {
	n, err := NewNotifier("", "silt_commits", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	a0, a1, b0 := n.Watch(PartitionKey{7, 0}), n.Watch(PartitionKey{7, 1}), n.Watch(PartitionKey{8, 0})
	n.dispatch("7:1:10 junk 9:x:1")
	if closed(a0) || !closed(a1) || closed(b0) {
		t.Fatalf("after a commit to 7/1: woken %v %v %v", closed(a0), closed(a1), closed(b0))
	}
	a1 = n.Watch(PartitionKey{7, 1})
	n.dispatch("7:*:deleted")
	if !closed(a0) || !closed(a1) || closed(b0) {
		t.Fatalf("after deleting topic 7: woken %v %v %v", closed(a0), closed(a1), closed(b0))
	}
}
