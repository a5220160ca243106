package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"

	"silt/objectstore/objectstoretest"
)

// fake is an in-memory Multipart that checks the Uploader's memory bound:
// bytes taken from the body but not yet uploaded never exceed
// concurrency*partSize, and no more than concurrency parts are in flight.
type fake struct {
	t           *testing.T
	partSize    int
	concurrency int

	mu        sync.Mutex
	single    []byte
	singles   int
	created   int
	parts     map[int][]byte
	inFlight  int
	read      int64 // bytes the body has handed out
	uploaded  int64 // bytes whose UploadPart returned
	completed []byte
	aborted   int
	abortCtx  error
	failPart  int   // UploadPart of this number fails
	failErr   error // with this error
	hold      chan struct{}
}

func newFake(t *testing.T, partSize, concurrency int) *fake {
	return &fake{t: t, partSize: partSize, concurrency: concurrency, parts: map[int][]byte{}}
}

// body wraps r to account for bytes read and check the bound.
func (f *fake) body(r io.Reader) io.Reader { return &accounted{f: f, r: r} }

type accounted struct {
	f *fake
	r io.Reader
}

func (a *accounted) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	a.f.mu.Lock()
	a.f.read += int64(n)
	if held := a.f.read - a.f.uploaded; held > int64(a.f.concurrency*a.f.partSize) {
		a.f.t.Errorf("holding %d bytes, more than %d parts of %d", held, a.f.concurrency, a.f.partSize)
	}
	a.f.mu.Unlock()
	return n, err
}

func (f *fake) PutSingle(_ context.Context, body []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.single = bytes.Clone(body)
	f.singles++
	return nil
}

func (f *fake) Create(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created++
	return "id", nil
}

func (f *fake) UploadPart(ctx context.Context, id string, n int, body []byte) (int, error) {
	f.mu.Lock()
	f.inFlight++
	if f.inFlight > f.concurrency {
		f.t.Errorf("%d parts in flight, more than %d", f.inFlight, f.concurrency)
	}
	f.mu.Unlock()
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inFlight--
	if n == f.failPart {
		return 0, f.failErr
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if _, dup := f.parts[n]; dup {
		f.t.Errorf("part %d uploaded twice", n)
	}
	f.parts[n] = bytes.Clone(body)
	f.uploaded += int64(len(body))
	return n, nil
}

func (f *fake) Complete(_ context.Context, id string, parts []int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []byte
	for i, p := range parts {
		if p != i+1 {
			return fmt.Errorf("part %d listed as %d", i+1, p)
		}
		body := f.parts[p]
		if i < len(parts)-1 && len(body) != f.partSize {
			return fmt.Errorf("part %d has %d bytes, want %d", p, len(body), f.partSize)
		}
		if len(body) == 0 {
			return fmt.Errorf("part %d is empty", p)
		}
		out = append(out, body...)
	}
	f.completed = out
	return nil
}

func (f *fake) Abort(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.aborted++
	f.abortCtx = ctx.Err()
	return nil
}

// testPartSize keeps the tests quick; only NewUploader enforces the S3
// minimum.
const testPartSize = 64 << 10

func newUploader(concurrency int) *Uploader {
	return &Uploader{partSize: testPartSize, concurrency: concurrency}
}

func data(n int) []byte {
	b, err := io.ReadAll(objectstoretest.NewGenerator(uint64(n), int64(n)))
	if err != nil {
		panic(err)
	}
	return b
}

func TestUploadPaths(t *testing.T) {
	t.Parallel()
	const ps = testPartSize
	for _, c := range []struct {
		n     int
		multi bool
	}{
		{0, false}, {1, false}, {ps - 1, false}, {ps, false},
		{ps + 1, true}, {2 * ps, true}, {3*ps + 5, true}, {7 * ps, true},
	} {
		for _, known := range []bool{true, false} {
			t.Run(fmt.Sprintf("%d-known=%v", c.n, known), func(t *testing.T) {
				t.Parallel()
				u := newUploader(2)
				f := newFake(t, ps, 2)
				want := data(c.n)
				size := int64(c.n)
				if !known {
					size = -1
				}
				if err := Upload(t.Context(), u, f, f.body(bytes.NewReader(want)), size); err != nil {
					t.Fatalf("Upload: %v", err)
				}
				got := f.single
				if c.multi {
					got = f.completed
				}
				if f.singles+f.created != 1 || (f.created == 1) != c.multi {
					t.Fatalf("singles %d, multipart %d; want multipart=%v", f.singles, f.created, c.multi)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("stored %d bytes, not the %d sent", len(got), len(want))
				}
				if f.aborted != 0 {
					t.Fatal("aborted a good upload")
				}
			})
		}
	}
}

func TestUploadBodyLength(t *testing.T) {
	t.Parallel()
	const ps = testPartSize
	u := newUploader(2)
	for _, n := range []int{10, 3 * ps} {
		// Short body: fails, nothing stored, multipart aborted.
		f := newFake(t, ps, 2)
		err := Upload(t.Context(), u, f, bytes.NewReader(data(n)), int64(n)+1)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("short body of %d: %v", n, err)
		}
		if f.singles != 0 || f.completed != nil || f.aborted != f.created {
			t.Fatalf("short body of %d: singles %d completed %v aborted %d of %d", n, f.singles, f.completed != nil, f.aborted, f.created)
		}
		// Long body: only size bytes are stored.
		f = newFake(t, ps, 2)
		long := data(n + 100)
		if err := Upload(t.Context(), u, f, bytes.NewReader(long), int64(n)); err != nil {
			t.Fatal(err)
		}
		got := f.single
		if f.created > 0 {
			got = f.completed
		}
		if !bytes.Equal(got, long[:n]) {
			t.Fatalf("long body: stored %d bytes, want %d", len(got), n)
		}
	}
	if err := Upload(t.Context(), u, newFake(t, ps, 2), bytes.NewReader(nil), -2); err == nil {
		t.Fatal("size -2 accepted")
	}
}

