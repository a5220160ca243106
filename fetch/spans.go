package fetch

import (
	"bytes"
	"container/list"
	"context"
	"sync"
	"time"

	"silt/metadata"
)

// The object-span cache holds spans of objects read once for many
// fetches: whole fresh objects for the tails of many partitions, and, for
// readers catching up, whole flush objects (or the span of one that its
// readers want) read once for every partition that wants a sliver of them,
// or read ahead of the reader that will want them next.
//
// A flush segment holds a chunk of every partition written during its
// linger, so readers catching up on several partitions at once want
// slivers of the same objects. Read range by range, each object is read
// once per partition, in small reads that cost an object store far more
// per byte than large ones (MinIO: about three times the CPU for 1 MB
// ranges as for 9 MiB objects).
//
// What readers want is learnt from the index lookups: a fetch looks up at
// least readAheadLookup bytes (twice its own when larger), and each object
// its rows name is wanted by its partition (the bytes of its rows there)
// until the partition has read its chunks of it. A catch-up read of an
// object reads, once, for every reader:
//   - the whole object (at most Config.WholeObjectBytes) when two or more
//     partitions want it and want at least half of its bytes;
//   - else the span from the first wanted byte to the last, when it is no
//     larger than that, dense (at least half of it wanted), and wanted by
//     two partitions or by this one past what this fetch reads;
//   - else its own coalesced ranges, as before.
//
// After a catch-up fetch, the readAheadObjects objects its partition
// reads next are read ahead the same way (or the partition's own spans of
// them), so that the object store works while the client decodes, with
// several reads in flight while the readers behind wait on one object.
//
// The cache is bounded in bytes (Config.ObjectCacheBytes) and in spans.
// Each span is read by one goroutine of its own, which alone writes its
// buffer; readers wait for that read and then share the bytes, unchanged,
// pinning the span until they are done (a stored-batch response until its
// Release). A span is evicted, least recently used first, only once read,
// unpinned and wanted by no partition (every partition that looked it up
// has read it), or once untouched for spanTTL; its bytes count against the
// bound until its last pin is let go. A read that fails is not kept. When
// a catch-up read finds no room for a span, the fetch ends before that
// object (if it has chunks before it) so that readers move through the
// objects held together, rather than each reading its own ranges of the
// next ones.

const (
	// spanTTL bounds how long a span, or a want, is kept untouched.
	spanTTL = 10 * time.Second
	// maxWantedObjects bounds the objects whose wants are tracked, and
	// maxWantersPerObject the partitions tracked for one.
	maxWantedObjects    = 4096
	maxWantersPerObject = 256
	// maxSpans bounds the spans held (the byte bound holds too).
	maxSpans = 1024
	// readAheadLookup is the least a fetch looks ahead in the index.
	readAheadLookup = 8 << 20
	// readAheadObjects is how many objects past a catch-up fetch are
	// read ahead of it.
	readAheadObjects = 2
	// spanReadTimeout bounds one span read.
	spanReadTimeout = time.Minute
	// spanWait bounds how long a catch-up fetch waits for room for the
	// span of its first object before it reads its own ranges.
	spanWait = 250 * time.Millisecond
)

// Kinds of span reads, for metrics.
const (
	kindWhole = "whole" // a fresh object, whole, for tail reads
	kindSpan  = "span"  // a catch-up span (or whole object) for a fetch waiting on it
	kindAhead = "ahead" // a catch-up span read ahead of the fetch that will want it
	kindRange = "range" // a fetch's own coalesced range
)

// wantedSpan is what one partition wants of an object.
type wantedSpan struct {
	lo, hi int64 // from its first wanted byte to past its last
	bytes  int64
}

type wanted struct {
	parts   map[PartitionKey]wantedSpan
	touched time.Time
}

// span is a part of an object, [lo, hi), read once.
type span struct {
	key     string
	lo, hi  int64
	done    chan struct{} // closed when the read ended
	data    []byte        // written by the reading goroutine before done closes; never changed after
	err     error
	pins    int   // readers using data
	cached  bool  // findable in the cache (false once evicted or failed)
	charged int64 // bytes counted against the bound
	used    time.Time
	elem    *list.Element // in lru while cached
}

