package objectstoretest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"silt/internal/testenv"
	"silt/objectstore"
)

// RemoteConfig is what RunRemote asks a backend to open a Bucket on.
type RemoteConfig struct {
	// Server is the test MinIO.
	Server testenv.MinIOServer
	// Bucket is a bucket on Server. It may not exist.
	Bucket string
	// Prefix is the key prefix; "" for none.
	Prefix string
	// PartSize is the multipart part size; 0 for the backend's default.
	PartSize int
}

// remote is the backend under test.
type remote struct {
	scheme string
	open   func(t *testing.T, c RemoteConfig) objectstore.Bucket
}

// RunRemote runs the tests every S3-protocol backend passes against the
// test MinIO (see internal/testenv), in parallel subtests, each on fresh
// buckets: the conformance suite with and without a key prefix, a missing
// bucket, prefix isolation, no multipart uploads left behind by failed
// Puts, and single-request versus multipart Puts by size. The backend is
// named scheme (its Bucket.Name starts "scheme://"); config returns its
// Config for a RemoteConfig, and newBucket is its New.
func RunRemote[C any, B objectstore.Bucket](t *testing.T, scheme string, config func(RemoteConfig) C, newBucket func(context.Context, C) (B, error)) {
	t.Helper()
	r := remote{scheme: scheme, open: func(t *testing.T, c RemoteConfig) objectstore.Bucket {
		return MustNew(t, newBucket, config(c))
	}}
	runParallel(t, func(*testing.T) remote { return r }, []subtest[remote]{
		{"Conformance", testRemoteConformance},
		{"ConformancePrefix", testRemoteConformancePrefix},
		{"MissingBucket", testRemoteMissingBucket},
		{"PrefixIsolation", testRemotePrefixIsolation},
		{"NoLeftoverUploads", testRemoteNoLeftoverUploads},
		{"PutPaths", testRemotePutPaths},
	})
}

func testRemoteConformance(t *testing.T, r remote) {
	Run(t, func(t *testing.T) objectstore.Bucket {
		srv, bucket := testenv.MinIOBucket(t)
		return r.open(t, RemoteConfig{Server: srv, Bucket: bucket})
	})
}

func testRemoteConformancePrefix(t *testing.T, r remote) {
	Run(t, func(t *testing.T) objectstore.Bucket {
		srv, bucket := testenv.MinIOBucket(t)
		return r.open(t, RemoteConfig{Server: srv, Bucket: bucket, Prefix: "some/prefix"})
	})
}

func testRemoteMissingBucket(t *testing.T, r remote) {
	srv := testenv.MinIO(t)
	RunMissingBucket(t, r.open(t, RemoteConfig{Server: srv, Bucket: testenv.RandomName("missing-")}))
}

// testRemotePrefixIsolation checks that prefixes "/a/" and "a2" of one
// bucket do not see each other's keys, and where a's key is stored.
func testRemotePrefixIsolation(t *testing.T, r remote) {
	ctx := t.Context()
	srv, bucket := testenv.MinIOBucket(t)
	a := r.open(t, RemoteConfig{Server: srv, Bucket: bucket, Prefix: "/a/"})
	b := r.open(t, RemoteConfig{Server: srv, Bucket: bucket, Prefix: "a2"})
	if err := a.Put(ctx, "k", strings.NewReader("A"), 1, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stat(ctx, "k"); !errors.Is(err, objectstore.ErrNotExist) {
		t.Fatalf("b sees a's key: %v", err)
	}
	n := 0
	if err := b.List(ctx, "", func(objectstore.ObjectInfo) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("b lists %d keys, %v", n, err)
	}
	obj, err := srv.Client(t).StatObject(ctx, bucket, "a/k", minio.StatObjectOptions{})
	if err != nil || obj.Size != 1 {
		t.Fatalf("raw object a/k: %+v, %v", obj, err)
	}
	if a.Name() != r.scheme+"://"+bucket+"/a" {
		t.Fatalf("Name = %q", a.Name())
	}
}

// testRemoteNoLeftoverUploads checks that failed and cancelled multipart
// Puts abort their uploads.
func testRemoteNoLeftoverUploads(t *testing.T, r remote) {
	srv, bucket := testenv.MinIOBucket(t)
	b := r.open(t, RemoteConfig{Server: srv, Bucket: bucket})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	body := CancelAfter(NewGenerator(1, 40<<20), 20<<20, cancel)
	if err := b.Put(ctx, "big", body, -1, objectstore.PutOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put: %v, want context.Canceled", err)
	}
	// A conditional multipart Put that loses.
	if err := b.Put(t.Context(), "taken", strings.NewReader("x"), 1, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	err := b.Put(t.Context(), "taken", NewGenerator(2, 20<<20), 20<<20, objectstore.PutOptions{IfNotExists: true})
	if !errors.Is(err, objectstore.ErrExists) {
		t.Fatalf("conditional multipart Put: %v, want ErrExists", err)
	}
	for u := range srv.Client(t).ListIncompleteUploads(t.Context(), bucket, "", true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		t.Errorf("upload left behind: %s %s", u.Key, u.UploadID)
	}
}

// testRemotePutPaths checks, by the ETag S3 gives multipart objects
// ("...-N"), that bodies up to a part go in one request and larger ones in
// parts.
func testRemotePutPaths(t *testing.T, r remote) {
	srv, bucket := testenv.MinIOBucket(t)
	b := r.open(t, RemoteConfig{Server: srv, Bucket: bucket, PartSize: 5 << 20})
	raw := srv.Client(t)
	for _, c := range []struct {
		n, size int64
		parts   string // ETag suffix; "" for a single request
	}{
		{1 << 20, 1 << 20, ""},
		{5 << 20, 5 << 20, ""},
		{5 << 20, -1, ""},
		{5<<20 + 1, 5<<20 + 1, "-2"},
		{5<<20 + 1, -1, "-2"},
		{11 << 20, 11 << 20, "-3"},
		{10 << 20, -1, "-2"},
	} {
		key := fmt.Sprintf("obj-%d-%d", c.n, c.size)
		if err := b.Put(t.Context(), key, NewGenerator(1, c.n), c.size, objectstore.PutOptions{}); err != nil {
			t.Fatalf("Put %s: %v", key, err)
		}
		info, err := raw.StatObject(t.Context(), bucket, key, minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if info.Size != c.n {
			t.Errorf("%s: size %d", key, info.Size)
		}
		_, suffix, multi := strings.Cut(info.ETag, "-")
		if got := map[bool]string{true: "-" + suffix}[multi]; got != c.parts {
			t.Errorf("%s: ETag %q, want parts suffix %q", key, info.ETag, c.parts)
		}
	}
}
