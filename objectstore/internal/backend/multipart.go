package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// S3 multipart limits.
const (
	MinPartSize = 5 << 20
	MaxParts    = 10000
	// DefaultPartSize is the part size (and single-request threshold) the
	// S3-protocol backends use by default.
	DefaultPartSize = 8 << 20
	// DefaultConcurrency is how many parts are in flight (and buffered) at once.
	DefaultConcurrency = 4
	// abortTimeout bounds the clean-up of a failed multipart upload, which
	// runs even when the caller's ctx is cancelled.
	abortTimeout = 30 * time.Second
)

// Multipart is the protocol side of an upload: one object in a single
// request, or a multipart upload of parts of type P.
type Multipart[P any] interface {
	// PutSingle stores body in one request.
	PutSingle(ctx context.Context, body []byte) error
	// Create starts a multipart upload and returns its id.
	Create(ctx context.Context) (string, error)
	// UploadPart uploads part number n (from 1).
	UploadPart(ctx context.Context, uploadID string, n int, body []byte) (P, error)
	// Complete assembles parts, given in part-number order.
	Complete(ctx context.Context, uploadID string, parts []P) error
	// Abort discards the upload and its parts.
	Abort(ctx context.Context, uploadID string) error
}

// Uploader streams bodies through Multipart with bounded memory: at most
// max(concurrency, 2) part buffers per Upload, of partSize bytes (more
// only for bodies over MaxParts*partSize). Bodies up to one part go in one
// request. The zero value is not usable; use NewUploader.
type Uploader struct {
	partSize    int
	concurrency int
	pool        sync.Pool // *[]byte of partSize
}

// NewUploader returns an Uploader; partSize must be at least MinPartSize.
func NewUploader(partSize, concurrency int) (*Uploader, error) {
	if partSize < MinPartSize {
		return nil, fmt.Errorf("part size %d is below the S3 minimum %d", partSize, MinPartSize)
	}
	if concurrency < 1 {
		return nil, fmt.Errorf("concurrency %d must be at least 1", concurrency)
	}
	return &Uploader{partSize: partSize, concurrency: concurrency}, nil
}

// PartSize returns the configured part size.
func (u *Uploader) PartSize() int { return u.partSize }

func (u *Uploader) getBuf(size int) []byte {
	if size == u.partSize {
		if p, ok := u.pool.Get().(*[]byte); ok {
			return *p
		}
	}
	return make([]byte, size)
}

func (u *Uploader) putBuf(b []byte) {
	if cap(b) == u.partSize {
		b = b[:u.partSize]
		u.pool.Put(&b)
	}
}

// partSizeFor returns the part size for a body of size bytes (-1: unknown).
func (u *Uploader) partSizeFor(size int64) int {
	ps := int64(u.partSize)
	if size > ps*MaxParts {
		ps = (size + MaxParts - 1) / MaxParts
		const mib = 1 << 20
		ps = (ps + mib - 1) / mib * mib
	}
	return int(ps)
}

// Upload stores size bytes from r (size -1: until EOF) through m. It reads
// r only in the calling goroutine. On any failure, including ctx
// cancellation, it aborts a started multipart upload (with a context that
// outlives ctx) so no object appears and no parts are left behind.
func Upload[P any](ctx context.Context, u *Uploader, m Multipart[P], r io.Reader, size int64) error {
	if err := CheckSize(size); err != nil {
		return err
	}
	body := CtxReader{Ctx: ctx, R: Body(r, size)}
	partSize := u.partSizeFor(size)

	// Small known size: one exact buffer, one request.
	if size >= 0 && size <= int64(partSize) {
		buf := make([]byte, size)
		if n, err := io.ReadFull(body, buf); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return CheckCopied(int64(n), size)
			}
			return fmt.Errorf("read body: %w", err)
		}
		return m.PutSingle(ctx, buf)
	}

	// read fills the next part; it returns the part (possibly short, or
	// empty at the end), whether the body is exhausted, and a read error.
	var total int64
	read := func() ([]byte, bool, error) {
		buf := u.getBuf(partSize)
		n, err := io.ReadFull(body, buf)
		total += int64(n)
		switch {
		case err == nil:
			if size >= 0 && total == size {
				return buf[:n], true, nil
			}
			return buf[:n], false, nil
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return buf[:n], true, CheckCopied(total, size)
		default:
			u.putBuf(buf)
			return nil, false, fmt.Errorf("read body: %w", err)
		}
	}

	first, done, err := read()
	if err != nil {
		u.putBuf(first)
		return err
	}
	if done {
		defer u.putBuf(first)
		return m.PutSingle(ctx, first)
	}
	// A body of exactly one part (size unknown) still goes in one request.
	second, done, err := read()
	if err != nil {
		u.putBuf(first)
		u.putBuf(second)
		return err
	}
	if len(second) == 0 {
		defer u.putBuf(first)
		u.putBuf(second)
		return m.PutSingle(ctx, first)
	}
	return multipart(ctx, u, m, [][]byte{first, second}, done, read)
}

// multipart uploads the parts in pending, then the rest of the body from
// read unless done, and completes the upload.
func multipart[P any](ctx context.Context, u *Uploader, m Multipart[P], pending [][]byte, done bool, read func() ([]byte, bool, error)) (err error) {
	uploadID, err := m.Create(ctx)
	if err != nil {
		for _, b := range pending {
			u.putBuf(b)
		}
		return err
	}
	defer func() {
		if err != nil {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
			defer cancel()
			// Best effort: a failed abort leaves parts for the bucket's
			// lifecycle rules; the upload error is what the caller needs.
			_ = m.Abort(actx, uploadID)
		}
	}()

	uctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		parts []P
		// A token per part buffer: uploads in flight plus the one being
		// read never exceed the concurrency.
		slots = make(chan struct{}, u.concurrency)
	)
	// send takes ownership of buf and of the slot the caller holds.
	send := func(buf []byte) {
		var zero P
		mu.Lock()
		parts = append(parts, zero)
		n := len(parts)
		mu.Unlock()
		wg.Go(func() {
			defer func() { u.putBuf(buf); <-slots }()
			p, err := m.UploadPart(uctx, uploadID, n, buf)
			if err != nil {
				cancel(fmt.Errorf("part %d: %w", n, err))
				return
			}
			mu.Lock()
			parts[n-1] = p
			mu.Unlock()
		})
	}

	var readErr error
	for _, b := range pending {
		select {
		case slots <- struct{}{}:
			send(b)
		case <-uctx.Done():
			u.putBuf(b)
		}
	}
	for !done && uctx.Err() == nil {
		select {
		case slots <- struct{}{}:
		case <-uctx.Done():
			continue // the loop condition ends it
		}
		var buf []byte
		buf, done, readErr = read()
		if readErr != nil || len(buf) == 0 {
			u.putBuf(buf)
			<-slots
			break
		}
		if len(parts) == MaxParts {
			u.putBuf(buf)
			<-slots
			readErr = fmt.Errorf("body exceeds %d parts of %d bytes", MaxParts, len(pending[0]))
			break
		}
		send(buf)
	}
	wg.Wait()
	if readErr != nil {
		return readErr
	}
	if cerr := context.Cause(uctx); cerr != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%v)", ctx.Err(), cerr)
		}
		return cerr
	}
	return m.Complete(ctx, uploadID, parts)
}
