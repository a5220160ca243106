package objectstoretest_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"silt/objectstore"
	"silt/objectstore/mem"
	"silt/objectstore/objectstoretest"
)

func newMem(t *testing.T) objectstore.Bucket {
	t.Helper()
	b, err := mem.New(t.Context(), mem.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFaultyConformance(t *testing.T) {
	t.Parallel()
	// Without faults, Faulty is transparent.
	objectstoretest.Run(t, func(t *testing.T) objectstore.Bucket {
		return objectstoretest.NewFaulty(newMem(t))
	})
}

var errInjected = errors.New("injected")

func put(f *objectstoretest.Faulty, t *testing.T, key string) error {
	return f.Put(t.Context(), key, strings.NewReader("v"), 1, objectstore.PutOptions{})
}

func TestFaultyFailNext(t *testing.T) {
	t.Parallel()
	inner := newMem(t)
	f := objectstoretest.NewFaulty(inner)
	f.FailNext(objectstoretest.OpPut, 2, errInjected)
	for i, key := range []string{"a", "b", "c"} {
		err := put(f, t, key)
		if want := i < 2; errors.Is(err, errInjected) != want {
			t.Fatalf("Put %d: %v, want injected=%v", i, err, want)
		}
	}
	// The failed Puts never reached the bucket.
	for key, want := range map[string]error{"a": objectstore.ErrNotExist, "b": objectstore.ErrNotExist, "c": nil} {
		if _, err := inner.Stat(t.Context(), key); !errors.Is(err, want) {
			t.Fatalf("Stat %s: %v, want %v", key, err, want)
		}
	}
	if f.Calls(objectstoretest.OpPut) != 3 || f.Failures(objectstoretest.OpPut) != 2 {
		t.Fatalf("calls %d failures %d, want 3 and 2", f.Calls(objectstoretest.OpPut), f.Failures(objectstoretest.OpPut))
	}
	// Other operations are unaffected and counted apart.
	if _, err := f.Stat(t.Context(), "c"); err != nil {
		t.Fatal(err)
	}
	if f.Calls(objectstoretest.OpStat) != 1 || f.Calls(objectstoretest.OpGet) != 0 {
		t.Fatal("wrong per-op counts")
	}
}

func TestFaultyFailAlwaysAndReset(t *testing.T) {
	t.Parallel()
	f := objectstoretest.NewFaulty(newMem(t))
	f.FailAlways(objectstoretest.OpGet, errInjected)
	if err := put(f, t, "k"); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := f.Get(t.Context(), "k"); !errors.Is(err, errInjected) {
			t.Fatalf("Get: %v, want injected", err)
		}
	}
	f.Reset()
	rc, err := f.Get(t.Context(), "k")
	if err != nil {
		t.Fatalf("Get after Reset: %v", err)
	}
	rc.Close()
	if f.Failures(objectstoretest.OpGet) != 5 || f.Calls(objectstoretest.OpGet) != 6 {
		t.Fatal("wrong counts")
	}
}

func TestFaultyFailNextAfter(t *testing.T) {
	t.Parallel()
	inner := newMem(t)
	f := objectstoretest.NewFaulty(inner)
	f.FailNextAfter(objectstoretest.OpPut, 1, errInjected)
	f.FailNextAfter(objectstoretest.OpDelete, 1, errInjected)
	// The Put lands but its caller sees an error: a lost acknowledgement.
	if err := put(f, t, "k"); !errors.Is(err, errInjected) {
		t.Fatalf("Put: %v", err)
	}
	if _, err := inner.Stat(t.Context(), "k"); err != nil {
		t.Fatalf("the Put did not land: %v", err)
	}
	if err := f.Delete(t.Context(), "k"); !errors.Is(err, errInjected) {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := inner.Stat(t.Context(), "k"); !errors.Is(err, objectstore.ErrNotExist) {
		t.Fatalf("the Delete did not land: %v", err)
	}
	// Only the next call was affected.
	if err := put(f, t, "k"); err != nil {
		t.Fatal(err)
	}
}

func TestFaultyConcurrent(t *testing.T) {
	t.Parallel()
	f := objectstoretest.NewFaulty(newMem(t))
	const n, failing = 64, 10
	f.FailNext(objectstoretest.OpPut, failing, errInjected)
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for i := range n {
		wg.Go(func() {
			err := f.Put(t.Context(), "k"+strings.Repeat("x", i), bytes.NewReader(nil), 0, objectstore.PutOptions{})
			if errors.Is(err, errInjected) {
				mu.Lock()
				failed++
				mu.Unlock()
			} else if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if failed != failing || f.Failures(objectstoretest.OpPut) != failing || f.Calls(objectstoretest.OpPut) != n {
		t.Fatalf("failed %d, failures %d, calls %d; want %d, %d, %d", failed, f.Failures(objectstoretest.OpPut), f.Calls(objectstoretest.OpPut), failing, failing, n)
	}
}

func TestGenerator(t *testing.T) {
	t.Parallel()
	const size = 300_001
	all, err := io.ReadAll(objectstoretest.NewGenerator(7, size))
	if err != nil || len(all) != size {
		t.Fatalf("ReadAll: %d bytes, %v", len(all), err)
	}
	// Deterministic, and read sizes do not matter.
	g := objectstoretest.NewGenerator(7, size)
	var again []byte
	buf := make([]byte, 7)
	for {
		n, err := g.Read(buf)
		again = append(again, buf[:n]...)
		if err == io.EOF {
			break
		}
	}
	if !bytes.Equal(all, again) {
		t.Fatal("generator output depends on read sizes")
	}
	// At(off) continues the same stream.
	tail, _ := io.ReadAll(objectstoretest.NewGenerator(7, size).At(123_457))
	if !bytes.Equal(tail, all[123_457:]) {
		t.Fatal("At(off) differs from the stream")
	}
	// Chunks differ from each other (so moved parts are caught), and
	// seeds differ.
	if bytes.Equal(all[:64<<10], all[64<<10:128<<10]) {
		t.Fatal("consecutive chunks are equal")
	}
	other, _ := io.ReadAll(objectstoretest.NewGenerator(8, size))
	if bytes.Equal(all, other) {
		t.Fatal("seeds 7 and 8 give the same data")
	}
}
