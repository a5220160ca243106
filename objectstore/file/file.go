package file

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"silt/objectstore"
	"silt/objectstore/internal/backend"
)

var _ objectstore.Bucket = (*Bucket)(nil)

// tmpPrefix starts the name of every temporary file.
const tmpPrefix = ".silt-tmp-"

// Config configures a directory bucket.
type Config struct {
	// Root is the directory holding the objects. Required.
	Root string
	// Create makes New create Root (and its parents) when missing.
	Create bool
	// FileMode and DirMode are the permissions of new files and
	// directories (before the umask).
	FileMode fs.FileMode
	DirMode  fs.FileMode
}

// DefaultConfig returns modes 0o644 and 0o755 and no Root.
func DefaultConfig() Config {
	return Config{FileMode: 0o644, DirMode: 0o755}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Root == "" {
		return errors.New("file config: root is required")
	}
	if c.FileMode&^fs.ModePerm != 0 || c.DirMode&^fs.ModePerm != 0 {
		return fmt.Errorf("file config: modes %v, %v must be permission bits only", c.FileMode, c.DirMode)
	}
	if c.FileMode&0o600 != 0o600 || c.DirMode&0o700 != 0o700 {
		return fmt.Errorf("file config: modes %v, %v must give the owner read and write (and search on directories)", c.FileMode, c.DirMode)
	}
	return nil
}

// Bucket is a directory of objects.
type Bucket struct {
	root     string
	fileMode fs.FileMode
	dirMode  fs.FileMode
}

// New returns a Bucket on cfg.Root, creating the directory if cfg.Create.
// Without Create a missing Root is reported by every call, not by New.
func New(ctx context.Context, cfg Config) (*Bucket, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("file: %w", err)
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("file: root %s: %w", cfg.Root, err)
	}
	if cfg.Create {
		if err := os.MkdirAll(root, cfg.DirMode); err != nil {
			return nil, fmt.Errorf("file: create root: %w", err)
		}
	}
	if fi, err := os.Stat(root); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("file: root %s is not a directory", root)
	}
	return &Bucket{root: root, fileMode: cfg.FileMode, dirMode: cfg.DirMode}, nil
}

// Name returns "file://" and the root directory.
func (b *Bucket) Name() string { return "file://" + filepath.ToSlash(b.root) }

// Capabilities reports conditional put support.
func (b *Bucket) Capabilities() objectstore.Capabilities {
	return objectstore.Capabilities{ConditionalPut: true}
}

// start checks ctx and key, and returns the object's path.
func (b *Bucket) start(ctx context.Context, op, key string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("file %s %s: %w", op, key, err)
	}
	if err := objectstore.ValidateKey(key); err != nil {
		return "", fmt.Errorf("file %s: %w", op, err)
	}
	for seg := range strings.SplitSeq(key, "/") {
		if strings.HasPrefix(seg, tmpPrefix) {
			return "", fmt.Errorf("file %s: key %q: segments starting with %q are reserved: %w", op, key, tmpPrefix, objectstore.ErrInvalidKey)
		}
	}
	return filepath.Join(b.root, filepath.FromSlash(key)), nil
}

// missing maps a not-found (or not-a-directory) error for key to
// ErrBucketNotExist when the root is gone, else to ErrNotExist.
func (b *Bucket) missing(op, key string, err error) error {
	if _, serr := os.Stat(b.root); errors.Is(serr, fs.ErrNotExist) {
		return fmt.Errorf("file %s %s: root %s: %w", op, key, b.root, objectstore.ErrBucketNotExist)
	}
	return fmt.Errorf("file %s %s: %w: %w", op, key, objectstore.ErrNotExist, err)
}

func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// Put writes a temporary file beside the key, fsyncs it, and renames or
// (conditionally) links it into place.
func (b *Bucket) Put(ctx context.Context, key string, r io.Reader, size int64, opts objectstore.PutOptions) (err error) {
	path, err := b.start(ctx, "put", key)
	if err != nil {
		return err
	}
	if err := backend.CheckSize(size); err != nil {
		return fmt.Errorf("file put %s: %w", key, err)
	}
	dir := filepath.Dir(path)
	tmp, err := b.createTemp(key, dir)
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	defer func() {
		if tmp != nil {
			tmp.Close()
		}
		os.Remove(tmpName) // gone already after a rename; harmless
	}()
	n, err := io.Copy(tmp, backend.CtxReader{Ctx: ctx, R: backend.Body(r, size)})
	if err != nil {
		return fmt.Errorf("file put %s: write: %w", key, err)
	}
	if err := backend.CheckCopied(n, size); err != nil {
		return fmt.Errorf("file put %s: %w", key, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("file put %s: fsync: %w", key, err)
	}
	err = tmp.Close()
	tmp = nil
	if err != nil {
		return fmt.Errorf("file put %s: close: %w", key, err)
	}
	// Last chance to honour cancellation before the object appears.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("file put %s: %w", key, err)
	}
	if opts.IfNotExists {
		if err := os.Link(tmpName, path); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("file put %s: %w", key, objectstore.ErrExists)
			}
			return fmt.Errorf("file put %s: link: %w", key, err)
		}
	} else {
		if fi, err := os.Lstat(path); err == nil && fi.IsDir() {
			return fmt.Errorf("file put %s: key is a directory of other objects: %w", key, objectstore.ErrInvalidKey)
		}
		if err := os.Rename(tmpName, path); err != nil {
			return fmt.Errorf("file put %s: rename: %w", key, err)
		}
	}
	if err := syncDir(dir); err != nil && !isNotExist(err) {
		// Not existing means a concurrent Delete of this key already
		// removed the object and its directory: the Put itself completed.
		return fmt.Errorf("file put %s: %w", key, err)
	}
	return nil
}