// spanRead reads [lo, hi) of object key (lo 0 and hi its size: the whole
// object), counting it as kind.
type spanRead func(ctx context.Context, key string, lo, hi, size int64, kind string) ([]byte, error)

type spanCache struct {
	mu        sync.Mutex
	max       int64 // bound on the bytes held
	maxSpan   int64 // bound on one span
	used      int64 // bytes held: spans cached, and evicted ones still pinned
	spans     map[string]*span
	lru       *list.List // cached spans, most recently used in front
	wants     map[string]*wanted
	lastSweep time.Time
	freed     chan struct{} // closed (and replaced) when bytes are given back
	read      spanRead
	reads     sync.WaitGroup // span reads under way

	hits, refused, evictions func()
}

func newSpanCache(maxBytes, maxSpan int64, read spanRead) *spanCache {
	nop := func() {}
	return &spanCache{max: maxBytes, maxSpan: maxSpan, spans: map[string]*span{}, lru: list.New(),
		wants: map[string]*wanted{}, freed: make(chan struct{}), read: read, hits: nop, refused: nop, evictions: nop}
}

// want records that partition k looked up refs: of each object they name,
// it wants its rows' bytes there.
func (c *spanCache) want(k PartitionKey, refs []metadata.BatchRef) {
	now := time.Now()
	per := map[string]wantedSpan{}
	for _, r := range refs {
		end := r.ByteOffset + int64(r.ByteLength)
		w, ok := per[r.SegmentKey]
		if !ok {
			w = wantedSpan{lo: r.ByteOffset, hi: end}
		}
		w.lo, w.hi, w.bytes = min(w.lo, r.ByteOffset), max(w.hi, end), w.bytes+int64(r.ByteLength)
		per[r.SegmentKey] = w
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweep(now)
	for key, w := range per {
		o := c.wants[key]
		if o == nil {
			if len(c.wants) >= maxWantedObjects {
				continue
			}
			o = &wanted{parts: map[PartitionKey]wantedSpan{}}
			c.wants[key] = o
		}
		if _, ok := o.parts[k]; ok || len(o.parts) < maxWantersPerObject {
			o.parts[k] = w
		}
		o.touched = now
	}
}

// served records that partition k read its chunks of object key.
func (c *spanCache) served(k PartitionKey, key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.wants[key]
	if o == nil {
		return
	}
	delete(o.parts, k)
	if len(o.parts) == 0 {
		delete(c.wants, key)
		if c.spans[key] != nil {
			c.wake()
		}
	}
}

// spanMode says why a span is asked for.
type spanMode int

const (
	// modeHit: only a span held (or being read) that covers the bytes.
	modeHit spanMode = iota
	// modeTail: the whole object, read now if not held.
	modeTail
	// modeCatchUp: a span for a catch-up fetch, if wanted enough.
	modeCatchUp
	// modeAhead: a span read ahead for partition k, if wanted enough
	// (its own span of the object is enough).
	modeAhead
	// modeAheadWhole: modeAhead, but only the whole object, wanted by
	// several partitions: farther ahead, one partition's own span would
	// likely be read again, whole, once the others want the object.
	modeAheadWhole
)

// acquire returns a pinned span of object key (of size bytes) covering
// [lo, hi), the bytes partition k's fetch wants of it: one held or being
// read, or one it starts reading as mode allows. refused reports that
// mode wanted a span read but the bound had no room for it. The caller
// releases a span returned.
func (c *spanCache) acquire(ctx context.Context, k PartitionKey, key string, size, lo, hi int64, mode spanMode) (s *span, refused bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	c.sweep(now)
	old := c.spans[key]
	if old != nil && old.lo <= lo && hi <= old.hi {
		old.pins++
		old.used = now
		c.lru.MoveToFront(old.elem)
		c.hits()
		return old, false
	}
	var slo, shi int64
	kind := kindSpan
	switch mode {
	case modeHit:
		return nil, false
	case modeTail:
		if size <= 0 || size > c.maxSpan {
			return nil, false
		}
		slo, shi, kind = 0, size, kindWhole
	default:
		var ok bool
		ahead := mode == modeAhead || mode == modeAheadWhole
		if slo, shi, ok = c.choose(k, key, size, lo, hi, ahead); !ok {
			return nil, false
		}
		if mode == modeAheadWhole && (slo != 0 || shi != size) {
			return nil, false
		}
		if ahead {
			kind = kindAhead
		}
	}
	if old != nil {
		// Held, but not these bytes: replace it if no one reads it.
		if !isDone(old.done) || old.pins > 0 {
			return nil, false
		}
		c.evict(old)
	}
	n := shi - slo
	if !c.reserve(n) {
		c.refused()
		return nil, true
	}
	s = &span{key: key, lo: slo, hi: shi, done: make(chan struct{}), pins: 1, cached: true, charged: n, used: now}
	s.elem = c.lru.PushFront(s)
	c.spans[key] = s
	c.reads.Add(1)
	// Detached from the caller's cancellation: other fetches share the read.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), spanReadTimeout)
	go c.fill(rctx, cancel, s, size, kind)
	return s, false
}

// seed holds a copy of obj, the whole of object key, as a span, when no
// span of the object is held and the bound has room for it (evicting as
// reserve does). The room is taken before the copy is made, so a full
// cache costs no copy; readers that find the span meanwhile wait for the
// copy as for a read.
func (c *spanCache) seed(key string, obj []byte) bool {
	n := int64(len(obj))
	if n == 0 || n > c.maxSpan {
		return false
	}
	c.mu.Lock()
	now := time.Now()
	c.sweep(now)
	if c.spans[key] != nil || !c.reserve(n) {
		c.mu.Unlock()
		return false
	}
	s := &span{key: key, lo: 0, hi: n, done: make(chan struct{}), cached: true, charged: n, used: now}
	s.elem = c.lru.PushFront(s)
	c.spans[key] = s
	c.mu.Unlock()

	data := bytes.Clone(obj)
	c.mu.Lock()
	s.data = data
	close(s.done)
	c.mu.Unlock()
	return true
}

// acquireWait is acquire in modeCatchUp, waiting up to wait (or until
// ctx ends) for room when there is none: for the readers behind to read
// the spans held and let go of them.
func (c *spanCache) acquireWait(ctx context.Context, k PartitionKey, key string, size, lo, hi int64, wait time.Duration) (*span, bool) {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		c.mu.Lock()
		freed := c.freed
		c.mu.Unlock()
		select {
		case <-freed:
		case <-t.C:
			return nil, true
		case <-ctx.Done():
			return nil, true
		}
		if s, refused := c.acquire(ctx, k, key, size, lo, hi, modeCatchUp); s != nil || !refused {
			return s, refused
		}
	}
}

