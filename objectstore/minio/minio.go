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
	if c.Bucket == "" {
		return errors.New("minio config: bucket is required")
	}
	if strings.ContainsAny(c.Bucket, "/ ") {
		return fmt.Errorf("minio config: invalid bucket name %q", c.Bucket)
	}
	if _, err := backend.CleanPrefix(c.Prefix); err != nil {
		return fmt.Errorf("minio config: %w", err)
	}
	if c.Endpoint == "" {
		return errors.New("minio config: endpoint (host:port) is required")
	}
	if strings.Contains(c.Endpoint, "://") || strings.Contains(c.Endpoint, "/") {
		return fmt.Errorf("minio config: endpoint %q must be host:port without a scheme or path (use Secure for https)", c.Endpoint)
	}
	if host, port, err := net.SplitHostPort(c.Endpoint); err == nil {
		if host == "" {
			return fmt.Errorf("minio config: endpoint %q has no host", c.Endpoint)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return fmt.Errorf("minio config: endpoint %q has a bad port", c.Endpoint)
		}
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		return errors.New("minio config: set both access key and secret key, or neither")
	}
	if c.SessionToken != "" && c.AccessKey == "" {
		return errors.New("minio config: session token without access key")
	}
	if c.PartSize < backend.MinPartSize || c.PartSize > 5<<30 {
		return fmt.Errorf("minio config: part size %d outside [5 MiB, 5 GiB]", c.PartSize)
	}
	if c.Concurrency < 1 {
		return fmt.Errorf("minio config: concurrency %d must be at least 1", c.Concurrency)
	}
	return nil
}

// Bucket is a MinIO bucket, or a prefix of one.
type Bucket struct {
	core     *minio.Core
	bucket   string
	prefix   string // "" or ends in "/"
	uploader *backend.Uploader
}

// New returns a Bucket for cfg. It makes no request: a missing bucket shows
// as ErrBucketNotExist on the first call.
func New(_ context.Context, cfg Config) (*Bucket, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	prefix, _ := backend.CleanPrefix(cfg.Prefix)
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
	up, err := backend.NewUploader(cfg.PartSize, cfg.Concurrency)
	if err != nil {
		return nil, fmt.Errorf("minio: %w", err)
	}
	return &Bucket{core: core, bucket: cfg.Bucket, prefix: prefix, uploader: up}, nil
}

// Name returns "minio://bucket" or "minio://bucket/prefix".
func (b *Bucket) Name() string {
	if b.prefix == "" {
		return "minio://" + b.bucket
	}
	return "minio://" + b.bucket + "/" + strings.TrimSuffix(b.prefix, "/")
}

// Capabilities reports conditional put support.
func (b *Bucket) Capabilities() objectstore.Capabilities {
	return objectstore.Capabilities{ConditionalPut: true}
}

func (b *Bucket) start(ctx context.Context, op, key string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("minio %s %s: %w", op, key, err)
	}
	if err := objectstore.ValidateKey(key); err != nil {
		return "", fmt.Errorf("minio %s: %w", op, err)
	}
	return b.prefix + key, nil
}

func errorCode(err error) (string, int) {
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		return resp.Code, resp.StatusCode
	}
	return "", 0
}

// mapErr wraps err with the operation, key and the objectstore sentinel it
// stands for, keeping err in the chain.
func mapErr(op, key string, err error) error {
	code, status := errorCode(err)
	var sentinel error
	switch {
	case code == minio.NoSuchBucket:
		sentinel = objectstore.ErrBucketNotExist
	case code == minio.NoSuchKey || code == "NotFound":
		sentinel = objectstore.ErrNotExist
	case code == "PreconditionFailed" || status == 412:
		sentinel = objectstore.ErrExists
	case code == minio.InvalidRange || status == 416:
		sentinel = objectstore.ErrInvalidRange
	}
	if sentinel != nil {
		return fmt.Errorf("minio %s %s: %w: %w", op, key, sentinel, err)
	}
	return fmt.Errorf("minio %s %s: %w", op, key, err)
}

// Put uploads r: one PUT when it fits in a part, else multipart.
func (b *Bucket) Put(ctx context.Context, key string, r io.Reader, size int64, opts objectstore.PutOptions) error {
	full, err := b.start(ctx, "put", key)
	if err != nil {
		return err
	}
	if err := backend.CheckSize(size); err != nil {
		return fmt.Errorf("minio put %s: %w", key, err)
	}
	up := &upload{b: b, key: full}
	if opts.IfNotExists {
		up.opts.SetMatchETagExcept("*")
	}
	if err := backend.Upload(ctx, b.uploader, up, r, size); err != nil {
		return mapErr("put", key, err)
	}
	return nil
}

// upload implements backend.Multipart for one key.
type upload struct {
	b    *Bucket
	key  string
	opts minio.PutObjectOptions // carries If-None-Match for conditional puts
}

func (u *upload) PutSingle(ctx context.Context, body []byte) error {
	_, err := u.b.core.PutObject(ctx, u.b.bucket, u.key, bytes.NewReader(body), int64(len(body)), "", "", u.opts)
	return err
}

