package groups

import (
	"strconv"
	"strings"
	"sync"
)

// Notifications fans the group notifications of metadata.GroupsChannel
// out to the requests parked on the groups named (a group's id per
// notification). Feed it from the agent's one LISTEN connection:
// fetch.Notifier.Also(metadata.GroupsChannel, n.Note, n.WakeAll).
type Notifications struct {
	mu      sync.Mutex
	waiters map[int64]chan struct{}
}

// NewNotifications returns an empty fan-out.
func NewNotifications() *Notifications {
	return &Notifications{waiters: map[int64]chan struct{}{}}
}

// Watch returns a channel closed at the group's next notification, or
// when notifications may have been missed.
func (n *Notifications) Watch(groupID int64) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch, ok := n.waiters[groupID]
	if !ok {
		ch = make(chan struct{})
		n.waiters[groupID] = ch
	}
	return ch
}

// Note wakes the waiters of the group named by a notification's payload.
func (n *Notifications) Note(payload string) {
	id, err := strconv.ParseInt(strings.TrimSpace(payload), 10, 64)
	if err != nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if ch, ok := n.waiters[id]; ok {
		close(ch)
		delete(n.waiters, id)
	}
}

// WakeAll wakes every waiter: notifications may have been missed (the
// listener reconnected).
func (n *Notifications) WakeAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, ch := range n.waiters {
		close(ch)
		delete(n.waiters, id)
	}
}
