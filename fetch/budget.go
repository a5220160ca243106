package fetch

import "sync"

// budget bounds the bytes of fetch responses in flight
// (Config.MaxInflightBytes): taken before a read, given back when the
// caller releases the response.
type budget struct {
	mu   sync.Mutex
	max  int64
	used int64
}

// upTo takes as much of n as is free, possibly 0.
func (b *budget) upTo(n int64) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	g := max(min(n, b.max-b.used), 0)
	b.used += g
	return g
}

// take takes n bytes if they are free.
func (b *budget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return false
	}
	b.used += n
	return true
}

func (b *budget) give(n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// hold is what a response holds of the in-flight budget, and the spans
// of the object-span cache its bytes lie in, until it is released.
type hold struct {
	budget *budget
	held   int64
	pins   pinSet
}

// release gives the bytes back and lets go of the spans, once; a zero or
// released hold does nothing.
func (h *hold) release() {
	h.pins.unpin()
	if h.budget == nil {
		return
	}
	h.budget.give(h.held)
	h.budget, h.held = nil, 0
}
