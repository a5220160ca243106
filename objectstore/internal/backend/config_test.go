package backend

import (
	"errors"
	"strings"
	"testing"

	"silt/objectstore"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := Config{Scheme: "s3", Bucket: "b", PartSize: DefaultPartSize, Concurrency: DefaultConcurrency}
	errEndpoint := errors.New("bad endpoint")
	endpointOK := func() error { return nil }
	if err := good.Validate(endpointOK); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	// endpoint is what the backend's endpoint check returns: the bucket
	// and prefix checks come before it, the others after.
	for _, c := range []struct {
		name     string
		mod      func(*Config)
		endpoint error
		want     string
	}{
		{"no bucket", func(c *Config) { c.Bucket = "" }, errEndpoint, "s3 config: bucket is required"},
		{"space in bucket", func(c *Config) { c.Bucket = "a b" }, nil, `s3 config: invalid bucket name "a b"`},
		{"bad prefix", func(c *Config) { c.Prefix = "a/../b" }, errEndpoint, `s3 config: prefix "a/../b"`},
		{"endpoint", func(c *Config) { c.AccessKey = "k" }, errEndpoint, "s3 config: bad endpoint"},
		{"half creds", func(c *Config) { c.SecretKey = "s" }, nil, "s3 config: set both access key and secret key, or neither"},
		{"token only", func(c *Config) { c.SessionToken = "t" }, nil, "s3 config: session token without access key"},
		{"small parts", func(c *Config) { c.PartSize = MinPartSize - 1 }, nil, "s3 config: part size 5242879 outside [5 MiB, 5 GiB]"},
		{"big parts", func(c *Config) { c.PartSize = MaxPartSize + 1 }, nil, "outside [5 MiB, 5 GiB]"},
		{"no concurrency", func(c *Config) { c.Concurrency = 0; c.Scheme = "minio" }, nil, "minio config: concurrency 0 must be at least 1"},
	} {
		cfg := good
		c.mod(&cfg)
		err := cfg.Validate(func() error { return c.endpoint })
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Validate = %v, want %q", c.name, err, c.want)
		}
	}
	// The endpoint and prefix errors stay in the chain.
	if err := good.Validate(func() error { return errEndpoint }); !errors.Is(err, errEndpoint) {
		t.Errorf("Validate = %v, want the endpoint error in the chain", err)
	}
	bad := good
	bad.Prefix = "a/../b"
	if err := bad.Validate(endpointOK); !errors.Is(err, objectstore.ErrInvalidKey) {
		t.Errorf("bad prefix: %v does not wrap ErrInvalidKey", err)
	}
}

func TestSentinel(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		code   string
		status int
		want   error
	}{
		{"NoSuchBucket", 404, objectstore.ErrBucketNotExist},
		{"NoSuchKey", 404, objectstore.ErrNotExist},
		{"PreconditionFailed", 412, objectstore.ErrExists},
		{"", 412, objectstore.ErrExists},
		{"InvalidRange", 416, objectstore.ErrInvalidRange},
		{"", 416, objectstore.ErrInvalidRange},
		{"NotFound", 404, nil},
		{"AccessDenied", 403, nil},
		{"", 0, nil},
	} {
		if got := sentinel(c.code, c.status); got != c.want {
			t.Errorf("sentinel(%q, %d) = %v, want %v", c.code, c.status, got, c.want)
		}
	}
}