func (u *upload) Create(ctx context.Context) (string, error) {
	return u.b.core.NewMultipartUpload(ctx, u.b.bucket, u.key, minio.PutObjectOptions{})
}

func (u *upload) UploadPart(ctx context.Context, uploadID string, n int, body []byte) (minio.CompletePart, error) {
	p, err := u.b.core.PutObjectPart(ctx, u.b.bucket, u.key, uploadID, n, bytes.NewReader(body), int64(len(body)), minio.PutObjectPartOptions{})
	if err != nil {
		return minio.CompletePart{}, err
	}
	return minio.CompletePart{PartNumber: n, ETag: p.ETag}, nil
}

func (u *upload) Complete(ctx context.Context, uploadID string, parts []minio.CompletePart) error {
	_, err := u.b.core.CompleteMultipartUpload(ctx, u.b.bucket, u.key, uploadID, parts, u.opts)
	return err
}

func (u *upload) Abort(ctx context.Context, uploadID string) error {
	return u.b.core.AbortMultipartUpload(ctx, u.b.bucket, u.key, uploadID)
}

// Get opens the whole object.
func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	full, err := b.start(ctx, "get", key)
	if err != nil {
		return nil, err
	}
	return b.get(ctx, "get", key, full, minio.GetObjectOptions{})
}

// GetRange opens part of the object with a Range header.
func (b *Bucket) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	full, err := b.start(ctx, "get range", key)
	if err != nil {
		return nil, err
	}
	if err := backend.CheckRange(offset, length); err != nil {
		return nil, fmt.Errorf("minio get range %s: %w", key, err)
	}
	rng := "bytes=" + strconv.FormatInt(offset, 10) + "-"
	if length > 0 {
		rng += strconv.FormatInt(offset+length-1, 10)
	}
	var opts minio.GetObjectOptions
	opts.Set("Range", rng)
	return b.get(ctx, "get range", key, full, opts)
}

func (b *Bucket) get(ctx context.Context, op, key, full string, opts minio.GetObjectOptions) (io.ReadCloser, error) {
	// Core.GetObject sends the request now (Client.GetObject would defer it
	// to the first Read), so errors surface here.
	body, _, _, err := b.core.GetObject(ctx, b.bucket, full, opts)
	if err != nil {
		return nil, mapErr(op, key, err)
	}
	return backend.CtxReadCloser{Ctx: ctx, R: body}, nil
}

// Stat heads the object.
func (b *Bucket) Stat(ctx context.Context, key string) (objectstore.ObjectInfo, error) {
	full, err := b.start(ctx, "stat", key)
	if err != nil {
		return objectstore.ObjectInfo{}, err
	}
	info, err := b.core.StatObject(ctx, b.bucket, full, minio.StatObjectOptions{})
	if err != nil {
		if code, status := errorCode(err); (code == minio.NoSuchKey || code == "NotFound" || status == 404) && ctx.Err() == nil {
			// A HEAD has no body: the code may be minio-go's guess.
			if ok, berr := b.core.BucketExists(ctx, b.bucket); berr == nil && !ok {
				return objectstore.ObjectInfo{}, fmt.Errorf("minio stat %s: bucket %s: %w: %w", key, b.bucket, objectstore.ErrBucketNotExist, err)
			}
			return objectstore.ObjectInfo{}, fmt.Errorf("minio stat %s: %w: %w", key, objectstore.ErrNotExist, err)
		}
		return objectstore.ObjectInfo{}, mapErr("stat", key, err)
	}
	return objectstore.ObjectInfo{Key: key, Size: info.Size, LastModified: info.LastModified}, nil
}

// List walks ListObjectsV2 pages through minio-go's iterator.
func (b *Bucket) List(ctx context.Context, prefix string, fn func(objectstore.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("minio list %s: %w", prefix, err)
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio-go's lister when fn ends the walk early
	for o := range b.core.ListObjectsIter(lctx, b.bucket, minio.ListObjectsOptions{Prefix: b.prefix + prefix, Recursive: true}) {
		if o.Err != nil {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("minio list %s: %w", prefix, err)
			}
			return mapErr("list", prefix, o.Err)
		}
		if !strings.HasPrefix(o.Key, b.prefix) {
			continue
		}
		err := fn(objectstore.ObjectInfo{Key: strings.TrimPrefix(o.Key, b.prefix), Size: o.Size, LastModified: o.LastModified})
		if err != nil {
			return err
		}
	}
	// The iterator ends quietly when ctx is cancelled.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("minio list %s: %w", prefix, err)
	}
	return nil
}

// Delete removes the object; a missing key is not an error.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	full, err := b.start(ctx, "delete", key)
	if err != nil {
		return err
	}
	if err := b.core.RemoveObject(ctx, b.bucket, full, minio.RemoveObjectOptions{}); err != nil {
		return mapErr("delete", key, err)
	}
	return nil
}
