package s3_test

import (
	"strings"
	"testing"

	"silt/internal/testenv"
	"silt/objectstore"
	"silt/objectstore/objectstoretest"
	"silt/objectstore/s3"
)

// config is a Config for c on the test MinIO.
func config(c objectstoretest.RemoteConfig) s3.Config {
	cfg := s3.DefaultConfig()
	cfg.Bucket, cfg.Prefix = c.Bucket, c.Prefix
	cfg.Endpoint = c.Server.Endpoint
	cfg.Region = c.Server.Region
	cfg.PathStyle = true
	cfg.AccessKey, cfg.SecretKey = c.Server.AccessKey, c.Server.SecretKey
	if c.PartSize != 0 {
		cfg.PartSize = c.PartSize
	}
	return cfg
}

// TestRemote runs the suite every S3-protocol backend passes, with bodies
// signed and unsigned.
func TestRemote(t *testing.T) {
	t.Parallel()
	objectstoretest.RunRemote(t, "s3", config, s3.New)
}

func TestRemoteUnsignedPayload(t *testing.T) {
	t.Parallel()
	unsigned := func(c objectstoretest.RemoteConfig) s3.Config {
		cfg := config(c)
		cfg.UnsignedPayload = true
		return cfg
	}
	objectstoretest.RunRemote(t, "s3", unsigned, s3.New)
}

func TestConfig(t *testing.T) {
	t.Parallel()
	good := s3.DefaultConfig()
	good.Bucket = "b"
	objectstoretest.CheckConfigs(t, good, s3.Config.Validate, s3.New, map[string]func(*s3.Config){
		"no bucket":       func(c *s3.Config) { c.Bucket = "" },
		"slash in bucket": func(c *s3.Config) { c.Bucket = "a/b" },
		"bad prefix":      func(c *s3.Config) { c.Prefix = "a/../b" },
		"endpoint scheme": func(c *s3.Config) { c.Endpoint = "127.0.0.1:9000" },
		"endpoint ftp":    func(c *s3.Config) { c.Endpoint = "ftp://127.0.0.1:9000" },
		"half creds":      func(c *s3.Config) { c.AccessKey = "k" },
		"token only":      func(c *s3.Config) { c.SessionToken = "t" },
		"small parts":     func(c *s3.Config) { c.PartSize = 1 << 20 },
		"no concurrency":  func(c *s3.Config) { c.Concurrency = 0 },
	})
}

// TestDefaultCredentials uses the AWS environment variables through the
// SDK's default chain. Not parallel: it sets the environment.
func TestDefaultCredentials(t *testing.T) {
	srv, bucket := testenv.MinIOBucket(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_REGION", srv.Region)
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	cfg := config(objectstoretest.RemoteConfig{Server: srv, Bucket: bucket})
	cfg.AccessKey, cfg.SecretKey, cfg.Region = "", "", ""
	b := objectstoretest.MustNew(t, s3.New, cfg)
	if err := b.Put(t.Context(), "k", strings.NewReader("x"), 1, objectstore.PutOptions{}); err != nil {
		t.Fatalf("Put with environment credentials: %v", err)
	}
	// Wrong credentials are refused, so the ones above were used.
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
	if err := objectstoretest.MustNew(t, s3.New, cfg).Put(t.Context(), "k", strings.NewReader("x"), 1, objectstore.PutOptions{}); err == nil {
		t.Fatal("Put with a wrong secret succeeded")
	}
}