// give gives n bytes back and wakes those waiting for room.
func (c *spanCache) give(n int64) {
	if n == 0 {
		return
	}
	c.used -= n
	c.wake()
}

// wake wakes those waiting for room: bytes were given back, or a span
// may be evicted now.
func (c *spanCache) wake() {
	close(c.freed)
	c.freed = make(chan struct{})
}

// choose picks the span of object key a catch-up read of [lo, hi) by
// partition k reads, from what the partitions want of it (see the top of
// this file); ok is false when the fetch reads its own ranges.
func (c *spanCache) choose(k PartitionKey, key string, size, lo, hi int64, ahead bool) (slo, shi int64, ok bool) {
	u := wantedSpan{lo: lo, hi: hi}
	parts := 0
	own := false
	if o := c.wants[key]; o != nil {
		for p, w := range o.parts {
			u.lo, u.hi, u.bytes = min(u.lo, w.lo), max(u.hi, w.hi), u.bytes+w.bytes
			parts++
			own = own || p == k
		}
	}
	if !own {
		u.bytes += hi - lo
		parts++
	}
	switch n := u.hi - u.lo; {
	case parts >= 2 && size > 0 && size <= c.maxSpan && 2*u.bytes >= size:
		return 0, size, true
	case n > c.maxSpan || 2*u.bytes < n:
		return 0, 0, false
	case parts >= 2 || ahead || n > hi-lo:
		return u.lo, u.hi, n > 0
	}
	return 0, 0, false
}

