package objectstoretest

import (
	"context"
	"fmt"
	"io"
	"sync"

	"silt/objectstore"
)

// Op names a Bucket operation for Faulty.
type Op string

// The operations Faulty counts and can fail.
const (
	OpPut      Op = "put"
	OpGet      Op = "get"
	OpGetRange Op = "get_range"
	OpStat     Op = "stat"
	OpList     Op = "list"
	OpDelete   Op = "delete"
)

// fault is a scheduled failure of one operation.
type fault struct {
	err   error
	left  int  // calls still to fail; -1 for every call
	after bool // perform the call, then fail
}

// Faulty wraps a Bucket, counts calls per operation, and fails the calls
// it is told to. A failure either stops the call before it reaches the
// wrapped bucket (FailNext, FailAlways) or lets it through and replaces
// its result with the error (FailNextAfter), which is how a lost
// acknowledgement looks. Faults apply in the order they were added. It is
// safe for concurrent use.
type Faulty struct {
	b objectstore.Bucket

	mu     sync.Mutex
	calls  map[Op]int
	fails  map[Op]int
	faults map[Op][]*fault
}

var _ objectstore.Bucket = (*Faulty)(nil)

// NewFaulty wraps b with no faults.
func NewFaulty(b objectstore.Bucket) *Faulty {
	return &Faulty{b: b, calls: map[Op]int{}, fails: map[Op]int{}, faults: map[Op][]*fault{}}
}

// FailNext makes the next n calls of op fail with err without reaching
// the wrapped bucket.
func (f *Faulty) FailNext(op Op, n int, err error) { f.add(op, &fault{err: err, left: n}) }

// FailAlways makes every call of op fail with err, without reaching the
// wrapped bucket, until Reset.
func (f *Faulty) FailAlways(op Op, err error) { f.add(op, &fault{err: err, left: -1}) }

// FailNextAfter lets the next n calls of op reach the wrapped bucket, then
// returns err instead of their result (closing any body they opened).
func (f *Faulty) FailNextAfter(op Op, n int, err error) {
	f.add(op, &fault{err: err, left: n, after: true})
}

func (f *Faulty) add(op Op, ft *fault) {
	if ft.err == nil {
		panic("objectstoretest: Faulty needs a non-nil error")
	}
	if ft.left == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[op] = append(f.faults[op], ft)
}

// Reset removes every pending fault. Counters are kept.
func (f *Faulty) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.faults)
}

// Calls returns how many calls of op Faulty has seen, failed ones included.
func (f *Faulty) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// Failures returns how many calls of op Faulty has failed.
func (f *Faulty) Failures(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fails[op]
}

// next counts a call of op and takes the fault that applies to it, if any.
func (f *Faulty) next(op Op) *fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	q := f.faults[op]
	if len(q) == 0 {
		return nil
	}
	ft := q[0]
	if ft.left > 0 {
		ft.left--
		if ft.left == 0 {
			f.faults[op] = q[1:]
		}
	}
	f.fails[op]++
	return ft
}

func injected(op Op, key string, err error) error {
	return fmt.Errorf("faulty %s %s: %w", op, key, err)
}

// Put implements objectstore.Bucket.
func (f *Faulty) Put(ctx context.Context, key string, r io.Reader, size int64, opts objectstore.PutOptions) error {
	ft := f.next(OpPut)
	if ft != nil && !ft.after {
		return injected(OpPut, key, ft.err)
	}
	err := f.b.Put(ctx, key, r, size, opts)
	if ft != nil {
		return injected(OpPut, key, ft.err)
	}
	return err
}

// Get implements objectstore.Bucket.
func (f *Faulty) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	ft := f.next(OpGet)
	if ft != nil && !ft.after {
		return nil, injected(OpGet, key, ft.err)
	}
	rc, err := f.b.Get(ctx, key)
	return afterOpen(OpGet, key, ft, rc, err)
}

// GetRange implements objectstore.Bucket.
func (f *Faulty) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	ft := f.next(OpGetRange)
	if ft != nil && !ft.after {
		return nil, injected(OpGetRange, key, ft.err)
	}
	rc, err := f.b.GetRange(ctx, key, offset, length)
	return afterOpen(OpGetRange, key, ft, rc, err)
}

func afterOpen(op Op, key string, ft *fault, rc io.ReadCloser, err error) (io.ReadCloser, error) {
	if ft == nil {
		return rc, err
	}
	if err == nil {
		rc.Close()
	}
	return nil, injected(op, key, ft.err)
}

// Stat implements objectstore.Bucket.
func (f *Faulty) Stat(ctx context.Context, key string) (objectstore.ObjectInfo, error) {
	ft := f.next(OpStat)
	if ft != nil && !ft.after {
		return objectstore.ObjectInfo{}, injected(OpStat, key, ft.err)
	}
	info, err := f.b.Stat(ctx, key)
	if ft != nil {
		return objectstore.ObjectInfo{}, injected(OpStat, key, ft.err)
	}
	return info, err
}

// List implements objectstore.Bucket. A List failed "after" walks the
// whole listing, calling fn, and then returns the error.
func (f *Faulty) List(ctx context.Context, prefix string, fn func(objectstore.ObjectInfo) error) error {
	ft := f.next(OpList)
	if ft != nil && !ft.after {
		return injected(OpList, prefix, ft.err)
	}
	err := f.b.List(ctx, prefix, fn)
	if ft != nil && err == nil {
		return injected(OpList, prefix, ft.err)
	}
	return err
}

// Delete implements objectstore.Bucket.
func (f *Faulty) Delete(ctx context.Context, key string) error {
	ft := f.next(OpDelete)
	if ft != nil && !ft.after {
		return injected(OpDelete, key, ft.err)
	}
	err := f.b.Delete(ctx, key)
	if ft != nil {
		return injected(OpDelete, key, ft.err)
	}
	return err
}

// Capabilities implements objectstore.Bucket.
func (f *Faulty) Capabilities() objectstore.Capabilities { return f.b.Capabilities() }

// Name implements objectstore.Bucket.
func (f *Faulty) Name() string { return "faulty+" + f.b.Name() }
