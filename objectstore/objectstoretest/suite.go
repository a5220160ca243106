package objectstoretest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"silt/objectstore"
)

// LargeSize is the size of the large-object subtest's objects.
const LargeSize = 64 << 20

// Run runs the conformance suite. Each subtest runs in parallel on its own
// bucket from newBucket, which must be empty, and safe to call from
// several goroutines.
func Run(t *testing.T, newBucket func(t *testing.T) objectstore.Bucket) {
	t.Helper()
	runParallel(t, newBucket, []subtest[objectstore.Bucket]{
		{"Name", testName},
		{"MissingKey", testMissingKey},
		{"InvalidKey", testInvalidKey},
		{"ZeroByte", testZeroByte},
		{"FullGet", testFullGet},
		{"Range", testRange},
		{"Overwrite", testOverwrite},
		{"UnknownSize", testUnknownSize},
		{"BodyLength", testBodyLength},
		{"ReaderError", testReaderError},
		{"ConditionalPut", testConditionalPut},
		{"Large", testLarge},
		{"ConcurrentPuts", testConcurrentPuts},
		{"List", testList},
		{"ContextCanceled", testContextCanceled},
		{"CancelDuringPut", testCancelDuringPut},
	})
}

// subtest is a named test of an A.
type subtest[A any] struct {
	name string
	fn   func(t *testing.T, a A)
}

// runParallel runs each of tests as a parallel subtest of t, on an A from
// newA.
func runParallel[A any](t *testing.T, newA func(t *testing.T) A, tests []subtest[A]) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newA(t))
		})
	}
}

// RunMissingBucket checks that every call on b, a bucket that does not
// exist, fails with ErrBucketNotExist.
func RunMissingBucket(t *testing.T, b objectstore.Bucket) {
	t.Helper()
	ctx := t.Context()
	want := objectstore.ErrBucketNotExist
	t.Run("Put", func(t *testing.T) {
		isErr(t, b.Put(ctx, "k", strings.NewReader("data"), 4, objectstore.PutOptions{}), want)
	})
	t.Run("PutConditional", func(t *testing.T) {
		isErr(t, b.Put(ctx, "k", strings.NewReader("data"), 4, objectstore.PutOptions{IfNotExists: true}), want)
	})
	t.Run("PutMultipart", func(t *testing.T) {
		// Unknown size and larger than any default part: the multipart path.
		isErr(t, b.Put(ctx, "k", NewGenerator(1, 20<<20), -1, objectstore.PutOptions{}), want)
	})
	t.Run("Get", func(t *testing.T) {
		_, err := b.Get(ctx, "k")
		isErr(t, err, want)
	})
	t.Run("GetRange", func(t *testing.T) {
		_, err := b.GetRange(ctx, "k", 0, 1)
		isErr(t, err, want)
	})
	t.Run("Stat", func(t *testing.T) {
		_, err := b.Stat(ctx, "k")
		isErr(t, err, want)
	})
	t.Run("List", func(t *testing.T) {
		calls := 0
		err := b.List(ctx, "", func(objectstore.ObjectInfo) error { calls++; return nil })
		isErr(t, err, want)
		if calls != 0 {
			t.Errorf("List called fn %d times on a missing bucket", calls)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		isErr(t, b.Delete(ctx, "k"), want)
	})
}

// isErr fails the test unless errors.Is(err, want).
func isErr(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

func put(t testing.TB, b objectstore.Bucket, key string, data []byte) {
	t.Helper()
	if err := b.Put(t.Context(), key, bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{}); err != nil {
		t.Fatalf("Put %s: %v", key, err)
	}
}

func readAll(t testing.TB, rc io.ReadCloser) []byte {
	t.Helper()
	data, err := io.ReadAll(rc)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return data
}

func get(t testing.TB, b objectstore.Bucket, key string) []byte {
	t.Helper()
	rc, err := b.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get %s: %v", key, err)
	}
	return readAll(t, rc)
}

func getRange(t testing.TB, b objectstore.Bucket, key string, off, n int64) []byte {
	t.Helper()
	rc, err := b.GetRange(t.Context(), key, off, n)
	if err != nil {
		t.Fatalf("GetRange %s [%d,+%d): %v", key, off, n, err)
	}
	return readAll(t, rc)
}

func wantData(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes %.32q, want %d bytes %.32q", what, len(got), got, len(want), want)
	}
}

