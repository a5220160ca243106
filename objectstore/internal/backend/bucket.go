package backend

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"silt/objectstore"
)

// Client is the SDK half of an S3-protocol backend: its requests, on full
// object keys (the prefix included), and how to read its errors. Bucket is
// the other half, the same for every SDK. P is the SDK's completed-part
// type.
type Client[P any] interface {
	// ErrorCode returns the S3 error code and the HTTP status that err
	// carries, or "" and 0.
	ErrorCode(err error) (code string, status int)
	// Upload returns the requests of one Put of key. With ifNotExists the
	// request that creates the object (the single PUT, or the multipart
	// complete) sends If-None-Match: *.
	Upload(key string, ifNotExists bool) Multipart[P]
	// Get sends a GET of key, with the Range header rng unless rng is "",
	// and returns the body. Errors surface here, not on the first Read.
	Get(ctx context.Context, key, rng string) (io.ReadCloser, error)
	// Head returns the Size and LastModified of key.
	Head(ctx context.Context, key string) (objectstore.ObjectInfo, error)
	// HeadNotFound reports whether err, from Head, means not found. A HEAD
	// response has no body, so no error code that tells a missing key from
	// a missing bucket.
	HeadNotFound(err error) bool
	// BucketMissing asks the service whether the bucket exists, and reports
	// true only when it surely does not.
	BucketMissing(ctx context.Context) bool
	// List calls fn with the full key, Size and LastModified of every object
	// whose key starts with prefix, in key order. It stops at fn's first
	// error and returns it. When ctx ends the walk it returns an error,
	// ctx's own or the SDK's, that wraps ctx's.
	List(ctx context.Context, prefix string, fn func(objectstore.ObjectInfo) error) error
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

// Bucket is the SDK-independent half of an S3-protocol objectstore.Bucket:
// it checks arguments and ctx, maps keys under the prefix, streams Puts
// through the Uploader, tells a missing key from a missing bucket, and maps
// errors to the objectstore sentinels, keeping the SDK error in the chain.
// Each backend's Bucket is one over its own Client.
type Bucket[P any] struct {
	scheme   string
	bucket   string
	prefix   string // "" or ends in "/"
	client   Client[P]
	uploader *Uploader
}

// New returns a Bucket on client for c, which must have passed Validate.
func New[P any](c Config, client Client[P]) (*Bucket[P], error) {
	prefix, _ := CleanPrefix(c.Prefix) // valid: c passed Validate
	up, err := NewUploader(c.PartSize, c.Concurrency)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Scheme, err)
	}
	return &Bucket[P]{scheme: c.Scheme, bucket: c.Bucket, prefix: prefix, client: client, uploader: up}, nil
}

// Name returns "scheme://bucket" or "scheme://bucket/prefix".
func (b *Bucket[P]) Name() string {
	if b.prefix == "" {
		return b.scheme + "://" + b.bucket
	}
	return b.scheme + "://" + b.bucket + "/" + strings.TrimSuffix(b.prefix, "/")
}

// Capabilities reports conditional put support (If-None-Match).
func (b *Bucket[P]) Capabilities() objectstore.Capabilities {
	return objectstore.Capabilities{ConditionalPut: true}
}

// start checks ctx and key, and returns the full object key.
func (b *Bucket[P]) start(ctx context.Context, op, key string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", b.errorf(op, key, err)
	}
	if err := objectstore.ValidateKey(key); err != nil {
		return "", fmt.Errorf("%s %s: %w", b.scheme, op, err)
	}
	return b.prefix + key, nil
}

// errorf wraps err with the backend, the operation and the key.
func (b *Bucket[P]) errorf(op, key string, err error) error {
	return fmt.Errorf("%s %s %s: %w", b.scheme, op, key, err)
}

// mapErr wraps err, from the Client, with the operation, key and the
// objectstore sentinel it stands for, keeping err in the chain.
func (b *Bucket[P]) mapErr(op, key string, err error) error {
	if sentinel := sentinel(b.client.ErrorCode(err)); sentinel != nil {
		return fmt.Errorf("%s %s %s: %w: %w", b.scheme, op, key, sentinel, err)
	}
	return b.errorf(op, key, err)
}

