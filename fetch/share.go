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
// per byte than whole objects (MinIO: about three times the CPU for 1 MB
// ranges as for 9 MiB objects). The sharer reads such an object once,
// whole, and serves every partition that wants it from that one read.
//
// It learns what is wanted from the index lookups: a reader that is behind
// looks up twice the bytes it reads, and every object its rows name is
// marked as wanted by its partition, for that many bytes, until the
// partition has read its chunks of it. An object is read whole when at
// least two partitions want it and they want at least half of its bytes;
// then it is kept (its bytes held in the in-flight budget) until every
// partition that wanted it has read it, or for shareTTL. An object is read
// whole at most once: a reader that comes later than that reads ranges.

// shareTTL bounds how long an object is wanted, and kept, without a
// lookup or a read touching it.
const shareTTL = 10 * time.Second

// maxSharedObjects bounds the objects tracked.
const maxSharedObjects = 4096

// errNotShared: the object is not (or no longer) read whole for sharing;
// the caller reads its ranges.
var errNotShared = errors.New("fetch: object not shared")

// sharedObject is one object wanted by catch-up readers.
type sharedObject struct {
	size    int64
	want    map[PartitionKey]int64 // bytes each partition looked up and has not read yet
	wanted  int64                  // their sum
	touched time.Time
	claimed bool          // to be read whole, once: never again after
	started bool          // its read began
	done    chan struct{} // closed when the read ended
	data    []byte        // the object, from the read's end until released
	err     error
	held    int64 // of the in-flight budget, for data
}

type sharer struct {
	mu        sync.Mutex
	objects   map[string]*sharedObject
	budget    *budget
	maxSize   int64
	lastSweep time.Time
	bytes     int64 // held by objects claimed (a gauge)
}

func newSharer(b *budget, maxSize int64) *sharer {
	return &sharer{objects: map[string]*sharedObject{}, budget: b, maxSize: maxSize}
}

// want records that partition k looked up refs: it wants, of each object
// they name, the bytes of its rows there.
func (s *sharer) want(k PartitionKey, refs []metadata.BatchRef) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(now)
	type demand struct{ size, bytes int64 }
	per := map[string]demand{}
	for _, r := range refs {
		if r.SegmentSize <= s.maxSize {
			d := per[r.SegmentKey]
			per[r.SegmentKey] = demand{r.SegmentSize, d.bytes + int64(r.ByteLength)}
		}
	}
	for key, d := range per {
		o := s.objects[key]
		if o == nil {
			if len(s.objects) >= maxSharedObjects {
				continue
			}
			o = &sharedObject{size: d.size, want: map[PartitionKey]int64{}}
			s.objects[key] = o
		}
		o.wanted += d.bytes - o.want[k]
		o.want[k] = d.bytes
		o.touched = now
	}
}

// claim reports whether object key is to be read from a shared whole read:
// one was claimed and its data is not yet let go, or this call claims one
// because the object is wanted enough (and the budget has its bytes).
func (s *sharer) claim(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.objects[key]
	switch {
	case o == nil:
		return false
	case o.claimed:
		return o.err == nil && (o.data != nil || !isDone(o.done))
	case len(o.want) < 2 || 2*o.wanted < o.size || !s.budget.take(o.size):
		return false
	}
	o.claimed, o.held, o.done = true, o.size, make(chan struct{})
	s.bytes += o.size
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

// get returns the claimed object key, reading it with read if this caller
// is the first; the others wait for that read (or their ctx). It fails with
// errNotShared when the object was let go meanwhile.
func (s *sharer) get(ctx context.Context, key string, read func(context.Context) ([]byte, error)) ([]byte, error) {
	s.mu.Lock()
	o := s.objects[key]
	if o == nil || !o.claimed {
		s.mu.Unlock()
		return nil, errNotShared
	}
	first := !o.started
	o.started = true
	done := o.done
	s.mu.Unlock()
	if first {
		// Detached from this caller's cancellation: others share the read.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		data, err := read(rctx)
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
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case o.err != nil:
		return nil, o.err
	case o.data == nil:
		return nil, errNotShared
	}
	return o.data, nil
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
	o.wanted -= o.want[k]
	delete(o.want, k)
	o.touched = time.Now()
	if len(o.want) == 0 && (!o.claimed || isDone(o.done)) {
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

// sweep forgets objects untouched for shareTTL, at most once a second.
func (s *sharer) sweep(now time.Time) {
	if now.Sub(s.lastSweep) < time.Second {
		return
	}
	s.lastSweep = now
	for key, o := range s.objects {
		// A read under way ends within its timeout; a claim whose read
		// never began (its fetch ended first) is let go like the rest.
		if now.Sub(o.touched) > shareTTL && (!o.started || isDone(o.done)) {
			s.releaseLocked(o)
			delete(s.objects, key)
		}
	}
}

// heldBytes is what the objects claimed hold.
func (s *sharer) heldBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}