func wantMissing(t testing.TB, b objectstore.Bucket, key string) {
	t.Helper()
	_, err := b.Stat(t.Context(), key)
	if !errors.Is(err, objectstore.ErrNotExist) {
		t.Fatalf("Stat %s: got %v, want ErrNotExist", key, err)
	}
}

func pattern(seed, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = byte(seed*31 + i*7 + i/251)
	}
	return out
}

func testName(t *testing.T, b objectstore.Bucket) {
	if b.Name() == "" {
		t.Fatal("Name is empty")
	}
}

func testMissingKey(t *testing.T, b objectstore.Bucket) {
	ctx := t.Context()
	put(t, b, "dir/obj", []byte("x"))
	for _, key := range []string{"missing", "dir/missing", "dir", "dir/obj/below", "other/deep/key"} {
		if _, err := b.Get(ctx, key); !errors.Is(err, objectstore.ErrNotExist) {
			t.Errorf("Get %s: got %v, want ErrNotExist", key, err)
		}
		if _, err := b.GetRange(ctx, key, 0, 1); !errors.Is(err, objectstore.ErrNotExist) {
			t.Errorf("GetRange %s: got %v, want ErrNotExist", key, err)
		}
		if _, err := b.Stat(ctx, key); !errors.Is(err, objectstore.ErrNotExist) {
			t.Errorf("Stat %s: got %v, want ErrNotExist", key, err)
		}
		if err := b.Delete(ctx, key); err != nil {
			t.Errorf("Delete %s: %v", key, err)
		}
	}
	// The object survived the deletes of keys around it.
	wantData(t, "dir/obj", get(t, b, "dir/obj"), []byte("x"))
	// Delete, then it is gone, and a second Delete is fine.
	for range 2 {
		if err := b.Delete(ctx, "dir/obj"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		wantMissing(t, b, "dir/obj")
	}
}

func testInvalidKey(t *testing.T, b objectstore.Bucket) {
	ctx := t.Context()
	bad := []string{"", "/", "/a", "a/", "a//b", ".", "..", "../a", "a/..", "a/../b", "./a", "a/./b", "a\x00b"}
	for _, key := range bad {
		want := objectstore.ErrInvalidKey
		if err := b.Put(ctx, key, strings.NewReader("x"), 1, objectstore.PutOptions{}); !errors.Is(err, want) {
			t.Errorf("Put %q: got %v, want ErrInvalidKey", key, err)
		}
		if err := b.Put(ctx, key, strings.NewReader("x"), 1, objectstore.PutOptions{IfNotExists: true}); !errors.Is(err, want) {
			t.Errorf("conditional Put %q: got %v, want ErrInvalidKey", key, err)
		}
		if _, err := b.Get(ctx, key); !errors.Is(err, want) {
			t.Errorf("Get %q: got %v, want ErrInvalidKey", key, err)
		}
		if _, err := b.GetRange(ctx, key, 0, 1); !errors.Is(err, want) {
			t.Errorf("GetRange %q: got %v, want ErrInvalidKey", key, err)
		}
		if _, err := b.Stat(ctx, key); !errors.Is(err, want) {
			t.Errorf("Stat %q: got %v, want ErrInvalidKey", key, err)
		}
		if err := b.Delete(ctx, key); !errors.Is(err, want) {
			t.Errorf("Delete %q: got %v, want ErrInvalidKey", key, err)
		}
	}
	// Nothing was stored along the way.
	n := 0
	if err := b.List(ctx, "", func(objectstore.ObjectInfo) error { n++; return nil }); err != nil {
		t.Fatalf("List: %v", err)
	}
	if n != 0 {
		t.Fatalf("List found %d objects after invalid puts", n)
	}
	// Unusual but valid keys work.
	for _, key := range []string{"a b", "ünïcode/ключ", "dots.../x", "...", "a.b/.c", "x?y=z&w#frag", "percent%2F"} {
		put(t, b, key, []byte(key))
		wantData(t, key, get(t, b, key), []byte(key))
	}
}

func testZeroByte(t *testing.T, b objectstore.Bucket) {
	ctx := t.Context()
	for _, size := range []int64{0, -1} {
		key := fmt.Sprintf("empty%d", size)
		if err := b.Put(ctx, key, bytes.NewReader(nil), size, objectstore.PutOptions{}); err != nil {
			t.Fatalf("Put %s: %v", key, err)
		}
		info, err := b.Stat(ctx, key)
		if err != nil {
			t.Fatalf("Stat %s: %v", key, err)
		}
		if info.Size != 0 || info.Key != key {
			t.Fatalf("Stat %s: got %+v, want size 0", key, info)
		}
		wantData(t, key, get(t, b, key), nil)
		for _, n := range []int64{1, -1} {
			_, err := b.GetRange(ctx, key, 0, n)
			isErr(t, err, objectstore.ErrInvalidRange)
		}
	}
	var sizes []int64
	if err := b.List(ctx, "empty", func(info objectstore.ObjectInfo) error {
		sizes = append(sizes, info.Size)
		return nil
	}); err != nil {
		t.Fatalf("List: %v", err)
	}
	if !slices.Equal(sizes, []int64{0, 0}) {
		t.Fatalf("List sizes %v, want [0 0]", sizes)
	}
}

func testFullGet(t *testing.T, b objectstore.Bucket) {
	data := pattern(1, 100_003)
	before := time.Now()
	put(t, b, "full/obj", data)
	after := time.Now()
	wantData(t, "Get", get(t, b, "full/obj"), data)
	info, err := b.Stat(t.Context(), "full/obj")
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if info.Key != "full/obj" || info.Size != int64(len(data)) {
		t.Fatalf("Stat: got %+v, want key full/obj size %d", info, len(data))
	}
	// Stores keep whole seconds; allow for that and a little clock skew.
	if lm := info.LastModified; lm.Before(before.Add(-5*time.Second)) || lm.After(after.Add(5*time.Second)) {
		t.Fatalf("Stat: LastModified %v not within [%v, %v]", lm, before, after)
	}
}

func testRange(t *testing.T, b objectstore.Bucket) {
	ctx := t.Context()
	data := pattern(2, 1000)
	put(t, b, "r", data)
	cases := []struct {
		off, n int64
		want   []byte
	}{
		{0, 10, data[:10]},
		{0, 1, data[:1]},
		{990, 10, data[990:]},
		{999, 1, data[999:]},
		{500, 17, data[500:517]},
		{0, 1000, data},
		{0, -1, data},
		{10, -1, data[10:]},
		{995, 10, data[995:]},      // cut at the end
		{0, 1 << 40, data},         // cut at the end
		{999, 1 << 40, data[999:]}, // cut at the end
	}
	for _, c := range cases {
		wantData(t, fmt.Sprintf("GetRange(%d, %d)", c.off, c.n), getRange(t, b, "r", c.off, c.n), c.want)
	}
	for _, c := range []struct{ off, n int64 }{{1000, 1}, {1000, -1}, {1001, 5}, {1 << 40, 1}, {-1, 5}, {0, 0}, {10, 0}} {
		rc, err := b.GetRange(ctx, "r", c.off, c.n)
		if err == nil {
			rc.Close()
		}
		if !errors.Is(err, objectstore.ErrInvalidRange) {
			t.Errorf("GetRange(%d, %d): got %v, want ErrInvalidRange", c.off, c.n, err)
		}
	}
}

func testOverwrite(t *testing.T, b objectstore.Bucket) {
	put(t, b, "ow", pattern(3, 5000))
	second := pattern(4, 10)
	put(t, b, "ow", second)
	wantData(t, "after overwrite", get(t, b, "ow"), second)
	info, err := b.Stat(t.Context(), "ow")
	if err != nil || info.Size != 10 {
		t.Fatalf("Stat after overwrite: %+v, %v; want size 10", info, err)
	}
}

func testUnknownSize(t *testing.T, b objectstore.Bucket) {
	ctx := t.Context()
	data := pattern(5, 12345)
	// A reader that is neither a bytes.Reader nor a Seeker.
	r := io.MultiReader(bytes.NewReader(data[:100]), bytes.NewReader(data[100:]))
	if err := b.Put(ctx, "u", r, -1, objectstore.PutOptions{}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	wantData(t, "Get", get(t, b, "u"), data)
	if err := b.Put(ctx, "u", strings.NewReader("x"), -2, objectstore.PutOptions{}); err == nil {
		t.Fatal("Put with size -2 succeeded")
	}
	wantData(t, "after bad size", get(t, b, "u"), data)
}

func testBodyLength(t *testing.T, b objectstore.Bucket) {
	ctx := t.Context()
	// A body shorter than size fails and stores nothing, for a new key...
	if err := b.Put(ctx, "short", bytes.NewReader(pattern(6, 50)), 100, objectstore.PutOptions{}); err == nil {
		t.Fatal("Put of a short body succeeded")
	}
	wantMissing(t, b, "short")
	// ...and leaves an existing object alone.
	old := pattern(7, 30)
	put(t, b, "short", old)
	if err := b.Put(ctx, "short", bytes.NewReader(pattern(6, 50)), 100, objectstore.PutOptions{}); err == nil {
		t.Fatal("Put of a short body over an object succeeded")
	}
	wantData(t, "after short overwrite", get(t, b, "short"), old)
	// Only size bytes of a longer body are stored.
	long := pattern(8, 20)
	if err := b.Put(ctx, "long", bytes.NewReader(long), 10, objectstore.PutOptions{}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	wantData(t, "long", get(t, b, "long"), long[:10])
}

var errBoom = errors.New("objectstoretest: reader failed")

// failingReader yields n bytes of r, then fails with errBoom.
func failingReader(r io.Reader, n int64) io.Reader {
	return io.MultiReader(io.LimitReader(r, n), iotestErrReader{})
}

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errBoom }

func testReaderError(t *testing.T, b objectstore.Bucket) {
	ctx := t.Context()
	for _, c := range []struct {
		name   string
		n      int64
		size   int64
		failAt int64
	}{
		{"small", 100, 100, 10},
		{"small-unknown", 100, -1, 10},
		{"multipart", 24 << 20, 24 << 20, 12 << 20},
		{"multipart-unknown", 24 << 20, -1, 12 << 20},
	} {
		key := "fail/" + c.name
		err := b.Put(ctx, key, failingReader(NewGenerator(3, c.n), c.failAt), c.size, objectstore.PutOptions{})
		if !errors.Is(err, errBoom) {
			t.Errorf("%s: Put got %v, want the reader's error", c.name, err)
		}
		wantMissing(t, b, key)
	}
}

func testConditionalPut(t *testing.T, b objectstore.Bucket) {
	ctx := t.Context()
	cond := objectstore.PutOptions{IfNotExists: true}
	first, second := pattern(9, 100), pattern(10, 50)
	if err := b.Put(ctx, "c", bytes.NewReader(first), int64(len(first)), cond); err != nil {
		t.Fatalf("first conditional Put: %v", err)
	}
	err := b.Put(ctx, "c", bytes.NewReader(second), int64(len(second)), cond)
	if !b.Capabilities().ConditionalPut {
		// Without support a conditional Put overwrites.
		if err != nil {
			t.Fatalf("second conditional Put without support: %v", err)
		}
		wantData(t, "after overwrite", get(t, b, "c"), second)
		return
	}
	isErr(t, err, objectstore.ErrExists)
	wantData(t, "after refused Put", get(t, b, "c"), first)

	// An unknown-size body takes the same path.
	err = b.Put(ctx, "c", bytes.NewReader(second), -1, cond)
	isErr(t, err, objectstore.ErrExists)
	// After Delete the key is free again.
	if err := b.Delete(ctx, "c"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := b.Put(ctx, "c", bytes.NewReader(second), int64(len(second)), cond); err != nil {
		t.Fatalf("conditional Put after Delete: %v", err)
	}
	wantData(t, "after Delete and Put", get(t, b, "c"), second)

	// Of racing conditional Puts of one key, exactly one wins.
	for round := range 3 {
		key := fmt.Sprintf("race%d", round)
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				data := pattern(100+i, 1000+i)
				<-start
				errs[i] = b.Put(ctx, key, bytes.NewReader(data), int64(len(data)), cond)
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatalf("%s: Puts %d and %d both won", key, winner, i)
				}
				winner = i
			case !errors.Is(err, objectstore.ErrExists):
				t.Fatalf("%s: Put %d: got %v, want nil or ErrExists", key, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("%s: no conditional Put won", key)
		}
		wantData(t, key, get(t, b, key), pattern(100+winner, 1000+winner))
	}
}

func testLarge(t *testing.T, b objectstore.Bucket) {
	if testing.Short() {
		t.Skip("large object test skipped under -short")
	}
	ctx := t.Context()
	for _, c := range []struct {
		key  string
		size int64 // as given to Put
		n    int64 // bytes in the body
	}{
		// Not a multiple of any part size.
		{"large/known", LargeSize + 12345, LargeSize + 12345},
		// Unknown size, a multiple of common part sizes: the body ends
		// exactly on a part boundary.
		{"large/unknown", -1, LargeSize},
	} {
		seed := uint64(c.n)
		h := sha256.New()
		src := io.TeeReader(NewGenerator(seed, c.n), h)
		if err := b.Put(ctx, c.key, src, c.size, objectstore.PutOptions{}); err != nil {
			t.Fatalf("Put %s: %v", c.key, err)
		}
		sent := h.Sum(nil)
		info, err := b.Stat(ctx, c.key)
		if err != nil || info.Size != c.n {
			t.Fatalf("Stat %s: %+v, %v; want size %d", c.key, info, err, c.n)
		}
		rc, err := b.Get(ctx, c.key)
		if err != nil {
			t.Fatalf("Get %s: %v", c.key, err)
		}
		h.Reset()
		got, err := io.Copy(h, rc)
		rc.Close()
		if err != nil {
			t.Fatalf("read %s: %v", c.key, err)
		}
		if got != c.n || !bytes.Equal(h.Sum(nil), sent) {
			t.Fatalf("%s: read back %d bytes with a different hash (want %d bytes)", c.key, got, c.n)
		}
		// Ranges across part boundaries of common part sizes.
		for _, off := range []int64{5<<20 - 3, 8<<20 - 3, 16<<20 - 3, c.n - 100} {
			want := make([]byte, 200)
			wn, _ := io.ReadFull(NewGenerator(seed, c.n).At(off), want)
			wantData(t, fmt.Sprintf("%s range at %d", c.key, off), getRange(t, b, c.key, off, 200), want[:wn])
		}
	}
}

func testConcurrentPuts(t *testing.T, b objectstore.Bucket) {
	const writers, perWriter = 8, 8
	var wg sync.WaitGroup
	errs := make(chan error, writers*perWriter)
	for w := range writers {
		wg.Go(func() {
			for k := range perWriter {
				key := fmt.Sprintf("cp/w%d/k%d", w, k)
				data := pattern(w*100+k, 100+w*10+k)
				if err := b.Put(t.Context(), key, bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{}); err != nil {
					errs <- fmt.Errorf("Put %s: %w", key, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for w := range writers {
		for k := range perWriter {
			key := fmt.Sprintf("cp/w%d/k%d", w, k)
			wantData(t, key, get(t, b, key), pattern(w*100+k, 100+w*10+k))
		}
	}
}

func testList(t *testing.T, b objectstore.Bucket) {
	ctx := t.Context()
	const n = 1100 // more than one 1000-key page
	sizes := map[string]int64{}
	for i := range n {
		sizes[fmt.Sprintf("list/%d", i)] = int64(i % 7)
	}
	sizes["list/sub/deep/x"] = 3
	// Siblings that a prefix filter must exclude. (Not "list" itself: a
	// file store cannot hold both "list" and "list/0".)
	for _, k := range []string{"lis", "list0", "lisa/x", "list-x/y", "lisu", "a", "z/list/1"} {
		sizes[k] = 2
	}
	keys := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var putErr error
	for range 16 {
		wg.Go(func() {
			for k := range keys {
				if err := b.Put(ctx, k, bytes.NewReader(pattern(len(k), int(sizes[k]))), sizes[k], objectstore.PutOptions{}); err != nil {
					mu.Lock()
					putErr = errors.Join(putErr, fmt.Errorf("Put %s: %w", k, err))
					mu.Unlock()
				}
			}
		})
	}
	for k := range sizes {
		keys <- k
	}
	close(keys)
	wg.Wait()
	if putErr != nil {
		t.Fatal(putErr)
	}

	list := func(prefix string) []objectstore.ObjectInfo {
		t.Helper()
		var out []objectstore.ObjectInfo
		if err := b.List(ctx, prefix, func(info objectstore.ObjectInfo) error {
			out = append(out, info)
			return nil
		}); err != nil {
			t.Fatalf("List %q: %v", prefix, err)
		}
		return out
	}
	check := func(prefix string) {
		t.Helper()
		var want []string
		for k := range sizes {
			if strings.HasPrefix(k, prefix) {
				want = append(want, k)
			}
		}
		slices.Sort(want)
		got := list(prefix)
		gotKeys := make([]string, len(got))
		for i, info := range got {
			gotKeys[i] = info.Key
			if info.Size != sizes[info.Key] {
				t.Errorf("List %q: %s has size %d, want %d", prefix, info.Key, info.Size, sizes[info.Key])
			}
			if info.LastModified.IsZero() {
				t.Errorf("List %q: %s has no LastModified", prefix, info.Key)
			}
		}
		if !slices.Equal(gotKeys, want) {
			t.Fatalf("List %q: got %d keys, want %d (sorted); first difference at %d",
				prefix, len(gotKeys), len(want), firstDiff(gotKeys, want))
		}
	}
	check("list/")
	check("list/1")
	check("list/10")
	check("list")
	check("lis")
	check("")
	check("list/sub/")
	check("nothing-here")
	if got := len(list("list/")); got != n+1 {
		t.Fatalf("List list/: %d keys, want %d", got, n+1)
	}

	// An error from fn stops the walk and is returned.
	errStop := errors.New("stop")
	calls := 0
	err := b.List(ctx, "list/", func(objectstore.ObjectInfo) error {
		calls++
		if calls == 3 {
			return errStop
		}
		return nil
	})
	isErr(t, err, errStop)
	if calls != 3 {
		t.Fatalf("List called fn %d times after it returned an error at 3", calls)
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func testContextCanceled(t *testing.T, b objectstore.Bucket) {
	put(t, b, "ctx/obj", []byte("data"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	want := context.Canceled
	if err := b.Put(ctx, "ctx/new", strings.NewReader("data"), 4, objectstore.PutOptions{}); !errors.Is(err, want) {
		t.Errorf("Put: got %v, want context.Canceled", err)
	}
	if err := b.Put(ctx, "ctx/new", strings.NewReader("data"), 4, objectstore.PutOptions{IfNotExists: true}); !errors.Is(err, want) {
		t.Errorf("conditional Put: got %v, want context.Canceled", err)
	}
	if _, err := b.Get(ctx, "ctx/obj"); !errors.Is(err, want) {
		t.Errorf("Get: got %v, want context.Canceled", err)
	}
	if _, err := b.GetRange(ctx, "ctx/obj", 0, 2); !errors.Is(err, want) {
		t.Errorf("GetRange: got %v, want context.Canceled", err)
	}
	if _, err := b.Stat(ctx, "ctx/obj"); !errors.Is(err, want) {
		t.Errorf("Stat: got %v, want context.Canceled", err)
	}
	calls := 0
	if err := b.List(ctx, "", func(objectstore.ObjectInfo) error { calls++; return nil }); !errors.Is(err, want) {
		t.Errorf("List: got %v, want context.Canceled", err)
	}
	if calls != 0 {
		t.Errorf("List called fn %d times with a cancelled ctx", calls)
	}
	if err := b.Delete(ctx, "ctx/obj"); !errors.Is(err, want) {
		t.Errorf("Delete: got %v, want context.Canceled", err)
	}
	// The failed calls had no effect.
	wantMissing(t, b, "ctx/new")
	wantData(t, "ctx/obj", get(t, b, "ctx/obj"), []byte("data"))

	// A body opened with a ctx that is then cancelled stops reading.
	big := pattern(11, 256<<10)
	put(t, b, "ctx/big", big)
	ctx, cancel = context.WithCancel(t.Context())
	rc, err := b.Get(ctx, "ctx/big")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	defer rc.Close()
	cancel()
	if _, err := io.ReadAll(rc); err == nil {
		t.Errorf("reading a body after its ctx was cancelled succeeded")
	}
}

// CancelAfter returns a reader of r that calls cancel once n bytes have
// been read from it and keeps yielding data, so that only the ctx handling
// of what reads it can stop it.
func CancelAfter(r io.Reader, n int64, cancel context.CancelFunc) io.Reader {
	return &cancelingReader{r: r, n: n, cancel: cancel}
}

type cancelingReader struct {
	r      io.Reader
	n      int64
	cancel context.CancelFunc
}

func (c *cancelingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n -= int64(k)
	if c.n <= 0 {
		c.cancel()
	}
	return k, err
}

func testCancelDuringPut(t *testing.T, b objectstore.Bucket) {
	old := []byte("old")
	put(t, b, "cancel/existing", old)
	for _, c := range []struct {
		key  string
		size int64
	}{
		{"cancel/new", 24 << 20},
		{"cancel/unknown", -1},
		{"cancel/existing", 24 << 20},
	} {
		ctx, cancel := context.WithCancel(t.Context())
		r := CancelAfter(NewGenerator(4, 24<<20), 12<<20, cancel)
		err := b.Put(ctx, c.key, r, c.size, objectstore.PutOptions{})
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Put %s: got %v, want context.Canceled", c.key, err)
		}
	}
	wantMissing(t, b, "cancel/new")
	wantMissing(t, b, "cancel/unknown")
	wantData(t, "cancel/existing", get(t, b, "cancel/existing"), old)
	var keys []string
	if err := b.List(t.Context(), "", func(info objectstore.ObjectInfo) error {
		keys = append(keys, info.Key)
		return nil
	}); err != nil {
		t.Fatalf("List: %v", err)
	}
	if !slices.Equal(keys, []string{"cancel/existing"}) {
		t.Fatalf("List after cancelled Puts: %q, want only cancel/existing", keys)
	}
}
