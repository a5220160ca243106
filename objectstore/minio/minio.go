package minio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"silt/objectstore"
	"silt/objectstore/internal/backend"
)

var _ objectstore.Bucket = (*Bucket)(nil)

// Config configures a MinIO bucket.
type Config struct {
	// Bucket is the bucket name. Required.
	Bucket string
	// Prefix is prepended to every key, as a directory: "logs" and "logs/"
	// both store key "a" as "logs/a". Optional.
	Prefix string
	// Endpoint is the server's host:port, without a scheme. Required.
	Endpoint string
	// Secure selects https.
	Secure bool
	// Region is the bucket's region; empty lets minio-go look it up.
	Region string
	// AccessKey, SecretKey and SessionToken are static credentials. Empty
	// AccessKey means the environment: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
	// (and AWS_SESSION_TOKEN), else MINIO_ACCESS_KEY/MINIO_SECRET_KEY (or
	// MINIO_ROOT_USER/MINIO_ROOT_PASSWORD).
	AccessKey    string
	SecretKey    string
	SessionToken string
	// PartSize is the multipart part size and the largest body sent in one
	// PUT. At least 5 MiB.
	PartSize int
	// Concurrency is how many parts one Put uploads at once; a Put buffers
	// at most max(Concurrency, 2) parts.
	Concurrency int
}

// DefaultConfig returns the defaults: 8 MiB parts, 4 in flight, region
// us-east-1.
func DefaultConfig() Config {
	return Config{
		Region:      "us-east-1",
		PartSize:    backend.DefaultPartSize,
		Concurrency: backend.DefaultConcurrency,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	return c.shared().Validate(c.checkEndpoint)
}

// shared returns the settings every S3-protocol backend has.
func (c Config) shared() backend.Config {
	return backend.Config{Scheme: "minio", Bucket: c.Bucket, Prefix: c.Prefix,
		AccessKey: c.AccessKey, SecretKey: c.SecretKey, SessionToken: c.SessionToken,
		PartSize: c.PartSize, Concurrency: c.Concurrency}
}

// checkEndpoint requires Endpoint as host:port, without a scheme or path.
func (c Config) checkEndpoint() error {
	if c.Endpoint == "" {
		return errors.New("endpoint (host:port) is required")
	}
	if strings.Contains(c.Endpoint, "://") || strings.Contains(c.Endpoint, "/") {
		return fmt.Errorf("endpoint %q must be host:port without a scheme or path (use Secure for https)", c.Endpoint)
	}
	if host, port, err := net.SplitHostPort(c.Endpoint); err == nil {
		if host == "" {
			return fmt.Errorf("endpoint %q has no host", c.Endpoint)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return fmt.Errorf("endpoint %q has a bad port", c.Endpoint)
		}
	}
	return nil
}

// Bucket is a MinIO bucket, or a prefix of one: the S3-protocol
// backend.Bucket over minio-go.
type Bucket = backend.Bucket[minio.CompletePart]

// New returns a Bucket for cfg. It makes no request: a missing bucket shows
// as ErrBucketNotExist on the first call.
func New(_ context.Context, cfg Config) (*Bucket, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var creds *credentials.Credentials
	if cfg.AccessKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.EnvMinio{},
		})
	}
	core, err := minio.NewCore(cfg.Endpoint, &minio.Options{
		Creds:  creds,
		Secure: cfg.Secure,
		Region: cfg.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("minio: client: %w", err)
	}
	return backend.New(cfg.shared(), &client{core: core, bucket: cfg.Bucket})
}

// client implements backend.Client with minio-go's Core API.
type client struct {
	core   *minio.Core
	bucket string
}

// ErrorCode reads a minio-go ErrorResponse. Code NotFound (S3's name for a
// HEAD's 404) counts as NoSuchKey.
func (c *client) ErrorCode(err error) (string, int) {
	var resp minio.ErrorResponse
	if !errors.As(err, &resp) {
		return "", 0
	}
	if resp.Code == "NotFound" {
		return minio.NoSuchKey, resp.StatusCode
	}
	return resp.Code, resp.StatusCode
}

