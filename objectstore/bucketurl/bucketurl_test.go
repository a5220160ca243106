package bucketurl

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"silt/internal/testenv"
	"silt/objectstore"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

var awsEnv = env("AWS_ACCESS_KEY_ID", "ak", "AWS_SECRET_ACCESS_KEY", "sk")

func TestParseS3(t *testing.T) {
	t.Parallel()
	sp, err := parse("s3://bkt/some/prefix/?endpoint=http://127.0.0.1:9000&region=eu-west-1", awsEnv)
	if err != nil {
		t.Fatal(err)
	}
	c := sp.s3
	if c == nil || c.Bucket != "bkt" || c.Prefix != "some/prefix" || c.Endpoint != "http://127.0.0.1:9000" ||
		c.Region != "eu-west-1" || !c.PathStyle || c.AccessKey != "" {
		t.Fatalf("got %+v", c)
	}
	sp, err = parse("s3://bkt", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := sp.s3; c.Bucket != "bkt" || c.Prefix != "" || c.Endpoint != "" || c.PathStyle || c.Region != "" {
		t.Fatalf("got %+v", c)
	}
	// The endpoint keeps its scheme; a trailing slash is dropped.
	sp, err = parse("s3://bkt?endpoint=https://s3.example.com/", nil)
	if err != nil || sp.s3.Endpoint != "https://s3.example.com" {
		t.Fatalf("got %+v, %v", sp.s3, err)
	}
	// Bodies go unsigned where TLS protects them, or when asked.
	for url, want := range map[string]bool{
		"s3://bkt": true, "s3://bkt?endpoint=https://s3.example.com": true,
		"s3://bkt?endpoint=http://127.0.0.1:9000":                         false,
		"s3://bkt?endpoint=http://127.0.0.1:9000&unsigned_payload=true":   true,
		"s3://bkt?endpoint=https://s3.example.com&unsigned_payload=false": false,
	} {
		sp, err := parse(url, nil)
		if err != nil || sp.s3.UnsignedPayload != want {
			t.Errorf("%s: unsigned %v (%v), want %v", url, sp.s3 != nil && sp.s3.UnsignedPayload, err, want)
		}
	}
	if _, err := parse("s3://bkt?unsigned_payload=maybe", nil); err == nil {
		t.Error("unsigned_payload=maybe accepted")
	}
}

func TestParseMinio(t *testing.T) {
	t.Parallel()
	sp, err := parse("minio://bkt/p?endpoint=http://127.0.0.1:9000", awsEnv)
	if err != nil {
		t.Fatal(err)
	}
	c := sp.minio
	if c == nil || c.Bucket != "bkt" || c.Prefix != "p" || c.Endpoint != "127.0.0.1:9000" || c.Secure ||
		c.Region != "us-east-1" || c.AccessKey != "ak" || c.SecretKey != "sk" {
		t.Fatalf("got %+v", c)
	}
	sp, err = parse("minio://bkt?endpoint=https://minio.local&region=r1",
		env("MINIO_ACCESS_KEY", "mk", "MINIO_SECRET_KEY", "ms"))
	if err != nil {
		t.Fatal(err)
	}
	if c := sp.minio; c.Endpoint != "minio.local" || !c.Secure || c.Region != "r1" || c.AccessKey != "mk" || c.SecretKey != "ms" {
		t.Fatalf("got %+v", c)
	}
	// AWS variables win over MinIO's, and carry a session token.
	sp, err = parse("minio://bkt?endpoint=http://h:1", env("AWS_ACCESS_KEY_ID", "ak", "AWS_SECRET_ACCESS_KEY", "sk",
		"AWS_SESSION_TOKEN", "tok", "MINIO_ACCESS_KEY", "mk", "MINIO_SECRET_KEY", "ms"))
	if err != nil || sp.minio.AccessKey != "ak" || sp.minio.SessionToken != "tok" {
		t.Fatalf("got %+v, %v", sp.minio, err)
	}
	// Half a pair does not count.
	if _, err := parse("minio://bkt?endpoint=http://h:1", env("AWS_ACCESS_KEY_ID", "ak")); err == nil || !strings.Contains(err.Error(), "credentials") {
		t.Fatalf("no credentials: %v", err)
	}
}

func TestParseFileAndMem(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"file:///var/lib/silt":          "/var/lib/silt",
		"file:///var/lib/silt/":         "/var/lib/silt",
		"file://localhost/tmp/x":        "/tmp/x",
		"file:///tmp/with%20space/../y": "/tmp/y",
		"file:/tmp/z":                   "/tmp/z",
	} {
		sp, err := parse(in, nil)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if sp.file == nil || sp.file.Root != want || !sp.file.Create {
			t.Errorf("%s: got %+v, want root %s", in, sp.file, want)
		}
	}
	for in, want := range map[string]string{"mem://": "", "mem://name": "name", "mem://name/": "name"} {
		sp, err := parse(in, nil)
		if err != nil || sp.mem == nil || sp.mem.Name != want {
			t.Errorf("%s: got %+v, %v", in, sp.mem, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"",
		"bucket/prefix",
		"/abs/path",
		"gs://bkt",
		"s3://",
		"s3:///prefix",
		"s3://bkt:9000/p",
		"s3://bkt/a/../b",
		"s3://bkt/a//b",
		"s3://bkt?endpoint=127.0.0.1:9000",
		"s3://bkt?endpoint=ftp://h",
		"s3://bkt?endpoint=http://h/path",
		"s3://bkt?endpoint=http://h&endpoint=http://g",
		"s3://bkt?regoin=us-east-1",
		"s3://ak:secret@bkt",
		"s3://bkt#frag",
		"s3://bkt?%zz",
		"minio://bkt",
		"minio://bkt?endpoint=",
		"minio://bkt?endpoint=h:9000",
		"minio://bkt?endpoint=http://h&secure=true",
		"file://relative/path",
		"file://",
		"file:relative",
		"file:///tmp/x?create=false",
		"mem://name/path",
		"mem://?x=1",
		"mem://a b",
		"://x",
		"s3://bkt\x7f",
	} {
		_, err := parse(in, awsEnv)
		if !errors.Is(err, ErrBadURL) {
			t.Errorf("parse(%q) = %v, want ErrBadURL", in, err)
		}
	}
	// Passwords never appear in errors.
	if _, err := parse("s3://ak:hunter2@bkt", awsEnv); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error shows the password: %v", err)
	}
}

func TestOpenFileAndMem(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	root := filepath.Join(t.TempDir(), "new", "dir")
	b, err := Open(ctx, "file://"+root)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		t.Fatalf("root not created: %v", err)
	}
	if err := b.Put(ctx, "k", strings.NewReader("v"), 1, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "k")); err != nil {
		t.Fatal(err)
	}
	m1, err := Open(ctx, "mem://")
	if err != nil {
		t.Fatal(err)
	}
	m2, _ := Open(ctx, "mem://")
	if err := m1.Put(ctx, "k", strings.NewReader("v"), 1, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m2.Stat(ctx, "k"); !errors.Is(err, objectstore.ErrNotExist) {
		t.Fatalf("mem:// buckets share state: %v", err)
	}
	// Schemes are case-insensitive.
	if b, err := Open(ctx, "MEM://"); err != nil || b.Name() != "mem://" {
		t.Fatalf("Open(MEM://) = %v, %v", b, err)
	}
	if _, err := Open(ctx, "ftp://x"); !errors.Is(err, ErrBadURL) {
		t.Fatalf("Open(ftp://x) = %v", err)
	}
}

