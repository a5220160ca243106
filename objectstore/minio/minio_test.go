package minio_test

import (
	"strings"
	"testing"

	"silt/internal/testenv"
	"silt/objectstore"
	"silt/objectstore/minio"
	"silt/objectstore/objectstoretest"
)

// config is a Config for c on the test MinIO.
func config(c objectstoretest.RemoteConfig) minio.Config {
	cfg := minio.DefaultConfig()
	cfg.Bucket, cfg.Prefix = c.Bucket, c.Prefix
	cfg.Endpoint = c.Server.Host()
	cfg.Secure = strings.HasPrefix(c.Server.Endpoint, "https://")
	cfg.Region = c.Server.Region
	cfg.AccessKey, cfg.SecretKey = c.Server.AccessKey, c.Server.SecretKey
	if c.PartSize != 0 {
		cfg.PartSize = c.PartSize
	}
	return cfg
}

// TestRemote runs the suite every S3-protocol backend passes.
func TestRemote(t *testing.T) {
	t.Parallel()
	objectstoretest.RunRemote(t, "minio", config, minio.New)
}

func TestConfig(t *testing.T) {
	t.Parallel()
	good := minio.DefaultConfig()
	good.Bucket, good.Endpoint = "b", "127.0.0.1:9000"
	objectstoretest.CheckConfigs(t, good, minio.Config.Validate, minio.New, map[string]func(*minio.Config){
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
	})
}

// TestEnvCredentials uses credentials from the environment: the AWS
// variables first, else MinIO's. Not parallel: it sets the environment.
func TestEnvCredentials(t *testing.T) {
	srv, bucket := testenv.MinIOBucket(t)
	cfg := config(objectstoretest.RemoteConfig{Server: srv, Bucket: bucket})
	cfg.AccessKey, cfg.SecretKey = "", ""
	for _, env := range [][2]string{{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, {"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"}} {
		for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_SESSION_TOKEN", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"} {
			t.Setenv(k, "")
		}
		t.Setenv(env[0], srv.AccessKey)
		t.Setenv(env[1], srv.SecretKey)
		if err := objectstoretest.MustNew(t, minio.New, cfg).Put(t.Context(), "k", strings.NewReader("x"), 1, objectstore.PutOptions{}); err != nil {
			t.Fatalf("Put with %s: %v", env[0], err)
		}
		t.Setenv(env[1], "wrong-secret")
		if err := objectstoretest.MustNew(t, minio.New, cfg).Put(t.Context(), "k", strings.NewReader("x"), 1, objectstore.PutOptions{}); err == nil {
			t.Fatalf("Put with a wrong %s succeeded", env[1])
		}
	}
}
