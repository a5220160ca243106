package s3_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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

// bodyProxy forwards to MinIO, recording the signature's payload hash and
// the CRC32 header of every request with a body, and flipping a byte of
// each body when tamper is set.
type bodyProxy struct {
	mu      sync.Mutex
	hashes  []string // X-Amz-Content-Sha256 of requests with a body
	crcs    []string // X-Amz-Checksum-Crc32 of the same
	tamper  atomic.Bool
	handler http.Handler
}

func newBodyProxy(t *testing.T, endpoint string) (*bodyProxy, string) {
	t.Helper()
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	p := &bodyProxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	p.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > 0 {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			p.mu.Lock()
			p.hashes = append(p.hashes, r.Header.Get("X-Amz-Content-Sha256"))
			p.crcs = append(p.crcs, r.Header.Get("X-Amz-Checksum-Crc32"))
			p.mu.Unlock()
			if p.tamper.Load() {
				body[len(body)/2] ^= 0xff
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		rp.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(p.handler)
	t.Cleanup(srv.Close)
	return p, srv.URL
}

// TestUnsignedPayloadOverHTTP: with UnsignedPayload over plain http, a PUT
// carries UNSIGNED-PAYLOAD (its body is never hashed for the signature)
// and a CRC32 the service checks: a body changed on the way is refused.
// Signed, the payload hash is the body's SHA-256.
func TestUnsignedPayloadOverHTTP(t *testing.T) {
	t.Parallel()
	srv, bucket := testenv.MinIOBucket(t)
	body := bytes.Repeat([]byte("silt "), 1000)
	for _, unsigned := range []bool{false, true} {
		proxy, endpoint := newBodyProxy(t, srv.Endpoint)
		cfg := config(objectstoretest.RemoteConfig{Server: srv, Bucket: bucket})
		cfg.Endpoint, cfg.UnsignedPayload = endpoint, unsigned
		b := objectstoretest.MustNew(t, s3.New, cfg)
		key := testenv.RandomName("k-")
		if err := b.Put(t.Context(), key, bytes.NewReader(body), int64(len(body)), objectstore.PutOptions{}); err != nil {
			t.Fatalf("unsigned=%v: Put: %v", unsigned, err)
		}
		proxy.mu.Lock()
		hashes, crcs := slices.Clone(proxy.hashes), slices.Clone(proxy.crcs)
		proxy.mu.Unlock()
		if len(hashes) != 1 {
			t.Fatalf("unsigned=%v: %d requests with a body, want 1", unsigned, len(hashes))
		}
		sum := sha256.Sum256(body)
		want := hex.EncodeToString(sum[:])
		if unsigned {
			want = "UNSIGNED-PAYLOAD"
		}
		if hashes[0] != want {
			t.Errorf("unsigned=%v: payload hash %q, want %q", unsigned, hashes[0], want)
		}
		var crc [4]byte
		binary.BigEndian.PutUint32(crc[:], crc32.ChecksumIEEE(body))
		if wantCRC := base64.StdEncoding.EncodeToString(crc[:]); crcs[0] != wantCRC {
			t.Errorf("unsigned=%v: CRC32 header %q, want %q", unsigned, crcs[0], wantCRC)
		}
		proxy.tamper.Store(true)
		if err := b.Put(t.Context(), key+"-tampered", bytes.NewReader(body), int64(len(body)), objectstore.PutOptions{}); err == nil {
			t.Errorf("unsigned=%v: a body changed in transit was stored", unsigned)
		}
	}
}
