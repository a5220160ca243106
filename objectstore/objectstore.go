package objectstore

import (
	"context"
	"errors"
	"io"
	"time"
)

// Sentinel errors. Backends translate SDK errors into these at their edge.
var (
	// ErrNotExist is returned when the key does not exist.
	ErrNotExist = errors.New("objectstore: object does not exist")
	// ErrExists is returned by a conditional Put when the key already exists.
	ErrExists = errors.New("objectstore: object already exists")
	// ErrBucketNotExist is returned when the bucket (or directory) is missing.
	ErrBucketNotExist = errors.New("objectstore: bucket does not exist")
	// ErrInvalidRange is returned when a range read starts at or past the
	// end, or when offset or length is out of range (see Bucket.GetRange).
	ErrInvalidRange = errors.New("objectstore: invalid range")
	// ErrInvalidKey is returned for a key that ValidateKey rejects.
	ErrInvalidKey = errors.New("objectstore: invalid key")
)

// PutOptions adjust a Put.
type PutOptions struct {
	// IfNotExists makes the Put fail with ErrExists if the key exists.
	// Honoured only where Capabilities().ConditionalPut is true.
	IfNotExists bool
}

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key          string
	Size         int64
	LastModified time.Time
}

// Capabilities says which optional features a backend supports.
type Capabilities struct {
	ConditionalPut bool
}

// Bucket is a flat keyspace of immutable objects.
type Bucket interface {
	// Put stores size bytes read from r under key. size may be -1 when
	// unknown, at the cost of buffering on some backends. If r ends before
	// size bytes, Put fails and stores nothing; bytes past size are not read.
	Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) error
	// Get opens the whole object.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// GetRange opens length bytes of the object starting at offset. A
	// negative length reads to the end of the object; a zero length or a
	// negative offset fails with ErrInvalidRange.
	GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	// Stat returns the object's metadata.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List calls fn for each key under prefix, in lexical order; an error
	// from fn stops the walk and is returned.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Capabilities reports optional features.
	Capabilities() Capabilities
	// Name identifies the backend and location for logs, e.g. "s3://bucket/prefix".
	Name() string
}
