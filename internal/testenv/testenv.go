package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"silt/internal/toxiproxy"
	"silt/localstack"
)

// need returns the value of env var key, or fails (skips under -short).
func need(t testing.TB, key, what string) string {
	t.Helper()
	v := os.Getenv(key)
	if v != "" {
		return v
	}
	if testing.Short() {
		t.Skipf("%s not available under -short (%s unset)", what, key)
	}
	t.Fatalf("%s is required: %s is unset. Run the tests with `make test`, which starts PostgreSQL and MinIO, builds Toxiproxy and exports their addresses.", what, key)
	return ""
}

// RandomName returns prefix followed by 12 random lowercase hex characters.
func RandomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// PostgresURL creates a fresh, empty database for this test and returns its
// URL. The database is dropped when the test ends.
func PostgresURL(t testing.TB) string {
	t.Helper()
	admin := need(t, localstack.EnvPostgresURL, "PostgreSQL")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("testenv: connect to test postgres: %v", err)
	}
	defer conn.Close(ctx)
	name := RandomName("t_")
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testenv: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("testenv: connect to drop database: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("testenv: drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("testenv: parse %s: %v", localstack.EnvPostgresURL, err)
	}
	u.Path = "/" + name
	return u.String()
}

// MinIOServer is the address and credentials of the test MinIO.
type MinIOServer struct {
	Endpoint  string // http://127.0.0.1:port
	AccessKey string
	SecretKey string
	Region    string
}

// Host returns the endpoint without its scheme.
func (m MinIOServer) Host() string {
	return strings.TrimPrefix(strings.TrimPrefix(m.Endpoint, "http://"), "https://")
}

// Client returns a minio-go client for the server.
func (m MinIOServer) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(m.Host(), &minio.Options{
		Creds:  credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
		Secure: strings.HasPrefix(m.Endpoint, "https://"),
		Region: m.Region,
	})
	if err != nil {
		t.Fatalf("testenv: minio client: %v", err)
	}
	return c
}

// MinIO returns the test MinIO server.
func MinIO(t testing.TB) MinIOServer {
	t.Helper()
	return MinIOServer{
		Endpoint:  need(t, localstack.EnvMinIOEndpoint, "MinIO"),
		AccessKey: need(t, localstack.EnvMinIOAccessKey, "MinIO"),
		SecretKey: need(t, localstack.EnvMinIOSecretKey, "MinIO"),
		Region:    "us-east-1",
	}
}

// MinIOBucket creates a fresh bucket for this test; it and its objects are
// removed when the test ends.
func MinIOBucket(t testing.TB) (MinIOServer, string) {
	t.Helper()
	srv := MinIO(t)
	c := srv.Client(t)
	name := RandomName("t-")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: srv.Region}); err != nil {
		t.Fatalf("testenv: make bucket: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		objs := c.ListObjects(ctx, name, minio.ListObjectsOptions{Recursive: true})
		for e := range c.RemoveObjects(ctx, name, objs, minio.RemoveObjectsOptions{}) {
			t.Errorf("testenv: remove %s: %v", e.ObjectName, e.Err)
		}
		if err := c.RemoveBucket(ctx, name); err != nil {
			t.Errorf("testenv: remove bucket %s: %v", name, err)
		}
	})
	return srv, name
}

// URL returns an objectstore URL for bucket on srv using scheme ("s3" or "minio").
func (m MinIOServer) URL(scheme, bucket, prefix string) string {
	q := url.Values{}
	q.Set("endpoint", m.Endpoint)
	q.Set("region", m.Region)
	return fmt.Sprintf("%s://%s/%s?%s", scheme, bucket, prefix, q.Encode())
}

// Toxiproxy starts a private Toxiproxy server (TCP fault proxy) for this
// test, on a free 127.0.0.1 port, and returns a client of its API. The
// server, and every proxy and connection through it, ends with the test;
// its log is shown when the test fails.
func Toxiproxy(t testing.TB) *toxiproxy.Client {
	t.Helper()
	bin := need(t, localstack.EnvToxiproxyBin, "Toxiproxy")
	logPath := filepath.Join(t.TempDir(), "toxiproxy.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("testenv: toxiproxy log: %v", err)
	}
	cfg := toxiproxy.DefaultConfig()
	cfg.Bin = bin
	cfg.Log = logFile
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := toxiproxy.Start(ctx, cfg)
	if err != nil {
		logFile.Close()
		b, _ := os.ReadFile(logPath)
		t.Fatalf("testenv: %v\n%s", err, lastBytes(b, 4000))
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Errorf("testenv: %v", err)
		}
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("toxiproxy log (%s):\n%s", srv.URL(), lastBytes(b, 4000))
		}
	})
	return srv.Client()
}

func lastBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
