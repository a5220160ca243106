// Package backend holds argument checks and small helpers shared by the
// objectstore backends, so that they agree on what is valid, and the half
// of the S3-protocol backends (s3, minio) that does not depend on their
// SDK: Config validation, Bucket (keys under a prefix, error mapping,
// listing, the missing-bucket check) over a Client, and the multipart
// Uploader.
package backend

import (
	"context"
	"fmt"
	"io"
	"strings"

	"silt/objectstore"
)

// CleanPrefix turns a configured key prefix into directory form: leading
// and trailing slashes are trimmed and, unless the result is empty, one
// slash is appended, so "logs", "/logs/" and "logs/" all become "logs/".
// It fails, wrapping objectstore.ErrInvalidKey, when the trimmed prefix is
// not a valid key.
func CleanPrefix(prefix string) (string, error) {
	p := strings.Trim(prefix, "/")
	if p == "" {
		return "", nil
	}
	if err := objectstore.ValidateKey(p); err != nil {
		return "", fmt.Errorf("prefix %q: %w", prefix, err)
	}
	return p + "/", nil
}

// CheckRange validates GetRange arguments; the error wraps
// objectstore.ErrInvalidRange.
func CheckRange(offset, length int64) error {
	if offset < 0 {
		return fmt.Errorf("negative offset %d: %w", offset, objectstore.ErrInvalidRange)
	}
	if length == 0 {
		return fmt.Errorf("zero length at offset %d: %w", offset, objectstore.ErrInvalidRange)
	}
	return nil
}

// CheckSize validates a Put size: -1 (unknown) or non-negative.
func CheckSize(size int64) error {
	if size < -1 {
		return fmt.Errorf("invalid size %d (want -1 for unknown, or >= 0)", size)
	}
	return nil
}

// Body limits r to size bytes when size is known.
func Body(r io.Reader, size int64) io.Reader {
	if size < 0 {
		return r
	}
	return io.LimitReader(r, size)
}

// CheckCopied reports a short body: n bytes were read where size were
// promised. It accepts any n when size is -1.
func CheckCopied(n, size int64) error {
	if size >= 0 && n != size {
		return fmt.Errorf("body ended after %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
	}
	return nil
}

// CtxReader fails reads with ctx's error once ctx is done.
type CtxReader struct {
	Ctx context.Context
	R   io.Reader
}

func (c CtxReader) Read(p []byte) (int, error) {
	if err := c.Ctx.Err(); err != nil {
		return 0, err
	}
	return c.R.Read(p)
}

// CtxReadCloser is a CtxReader over a ReadCloser.
type CtxReadCloser struct {
	Ctx context.Context
	R   io.ReadCloser
}

func (c CtxReadCloser) Read(p []byte) (int, error) {
	return CtxReader{Ctx: c.Ctx, R: c.R}.Read(p)
}

// Close closes the underlying reader.
func (c CtxReadCloser) Close() error { return c.R.Close() }
