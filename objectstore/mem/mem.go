package mem

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"silt/objectstore"
	"silt/objectstore/internal/backend"
)

var _ objectstore.Bucket = (*Bucket)(nil)

// Config configures a mem bucket.
type Config struct {
	// Name is returned by Bucket.Name after "mem://"; it only labels logs.
	Name string
	// Now returns the LastModified time of new objects; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns the default configuration.
func DefaultConfig() Config { return Config{} }

// Validate checks the configuration.
func (c Config) Validate() error {
	if strings.Contains(c.Name, "/") {
		return fmt.Errorf("mem: name %q must not contain a slash", c.Name)
	}
	return nil
}

// chunkSize caps the pieces an object is stored in, so no single copy is
// huge (large copies stall the race detector and the GC).
const chunkSize = 1 << 20

type object struct {
	chunks  [][]byte // never modified once stored
	size    int64
	modTime time.Time
}

// Bucket is an in-memory bucket.
type Bucket struct {
	name string
	now  func() time.Time

	mu      sync.RWMutex
	objects map[string]object
}

// New returns an empty bucket.
func New(_ context.Context, cfg Config) (*Bucket, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Bucket{name: cfg.Name, now: now, objects: map[string]object{}}, nil
}

// Name returns "mem://" and the configured name.
func (b *Bucket) Name() string { return "mem://" + b.name }

// Capabilities reports conditional put support.
func (b *Bucket) Capabilities() objectstore.Capabilities {
	return objectstore.Capabilities{ConditionalPut: true}
}

func check(ctx context.Context, op, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mem %s %s: %w", op, key, err)
	}
	if err := objectstore.ValidateKey(key); err != nil {
		return fmt.Errorf("mem %s: %w", op, err)
	}
	return nil
}

// Put reads the whole body, then stores it.
func (b *Bucket) Put(ctx context.Context, key string, r io.Reader, size int64, opts objectstore.PutOptions) error {
	if err := check(ctx, "put", key); err != nil {
		return err
	}
	if err := backend.CheckSize(size); err != nil {
		return fmt.Errorf("mem put %s: %w", key, err)
	}
	chunks, n, err := readChunks(backend.CtxReader{Ctx: ctx, R: backend.Body(r, size)}, size)
	if err != nil {
		return fmt.Errorf("mem put %s: read body: %w", key, err)
	}
	if err := backend.CheckCopied(n, size); err != nil {
		return fmt.Errorf("mem put %s: %w", key, err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	// Check ctx under the lock so a cancelled Put never becomes visible.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mem put %s: %w", key, err)
	}
	if _, ok := b.objects[key]; ok && opts.IfNotExists {
		return fmt.Errorf("mem put %s: %w", key, objectstore.ErrExists)
	}
	b.objects[key] = object{chunks: chunks, size: n, modTime: b.now()}
	return nil
}

// readChunks reads r to EOF (or size bytes, when known) into fresh chunks
// of at most chunkSize bytes; for an unknown size they grow from 4 KiB.
func readChunks(r io.Reader, size int64) ([][]byte, int64, error) {
	var (
		chunks [][]byte
		n      int64
		next   = 4 << 10
	)
	for {
		want := next
		if size >= 0 {
			want = int(min(size-n, chunkSize))
			if want == 0 {
				return chunks, n, nil
			}
		} else {
			next = min(2*next, chunkSize)
		}
		buf := make([]byte, want)
		k, err := io.ReadFull(r, buf)
		if k > 0 {
			if k < want/2 {
				buf = slices.Clone(buf[:k]) // do not pin a mostly empty chunk
			}
			chunks = append(chunks, buf[:k:k])
			n += int64(k)
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return chunks, n, nil
		case err != nil:
			return nil, n, err
		}
	}
}

func (b *Bucket) lookup(op, key string) (object, error) {
	b.mu.RLock()
	o, ok := b.objects[key]
	b.mu.RUnlock()
	if !ok {
		return object{}, fmt.Errorf("mem %s %s: %w", op, key, objectstore.ErrNotExist)
	}
	return o, nil
}

// Get opens the object.
func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := check(ctx, "get", key); err != nil {
		return nil, err
	}
	return b.get(ctx, "get", key, 0, -1, false)
}

// GetRange opens part of the object.
func (b *Bucket) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := check(ctx, "get range", key); err != nil {
		return nil, err
	}
	if err := backend.CheckRange(offset, length); err != nil {
		return nil, fmt.Errorf("mem get range %s: %w", key, err)
	}
	return b.get(ctx, "get range", key, offset, length, true)
}

func (b *Bucket) get(ctx context.Context, op, key string, offset, length int64, ranged bool) (io.ReadCloser, error) {
	o, err := b.lookup(op, key)
	if err != nil {
		return nil, err
	}
	if ranged && offset >= o.size {
		return nil, fmt.Errorf("mem %s %s: offset %d of %d-byte object: %w", op, key, offset, o.size, objectstore.ErrInvalidRange)
	}
	if length < 0 || length > o.size-offset {
		length = o.size - offset
	}
	// Views of the stored chunks; Read copies out of them.
	var view [][]byte
	for _, c := range o.chunks {
		if length == 0 {
			break
		}
		if offset >= int64(len(c)) {
			offset -= int64(len(c))
			continue
		}
		c = c[offset:]
		offset = 0
		if int64(len(c)) > length {
			c = c[:length]
		}
		view = append(view, c)
		length -= int64(len(c))
	}
	return &reader{ctx: ctx, chunks: view}, nil
}

// reader copies an object out of its immutable chunks. It has no WriteTo,
// so stored memory never reaches a caller.
type reader struct {
	ctx    context.Context
	chunks [][]byte
}

func (r *reader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && len(r.chunks) > 0 {
		k := copy(p[n:], r.chunks[0])
		n += k
		if r.chunks[0] = r.chunks[0][k:]; len(r.chunks[0]) == 0 {
			r.chunks = r.chunks[1:]
		}
	}
	return n, nil
}

func (r *reader) Close() error {
	r.chunks = nil
	return nil
}

// Stat returns the object's metadata.
func (b *Bucket) Stat(ctx context.Context, key string) (objectstore.ObjectInfo, error) {
	if err := check(ctx, "stat", key); err != nil {
		return objectstore.ObjectInfo{}, err
	}
	o, err := b.lookup("stat", key)
	if err != nil {
		return objectstore.ObjectInfo{}, err
	}
	return objectstore.ObjectInfo{Key: key, Size: o.size, LastModified: o.modTime}, nil
}

// List calls fn for a snapshot of the keys under prefix, in order. fn may
// call the bucket.
func (b *Bucket) List(ctx context.Context, prefix string, fn func(objectstore.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mem list %s: %w", prefix, err)
	}
	b.mu.RLock()
	infos := make([]objectstore.ObjectInfo, 0)
	for k, o := range b.objects {
		if strings.HasPrefix(k, prefix) {
			infos = append(infos, objectstore.ObjectInfo{Key: k, Size: o.size, LastModified: o.modTime})
		}
	}
	b.mu.RUnlock()
	slices.SortFunc(infos, func(a, b objectstore.ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("mem list %s: %w", prefix, err)
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes key.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	if err := check(ctx, "delete", key); err != nil {
		return err
	}
	b.mu.Lock()
	delete(b.objects, key)
	b.mu.Unlock()
	return nil
}