// sentinel returns the objectstore error that an S3 error code and HTTP
// status stand for, or nil.
func sentinel(code string, status int) error {
	switch {
	case code == "NoSuchBucket":
		return objectstore.ErrBucketNotExist
	case code == "NoSuchKey":
		return objectstore.ErrNotExist
	case code == "PreconditionFailed" || status == 412:
		return objectstore.ErrExists
	case code == "InvalidRange" || status == 416:
		return objectstore.ErrInvalidRange
	}
	return nil
}

// Put uploads r: one request when it fits in a part, else multipart.
func (b *Bucket[P]) Put(ctx context.Context, key string, r io.Reader, size int64, opts objectstore.PutOptions) error {
	full, err := b.start(ctx, "put", key)
	if err != nil {
		return err
	}
	if err := CheckSize(size); err != nil {
		return b.errorf("put", key, err)
	}
	if err := Upload(ctx, b.uploader, b.client.Upload(full, opts.IfNotExists), r, size); err != nil {
		return b.mapErr("put", key, err)
	}
	return nil
}

// Get opens the whole object.
func (b *Bucket[P]) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	full, err := b.start(ctx, "get", key)
	if err != nil {
		return nil, err
	}
	return b.get(ctx, "get", key, full, "")
}

// GetRange opens part of the object with a Range header.
func (b *Bucket[P]) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	full, err := b.start(ctx, "get range", key)
	if err != nil {
		return nil, err
	}
	if err := CheckRange(offset, length); err != nil {
		return nil, b.errorf("get range", key, err)
	}
	rng := "bytes=" + strconv.FormatInt(offset, 10) + "-"
	if length > 0 {
		rng += strconv.FormatInt(offset+length-1, 10)
	}
	return b.get(ctx, "get range", key, full, rng)
}

func (b *Bucket[P]) get(ctx context.Context, op, key, full, rng string) (io.ReadCloser, error) {
	body, err := b.client.Get(ctx, full, rng)
	if err != nil {
		return nil, b.mapErr(op, key, err)
	}
	return CtxReadCloser{Ctx: ctx, R: body}, nil
}

// Stat heads the object. A not-found HEAD is ErrNotExist or, when the
// bucket turns out to be missing, ErrBucketNotExist.
func (b *Bucket[P]) Stat(ctx context.Context, key string) (objectstore.ObjectInfo, error) {
	full, err := b.start(ctx, "stat", key)
	if err != nil {
		return objectstore.ObjectInfo{}, err
	}
	info, err := b.client.Head(ctx, full)
	if err != nil {
		if b.client.HeadNotFound(err) && ctx.Err() == nil {
			if b.client.BucketMissing(ctx) {
				return objectstore.ObjectInfo{}, fmt.Errorf("%s stat %s: bucket %s: %w: %w", b.scheme, key, b.bucket, objectstore.ErrBucketNotExist, err)
			}
			return objectstore.ObjectInfo{}, fmt.Errorf("%s stat %s: %w: %w", b.scheme, key, objectstore.ErrNotExist, err)
		}
		return objectstore.ObjectInfo{}, b.mapErr("stat", key, err)
	}
	return objectstore.ObjectInfo{Key: key, Size: info.Size, LastModified: info.LastModified}, nil
}

// List calls fn for the objects under prefix, with keys relative to the
// bucket's prefix. fn's error is returned as it is.
func (b *Bucket[P]) List(ctx context.Context, prefix string, fn func(objectstore.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return b.errorf("list", prefix, err)
	}
	var fnErr error
	err := b.client.List(ctx, b.prefix+prefix, func(o objectstore.ObjectInfo) error {
		if !strings.HasPrefix(o.Key, b.prefix) {
			return nil
		}
		fnErr = fn(objectstore.ObjectInfo{Key: strings.TrimPrefix(o.Key, b.prefix), Size: o.Size, LastModified: o.LastModified})
		return fnErr
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return b.mapErr("list", prefix, err)
	}
	return nil
}

// Delete removes the object; a missing key is not an error.
func (b *Bucket[P]) Delete(ctx context.Context, key string) error {
	full, err := b.start(ctx, "delete", key)
	if err != nil {
		return err
	}
	if err := b.client.Delete(ctx, full); err != nil {
		return b.mapErr("delete", key, err)
	}
	return nil
}