func TestUploadPartFailureAborts(t *testing.T) {
	t.Parallel()
	const ps = testPartSize
	u := newUploader(3)
	f := newFake(t, ps, 3)
	errPart := errors.New("part failed")
	f.failPart, f.failErr = 2, errPart
	err := Upload(t.Context(), u, f, f.body(bytes.NewReader(data(10*ps))), -1)
	if !errors.Is(err, errPart) {
		t.Fatalf("Upload: %v, want the part's error", err)
	}
	if f.completed != nil || f.aborted != 1 {
		t.Fatalf("completed %v, aborted %d; want an abort and no completion", f.completed != nil, f.aborted)
	}
}

func TestUploadCancelAborts(t *testing.T) {
	t.Parallel()
	const ps = testPartSize
	u := newUploader(3)
	f := newFake(t, ps, 3)
	f.hold = make(chan struct{}) // parts wait until cancelled
	ctx, cancel := context.WithCancel(t.Context())
	// Cancelled while reading the third part, with two parts in flight.
	r := objectstoretest.CancelAfter(f.body(bytes.NewReader(data(8*ps))), 2*ps+1, cancel)
	err := Upload(ctx, u, f, r, 8*ps)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Upload: %v, want context.Canceled", err)
	}
	if f.aborted != 1 || f.abortCtx != nil || f.completed != nil {
		t.Fatalf("aborted %d (ctx err %v), completed %v; want one abort with a live ctx", f.aborted, f.abortCtx, f.completed != nil)
	}
}

func TestPartSizeFor(t *testing.T) {
	t.Parallel()
	u, _ := NewUploader(8<<20, 1)
	for _, c := range []struct {
		size int64
		want int
	}{
		{-1, 8 << 20},
		{0, 8 << 20},
		{8 << 20 * MaxParts, 8 << 20},
		{8<<20*MaxParts + 1, 9 << 20},
		{1 << 40, 105 << 20},
	} {
		got := u.partSizeFor(c.size)
		if got != c.want {
			t.Errorf("partSizeFor(%d) = %d, want %d", c.size, got, c.want)
		}
		if c.size > 0 && int64(got)*MaxParts < c.size {
			t.Errorf("partSizeFor(%d) = %d: too small for %d parts", c.size, got, MaxParts)
		}
	}
	if _, err := NewUploader(MinPartSize-1, 1); err == nil {
		t.Error("NewUploader accepted a part below 5 MiB")
	}
	if _, err := NewUploader(MinPartSize, 0); err == nil {
		t.Error("NewUploader accepted concurrency 0")
	}
}

func TestCheckRangeAndPrefix(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		off, n int64
		ok     bool
	}{{0, 1, true}, {5, -1, true}, {0, 0, false}, {-1, 1, false}} {
		if err := CheckRange(c.off, c.n); (err == nil) != c.ok {
			t.Errorf("CheckRange(%d, %d) = %v", c.off, c.n, err)
		}
	}
	for in, want := range map[string]string{"": "", "/": "", "a": "a/", "/a/b/": "a/b/", "a/b": "a/b/"} {
		if got, err := CleanPrefix(in); err != nil || got != want {
			t.Errorf("CleanPrefix(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := CleanPrefix("a/../b"); err == nil {
		t.Error("CleanPrefix accepted ..")
	}
}