// HeadNotFound reports NoSuchKey or NotFound (a HEAD has no body: the code
// is minio-go's guess) or a 404.
func (c *client) HeadNotFound(err error) bool {
	code, status := c.ErrorCode(err)
	return code == minio.NoSuchKey || status == 404
}

// BucketMissing asks BucketExists.
func (c *client) BucketMissing(ctx context.Context) bool {
	ok, err := c.core.BucketExists(ctx, c.bucket)
	return err == nil && !ok
}

// Upload uses one PUT for one part, else a multipart upload.
func (c *client) Upload(key string, ifNotExists bool) backend.Multipart[minio.CompletePart] {
	up := &upload{c: c, key: key}
	if ifNotExists {
		up.opts.SetMatchETagExcept("*")
	}
	return up
}

// upload implements backend.Multipart for one key.
type upload struct {
	c    *client
	key  string
	opts minio.PutObjectOptions // carries If-None-Match for conditional puts
}

func (u *upload) PutSingle(ctx context.Context, body []byte) error {
	_, err := u.c.core.PutObject(ctx, u.c.bucket, u.key, bytes.NewReader(body), int64(len(body)), "", "", u.opts)
	return err
}

func (u *upload) Create(ctx context.Context) (string, error) {
	return u.c.core.NewMultipartUpload(ctx, u.c.bucket, u.key, minio.PutObjectOptions{})
}

func (u *upload) UploadPart(ctx context.Context, uploadID string, n int, body []byte) (minio.CompletePart, error) {
	p, err := u.c.core.PutObjectPart(ctx, u.c.bucket, u.key, uploadID, n, bytes.NewReader(body), int64(len(body)), minio.PutObjectPartOptions{})
	if err != nil {
		return minio.CompletePart{}, err
	}
	return minio.CompletePart{PartNumber: n, ETag: p.ETag}, nil
}

func (u *upload) Complete(ctx context.Context, uploadID string, parts []minio.CompletePart) error {
	_, err := u.c.core.CompleteMultipartUpload(ctx, u.c.bucket, u.key, uploadID, parts, u.opts)
	return err
}

func (u *upload) Abort(ctx context.Context, uploadID string) error {
	return u.c.core.AbortMultipartUpload(ctx, u.c.bucket, u.key, uploadID)
}

// Get sends the GET now: Core.GetObject does, where Client.GetObject would
// defer it to the first Read.
func (c *client) Get(ctx context.Context, key, rng string) (io.ReadCloser, error) {
	var opts minio.GetObjectOptions
	if rng != "" {
		opts.Set("Range", rng)
	}
	body, _, _, err := c.core.GetObject(ctx, c.bucket, key, opts)
	return body, err
}

// Head sends a StatObject.
func (c *client) Head(ctx context.Context, key string) (objectstore.ObjectInfo, error) {
	info, err := c.core.StatObject(ctx, c.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return objectstore.ObjectInfo{}, err
	}
	return objectstore.ObjectInfo{Size: info.Size, LastModified: info.LastModified}, nil
}

// List walks ListObjectsV2 pages through minio-go's iterator.
func (c *client) List(ctx context.Context, prefix string, fn func(objectstore.ObjectInfo) error) error {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio-go's lister when fn ends the walk early
	for o := range c.core.ListObjectsIter(lctx, c.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			if err := ctx.Err(); err != nil {
				return err
			}
			return o.Err
		}
		if err := fn(objectstore.ObjectInfo{Key: o.Key, Size: o.Size, LastModified: o.LastModified}); err != nil {
			return err
		}
	}
	// The iterator ends quietly when ctx is cancelled.
	return ctx.Err()
}

// Delete sends a RemoveObject; a missing key is not an error.
func (c *client) Delete(ctx context.Context, key string) error {
	return c.core.RemoveObject(ctx, c.bucket, key, minio.RemoveObjectOptions{})
}