// TestOpenMinIO opens both S3-protocol schemes against the test MinIO with
// credentials from the environment. Not parallel: it sets the environment.
func TestOpenMinIO(t *testing.T) {
	srv, bucket := testenv.MinIOBucket(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	ctx := t.Context()
	s3b, err := Open(ctx, srv.URL("s3", bucket, "via-s3"))
	if err != nil {
		t.Fatal(err)
	}
	mb, err := Open(ctx, srv.URL("minio", bucket, "via-minio"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s3b.Put(ctx, "k", strings.NewReader("from s3"), -1, objectstore.PutOptions{}); err != nil {
		t.Fatalf("s3 Put: %v", err)
	}
	if err := mb.Put(ctx, "k", strings.NewReader("from minio"), -1, objectstore.PutOptions{}); err != nil {
		t.Fatalf("minio Put: %v", err)
	}
	// Both wrote under their prefixes in the same bucket.
	whole, err := Open(ctx, srv.URL("minio", bucket, ""))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := whole.List(ctx, "", func(info objectstore.ObjectInfo) error {
		keys = append(keys, info.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(keys, ",") != "via-minio/k,via-s3/k" {
		t.Fatalf("keys = %v", keys)
	}
	// A missing bucket is reported as such through either scheme.
	for _, scheme := range []string{"s3", "minio"} {
		b, err := Open(ctx, srv.URL(scheme, testenv.RandomName("missing-"), ""))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Stat(ctx, "k"); !errors.Is(err, objectstore.ErrBucketNotExist) {
			t.Errorf("%s: Stat in a missing bucket: %v", scheme, err)
		}
	}
}
