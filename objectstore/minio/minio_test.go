package minio_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	miniogo "github.com/minio/minio-go/v7"

	"silt/internal/testenv"
	"silt/objectstore"
	"silt/objectstore/minio"
	"silt/objectstore/objectstoretest"
)

func config(srv testenv.MinIOServer, bucket string) minio.Config {
	cfg := minio.DefaultConfig()
	cfg.Bucket = bucket
	cfg.Endpoint = srv.Host()
	cfg.Secure = strings.HasPrefix(srv.Endpoint, "https://")
	cfg.Region = srv.Region
	cfg.AccessKey, cfg.SecretKey = srv.AccessKey, srv.SecretKey
	return cfg
}

func open(t *testing.T, cfg minio.Config) *minio.Bucket {
	t.Helper()
	b, err := minio.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

func TestConformance(t *testing.T) {
	t.Parallel()
	objectstoretest.Run(t, func(t *testing.T) objectstore.Bucket {
		srv, bucket := testenv.MinIOBucket(t)
		return open(t, config(srv, bucket))
	})
}

func TestConformancePrefix(t *testing.T) {
	t.Parallel()
	objectstoretest.Run(t, func(t *testing.T) objectstore.Bucket {
		srv, bucket := testenv.MinIOBucket(t)
		cfg := config(srv, bucket)
		cfg.Prefix = "some/prefix"
		return open(t, cfg)
	})
}

func TestMissingBucket(t *testing.T) {
	t.Parallel()
	srv := testenv.MinIO(t)
	objectstoretest.RunMissingBucket(t, open(t, config(srv, testenv.RandomName("missing-"))))
}

func TestPrefixIsolation(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv, bucket := testenv.MinIOBucket(t)
	cfgA, cfgB := config(srv, bucket), config(srv, bucket)
	cfgA.Prefix, cfgB.Prefix = "/a/", "a2"
	a, b := open(t, cfgA), open(t, cfgB)
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
	obj, err := srv.Client(t).StatObject(ctx, bucket, "a/k", miniogo.StatObjectOptions{})
	if err != nil || obj.Size != 1 {
		t.Fatalf("raw object a/k: %+v, %v", obj, err)
	}
	if a.Name() != "minio://"+bucket+"/a" {
		t.Fatalf("Name = %q", a.Name())
	}
}

// TestNoLeftoverUploads checks that failed and cancelled multipart Puts
// abort their uploads.
func TestNoLeftoverUploads(t *testing.T) {
	t.Parallel()
	srv, bucket := testenv.MinIOBucket(t)
	cfg := config(srv, bucket)
	b := open(t, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r := &cancelAfter{g: objectstoretest.NewGenerator(1, 40<<20), n: 20 << 20, cancel: cancel}
	if err := b.Put(ctx, "big", r, -1, objectstore.PutOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put: %v, want context.Canceled", err)
	}
	// A conditional multipart Put that loses.
	if err := b.Put(t.Context(), "taken", strings.NewReader("x"), 1, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	err := b.Put(t.Context(), "taken", objectstoretest.NewGenerator(2, 20<<20), 20<<20, objectstore.PutOptions{IfNotExists: true})
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

// cancelAfter reads g and calls cancel once n bytes have been read.
type cancelAfter struct {
	g      io.Reader
	n      int64
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	k, err := c.g.Read(p)
	if c.n -= int64(k); c.n <= 0 {
		c.cancel()
	}
	return k, err
}

func TestConfig(t *testing.T) {
	t.Parallel()
	good := minio.DefaultConfig()
	good.Bucket, good.Endpoint = "b", "127.0.0.1:9000"
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	for name, mod := range map[string]func(*minio.Config){
		"no bucket":       func(c *minio.Config) { c.Bucket = "" },
		"slash in bucket": func(c *minio.Config) { c.Bucket = "a/b" },
		"bad prefix":      func(c *minio.Config) { c.Prefix = "a/../b" },
		"no endpoint":     func(c *minio.Config) { c.Endpoint = "" },
		"endpoint scheme": func(c *minio.Config) { c.Endpoint = "http://127.0.0.1:9000" },
		"endpoint path":   func(c *minio.Config) { c.Endpoint = "127.0.0.1:9000/x" },
		"endpoint port":   func(c *minio.Config) { c.Endpoint = "127.0.0.1:x" },
		"half creds":      func(c *minio.Config) { c.AccessKey = "k" },
		"token only":      func(c *minio.Config) { c.SessionToken = "t" },
		"small parts":     func(c *minio.Config) { c.PartSize = 1 << 20 },
		"no concurrency":  func(c *minio.Config) { c.Concurrency = 0 },
	} {
		cfg := good
		mod(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, cfg)
		}
		if _, err := minio.New(t.Context(), cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

// TestEnvCredentials uses credentials from the environment: the AWS
// variables first, else MinIO's. Not parallel: it sets the environment.
func TestEnvCredentials(t *testing.T) {
	srv, bucket := testenv.MinIOBucket(t)
	cfg := config(srv, bucket)
	cfg.AccessKey, cfg.SecretKey = "", ""
	for _, env := range [][2]string{{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, {"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"}} {
		for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_SESSION_TOKEN", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"} {
			t.Setenv(k, "")
		}
		t.Setenv(env[0], srv.AccessKey)
		t.Setenv(env[1], srv.SecretKey)
		if err := open(t, cfg).Put(t.Context(), "k", strings.NewReader("x"), 1, objectstore.PutOptions{}); err != nil {
			t.Fatalf("Put with %s: %v", env[0], err)
		}
		t.Setenv(env[1], "wrong-secret")
		if err := open(t, cfg).Put(t.Context(), "k", strings.NewReader("x"), 1, objectstore.PutOptions{}); err == nil {
			t.Fatalf("Put with a wrong %s succeeded", env[1])
		}
	}
}

// TestPutPaths checks, by the ETag S3 gives multipart objects ("...-N"),
// that bodies up to a part go in one PutObject and larger ones in parts.
func TestPutPaths(t *testing.T) {
	t.Parallel()
	srv, bucket := testenv.MinIOBucket(t)
	cfg := config(srv, bucket)
	cfg.PartSize = 5 << 20
	b := open(t, cfg)
	raw := srv.Client(t)
	for _, c := range []struct {
		n, size int64
		parts   string // ETag suffix; "" for a single PutObject
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
		if err := b.Put(t.Context(), key, objectstoretest.NewGenerator(1, c.n), c.size, objectstore.PutOptions{}); err != nil {
			t.Fatalf("Put %s: %v", key, err)
		}
		info, err := raw.StatObject(t.Context(), bucket, key, miniogo.StatObjectOptions{})
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