// createTemp creates the key's directories and a temporary file in the
// last one. A concurrent Delete may remove an empty directory between the
// two steps; then it tries again.
func (b *Bucket) createTemp(key, dir string) (*os.File, error) {
	var lastErr error
	for range 8 {
		if err := b.mkdirs(key, dir); err != nil {
			return nil, err
		}
		var rnd [8]byte
		_, _ = rand.Read(rnd[:])
		name := filepath.Join(dir, tmpPrefix+hex.EncodeToString(rnd[:]))
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, b.fileMode)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("file put %s: create temp: %w", key, err)
		}
		lastErr = err
	}
	return nil, fmt.Errorf("file put %s: create temp: %w", key, lastErr)
}

// mkdirs creates dir and its missing parents below the root, fsyncing each
// parent that gained an entry.
func (b *Bucket) mkdirs(key, dir string) error {
	rel, err := filepath.Rel(b.root, dir)
	if err != nil {
		return fmt.Errorf("file put %s: %w", key, err)
	}
	if _, err := os.Stat(b.root); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("file put %s: root %s: %w", key, b.root, objectstore.ErrBucketNotExist)
		}
		return fmt.Errorf("file put %s: %w", key, err)
	}
	if rel == "." {
		return nil
	}
	cur := b.root
	for seg := range strings.SplitSeq(rel, string(filepath.Separator)) {
		parent := cur
		cur = filepath.Join(cur, seg)
		err := os.Mkdir(cur, b.dirMode)
		switch {
		case err == nil:
			if err := syncDir(parent); err != nil {
				if isNotExist(err) {
					// A concurrent Delete removed the empty directories
					// just made; the caller retries.
					return nil
				}
				return fmt.Errorf("file put %s: %w", key, err)
			}
		case errors.Is(err, fs.ErrExist):
			if fi, serr := os.Stat(cur); serr == nil && !fi.IsDir() {
				return fmt.Errorf("file put %s: %s is an object, not a directory: %w", key, filepath.ToSlash(mustRel(b.root, cur)), objectstore.ErrInvalidKey)
			}
		case errors.Is(err, fs.ErrNotExist):
			// The root or a parent vanished; the caller retries or reports.
			if _, serr := os.Stat(b.root); errors.Is(serr, fs.ErrNotExist) {
				return fmt.Errorf("file put %s: root %s: %w", key, b.root, objectstore.ErrBucketNotExist)
			}
			return nil
		default:
			return fmt.Errorf("file put %s: mkdir: %w", key, err)
		}
	}
	return nil
}

func mustRel(root, path string) string {
	rel, err := filepath.Rel(root, path)
	if err != nil {
		return path
	}
	return rel
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir for fsync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}

// open opens key's file, refusing directories.
func (b *Bucket) open(ctx context.Context, op, key string) (*os.File, int64, error) {
	path, err := b.start(ctx, op, key)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		if isNotExist(err) {
			return nil, 0, b.missing(op, key, err)
		}
		return nil, 0, fmt.Errorf("file %s %s: %w", op, key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("file %s %s: %w", op, key, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("file %s %s: not a regular file: %w", op, key, objectstore.ErrNotExist)
	}
	return f, fi.Size(), nil
}

// Get opens the file. Reads fail once ctx is done.
func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	f, _, err := b.open(ctx, "get", key)
	if err != nil {
		return nil, err
	}
	return backend.CtxReadCloser{Ctx: ctx, R: f}, nil
}

