package fetch

import (
	"container/list"
	"sync"
)

// lru is a byte-bounded least-recently-used cache. Values are immutable
// once stored, so hits share them without copying.
type lru[K comparable, V any] struct {
	mu      sync.Mutex
	max     int64
	size    int64
	ll      *list.List
	items   map[K]*list.Element
	evicted func(n int64)
}

type lruEntry[K comparable, V any] struct {
	key  K
	val  V
	cost int64
}

func newLRU[K comparable, V any](maxBytes int64, evicted func(n int64)) *lru[K, V] {
	if evicted == nil {
		evicted = func(int64) {}
	}
	return &lru[K, V]{max: maxBytes, ll: list.New(), items: map[K]*list.Element{}, evicted: evicted}
}

func (c *lru[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*lruEntry[K, V]).val, true
	}
	var zero V
	return zero, false
}

// has reports whether k is cached, without touching its recency.
func (c *lru[K, V]) has(k K) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[k]
	return ok
}

// add stores v at cost bytes; values larger than the whole cache are not kept.
func (c *lru[K, V]) add(k K, v V, cost int64) {
	if cost > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		old := e.Value.(*lruEntry[K, V])
		c.size += cost - old.cost
		old.val, old.cost = v, cost
		c.ll.MoveToFront(e)
	} else {
		c.items[k] = c.ll.PushFront(&lruEntry[K, V]{key: k, val: v, cost: cost})
		c.size += cost
	}
	var n int64
	for c.size > c.max {
		e := c.ll.Back()
		ent := e.Value.(*lruEntry[K, V])
		c.ll.Remove(e)
		delete(c.items, ent.key)
		c.size -= ent.cost
		n++
	}
	if n > 0 {
		c.evicted(n)
	}
}

func (c *lru[K, V]) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}
