package fetch

import (
	"context"
	"errors"
	"sync"
	"time"

	"silt/metadata"
)

// A flush segment holds a chunk of every partition written during its
// linger, so readers catching up on several partitions at once want
// slivers of the same objects. Read range by range, each object is read
// once per partition, in small reads that cost an object store far more
// per byte than large ones (MinIO: about three times the CPU for 1 MB
// ranges as for 9 MiB objects). The sharer reads the part of such an
// object that several partitions want once, and serves every one of them
// from that one read.
//
// It learns what is wanted from the index lookups: a reader looks up twice
// the bytes it reads, and each object its rows name is marked as wanted by
// its partition (the bytes of its rows there, and where they lie) until
// the partition has read its chunks of it. When at least two partitions
// want an object, and the bytes they want are at least half of the span
// from the first wanted byte to the last, that span is read once; it is
// kept (its bytes held in the in-flight budget) until every partition that
// wanted it has read it, or for shareTTL. An object is shared once: a
// reader that comes after the span was let go, or whose chunks lie outside
// it, reads its own ranges. Spans held take at most half of the in-flight
// bound.

// shareTTL bounds how long an object is wanted, and kept, without a
// lookup or a read touching it.
const shareTTL = 10 * time.Second

// maxSharedObjects bounds the objects tracked.
const maxSharedObjects = 4096

// errNotShared: the caller's bytes are not (or no longer) in a shared
// read; it reads its own ranges.
var errNotShared = errors.New("fetch: object not shared")

// wantedSpan is what one partition wants of an object.
type wantedSpan struct {
	lo, hi int64 // from its first wanted byte to past its last
	bytes  int64
}

// sharedObject is one object wanted by catch-up readers.
type sharedObject struct {
	want    map[PartitionKey]wantedSpan // partitions that looked it up and have not read it yet
	touched time.Time
	claimed bool          // its span is read once: never again after
	lo, hi  int64         // the span claimed
	started bool          // its read began
	done    chan struct{} // closed when the read ended
	data    []byte        // the span, from the read's end until released
	err     error
	held    int64 // of the in-flight budget, for data
}

type sharer struct {
	mu        sync.Mutex
	objects   map[string]*sharedObject
	budget    *budget
	maxSize   int64
	lastSweep time.Time
	bytes     int64 // held by spans claimed (a gauge)
}

func newSharer(b *budget, maxSize int64) *sharer {
	return &sharer{objects: map[string]*sharedObject{}, budget: b, maxSize: maxSize}
}

// want records that partition k looked up refs: of each object they name
// (up to maxSize), it wants its rows' bytes there.
func (s *sharer) want(k PartitionKey, refs []metadata.BatchRef) {
	now := time.Now()
	per := map[string]wantedSpan{}
	for _, r := range refs {
		if r.SegmentSize > s.maxSize {
			continue
		}
		end := r.ByteOffset + int64(r.ByteLength)
		w, ok := per[r.SegmentKey]
		if !ok {
			w = wantedSpan{lo: r.ByteOffset, hi: end}
		}
		w.lo, w.hi, w.bytes = min(w.lo, r.ByteOffset), max(w.hi, end), w.bytes+int64(r.ByteLength)
		per[r.SegmentKey] = w
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(now)
	for key, w := range per {
		o := s.objects[key]
		if o == nil {
			if len(s.objects) >= maxSharedObjects {
				continue
			}
			o = &sharedObject{want: map[PartitionKey]wantedSpan{}}
			s.objects[key] = o
		}
		o.want[k] = w
		o.touched = now
	}
}

// claim reports whether the bytes [lo, hi) of object key are to be read
// from a shared read: one was claimed that covers them and is not yet let
// go, or this call claims one because the object is wanted enough (and
// the budget has room for the span).
func (s *sharer) claim(key string, lo, hi int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.objects[key]
	switch {
	case o == nil:
		return false
	case o.claimed:
		return lo >= o.lo && hi <= o.hi && o.err == nil && (o.data != nil || !isDone(o.done))
	case len(o.want) < 2:
		return false
	}
	span := wantedSpan{lo: lo, hi: hi}
	for _, w := range o.want {
		span.lo, span.hi, span.bytes = min(span.lo, w.lo), max(span.hi, w.hi), span.bytes+w.bytes
	}
	n := span.hi - span.lo
	switch {
	case 2*span.bytes < n:
		return false
	case s.bytes+n > s.budget.max/2 || !s.budget.take(n):
		// Half the in-flight bound at most: the rest is the responses'.
		return false
	}
	o.claimed, o.lo, o.hi, o.held, o.done = true, span.lo, span.hi, n, make(chan struct{})
	s.bytes += n
	return true
}

func isDone(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// get returns the claimed span of object key and the object offset it
// starts at, reading it with read if this caller is the first; the others
// wait for that read (or their ctx). It fails with errNotShared when the
// span was let go meanwhile.
func (s *sharer) get(ctx context.Context, key string, read func(ctx context.Context, lo, hi int64) ([]byte, error)) ([]byte, int64, error) {
	s.mu.Lock()
	o := s.objects[key]
	if o == nil || !o.claimed {
		s.mu.Unlock()
		return nil, 0, errNotShared
	}
	first := !o.started
	o.started = true
	done, lo, hi := o.done, o.lo, o.hi
	s.mu.Unlock()
	if first {
		// Detached from this caller's cancellation: others share the read.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		data, err := read(rctx, lo, hi)
		cancel()
		s.mu.Lock()
		o.data, o.err = data, err
		if err != nil {
			s.releaseLocked(o)
		}
		close(done)
		s.mu.Unlock()
	}
	select {
	case <-done:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case o.err != nil:
		return nil, 0, o.err
	case o.data == nil:
		return nil, 0, errNotShared
	}
	return o.data, lo, nil
}

// served records that partition k read its chunks of object key; once no
// partition wants it any more, the object is let go.
func (s *sharer) served(k PartitionKey, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.objects[key]
	if o == nil {
		return
	}
	delete(o.want, k)
	o.touched = time.Now()
	if len(o.want) == 0 && (!o.started || isDone(o.done)) {
		s.releaseLocked(o)
		delete(s.objects, key)
	}
}

// releaseLocked lets go of o's data and gives its bytes back.
func (s *sharer) releaseLocked(o *sharedObject) {
	o.data = nil
	if o.held > 0 {
		s.budget.give(o.held)
		s.bytes -= o.held
		o.held = 0
	}
}

// sweep forgets objects untouched for shareTTL, at most once a second. A
// read under way ends within its timeout; a claim whose read never began
// (the fetch that made it ended first) is let go like the rest.
func (s *sharer) sweep(now time.Time) {
	if now.Sub(s.lastSweep) < time.Second {
		return
	}
	s.lastSweep = now
	for key, o := range s.objects {
		if now.Sub(o.touched) > shareTTL && (!o.started || isDone(o.done)) {
			s.releaseLocked(o)
			delete(s.objects, key)
		}
	}
}

// heldBytes is what the spans claimed hold.
func (s *sharer) heldBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}