// GetRange opens a section of the file.
func (b *Bucket) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if _, err := b.start(ctx, "get range", key); err != nil {
		return nil, err
	}
	if err := backend.CheckRange(offset, length); err != nil {
		return nil, fmt.Errorf("file get range %s: %w", key, err)
	}
	f, size, err := b.open(ctx, "get range", key)
	if err != nil {
		return nil, err
	}
	if offset >= size {
		f.Close()
		return nil, fmt.Errorf("file get range %s: offset %d of %d-byte object: %w", key, offset, size, objectstore.ErrInvalidRange)
	}
	if length < 0 || length > size-offset {
		length = size - offset
	}
	return backend.CtxReadCloser{Ctx: ctx, R: sectionCloser{io.NewSectionReader(f, offset, length), f}}, nil
}

type sectionCloser struct {
	*io.SectionReader
	f *os.File
}

func (s sectionCloser) Close() error { return s.f.Close() }

// Stat returns the file's size and modification time.
func (b *Bucket) Stat(ctx context.Context, key string) (objectstore.ObjectInfo, error) {
	path, err := b.start(ctx, "stat", key)
	if err != nil {
		return objectstore.ObjectInfo{}, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		if isNotExist(err) {
			return objectstore.ObjectInfo{}, b.missing("stat", key, err)
		}
		return objectstore.ObjectInfo{}, fmt.Errorf("file stat %s: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		return objectstore.ObjectInfo{}, fmt.Errorf("file stat %s: not a regular file: %w", key, objectstore.ErrNotExist)
	}
	return objectstore.ObjectInfo{Key: key, Size: fi.Size(), LastModified: fi.ModTime()}, nil
}

// List walks the directory tree in key order: within a directory, entries
// are sorted by name with a "/" appended to directories, which is the
// order of the keys beneath them.
func (b *Bucket) List(ctx context.Context, prefix string, fn func(objectstore.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("file list %s: %w", prefix, err)
	}
	if _, err := os.Stat(b.root); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("file list %s: root %s: %w", prefix, b.root, objectstore.ErrBucketNotExist)
		}
		return fmt.Errorf("file list %s: %w", prefix, err)
	}
	return b.walk(ctx, prefix, "", fn)
}

type entry struct {
	key   string // key of a file, or key prefix ("dir/") of a directory
	isDir bool
}

// walk lists directory dirKey ("" or "a/b/") under the root.
func (b *Bucket) walk(ctx context.Context, prefix, dirKey string, fn func(objectstore.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("file list %s: %w", prefix, err)
	}
	dirPath := filepath.Join(b.root, filepath.FromSlash(dirKey))
	des, err := os.ReadDir(dirPath)
	if err != nil {
		if isNotExist(err) && dirKey != "" {
			return nil // removed by a concurrent Delete
		}
		return fmt.Errorf("file list %s: %w", prefix, err)
	}
	entries := make([]entry, 0, len(des))
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, tmpPrefix) {
			continue
		}
		e := entry{key: dirKey + name, isDir: de.IsDir()}
		if e.isDir {
			e.key += "/"
			// Descend only where keys with the prefix can be.
			if !strings.HasPrefix(e.key, prefix) && !strings.HasPrefix(prefix, e.key) {
				continue
			}
		} else if !de.Type().IsRegular() || !strings.HasPrefix(e.key, prefix) {
			continue
		}
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(x, y entry) int { return strings.Compare(x.key, y.key) })
	for _, e := range entries {
		if e.isDir {
			if err := b.walk(ctx, prefix, e.key, fn); err != nil {
				return err
			}
			continue
		}
		fi, err := os.Stat(filepath.Join(b.root, filepath.FromSlash(e.key)))
		if err != nil {
			if isNotExist(err) {
				continue // deleted since ReadDir
			}
			return fmt.Errorf("file list %s: %w", prefix, err)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("file list %s: %w", prefix, err)
		}
		if err := fn(objectstore.ObjectInfo{Key: e.key, Size: fi.Size(), LastModified: fi.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes the file and then any directories it leaves empty.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	path, err := b.start(ctx, "delete", key)
	if err != nil {
		return err
	}
	fi, err := os.Lstat(path)
	if err == nil && fi.IsDir() {
		return nil // not an object; nothing to delete
	}
	if err := os.Remove(path); err != nil {
		if isNotExist(err) {
			if _, serr := os.Stat(b.root); errors.Is(serr, fs.ErrNotExist) {
				return fmt.Errorf("file delete %s: root %s: %w", key, b.root, objectstore.ErrBucketNotExist)
			}
			return nil
		}
		return fmt.Errorf("file delete %s: %w", key, err)
	}
	// Prune empty parents; a failure (not empty, or raced with a Put)
	// stops it. Then fsync the deepest directory that changed and remains.
	dir := filepath.Dir(path)
	for dir != b.root && strings.HasPrefix(dir, b.root) && os.Remove(dir) == nil {
		dir = filepath.Dir(dir)
	}
	if err := syncDir(dir); err != nil && !isNotExist(err) {
		return fmt.Errorf("file delete %s: %w", key, err)
	}
	return nil
}