// fill reads s, in a goroutine of its own: the only writer of s.data.
func (c *spanCache) fill(ctx context.Context, cancel context.CancelFunc, s *span, size int64, kind string) {
	defer c.reads.Done()
	data, err := c.read(ctx, s.key, s.lo, s.hi, size, kind)
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	s.data, s.err = data, err
	if err != nil {
		// A failed read is not kept: the next fetch reads again.
		s.data = nil
		if s.cached {
			c.uncache(s)
		}
		c.give(s.charged)
		s.charged = 0
	}
	close(s.done)
}

// wait returns the bytes of s and the object offset they start at, once
// read (or when ctx ends first). The caller still releases s.
func (c *spanCache) wait(ctx context.Context, s *span) ([]byte, int64, error) {
	select {
	case <-s.done:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	if s.err != nil {
		return nil, 0, s.err
	}
	return s.data, s.lo, nil
}

// release lets go of a pin of s; the bytes of an evicted span are given
// back with its last pin.
func (c *spanCache) release(s *span) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.pins--
	switch {
	case s.pins == 0 && !s.cached:
		c.give(s.charged)
		s.charged = 0
		s.data = nil
	case s.pins == 0:
		c.wake()
	}
}

// reserve counts n more bytes against the bound, evicting read, unpinned
// spans that no partition wants, least recently used first, to make room.
func (c *spanCache) reserve(n int64) bool {
	if n > c.max {
		return false
	}
	for c.used+n > c.max || len(c.spans) >= maxSpans {
		var victim *span
		for e := c.lru.Back(); e != nil; e = e.Prev() {
			s := e.Value.(*span)
			if s.pins == 0 && isDone(s.done) && c.wants[s.key] == nil {
				victim = s
				break
			}
		}
		if victim == nil {
			return false
		}
		c.evict(victim)
	}
	c.used += n
	return true
}

// evict drops s from the cache; its bytes are given back now, or with
// its last pin.
func (c *spanCache) evict(s *span) {
	c.uncache(s)
	c.evictions()
	if s.pins == 0 {
		c.give(s.charged)
		s.charged = 0
		s.data = nil
	}
}

func (c *spanCache) uncache(s *span) {
	if c.spans[s.key] == s {
		delete(c.spans, s.key)
	}
	c.lru.Remove(s.elem)
	s.cached = false
}

// sweep forgets wants and spans untouched for spanTTL, at most once a
// second.
func (c *spanCache) sweep(now time.Time) {
	if now.Sub(c.lastSweep) < time.Second {
		return
	}
	c.lastSweep = now
	for key, o := range c.wants {
		if now.Sub(o.touched) > spanTTL {
			delete(c.wants, key)
		}
	}
	for e := c.lru.Back(); e != nil; {
		s := e.Value.(*span)
		e = e.Prev()
		if now.Sub(s.used) > spanTTL && s.pins == 0 && isDone(s.done) {
			c.evict(s)
		}
	}
}

// bytes is what the spans hold.
func (c *spanCache) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

// has reports whether a span of object key is held or being read.
func (c *spanCache) has(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.spans[key] != nil
}

func isDone(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// pinSet is the spans whose bytes one response holds, let go together.
type pinSet struct {
	cache *spanCache
	spans []*span
}

// unpin lets go of them, once.
func (p *pinSet) unpin() {
	for _, s := range p.spans {
		p.cache.release(s)
	}
	p.spans = nil
}

// pinned is the bytes of spans in use by readers.
func (c *spanCache) pinned() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n int64
	for e := c.lru.Front(); e != nil; e = e.Next() {
		if s := e.Value.(*span); s.pins > 0 {
			n += s.charged
		}
	}
	return n
}
