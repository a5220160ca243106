package file_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"silt/objectstore"
	"silt/objectstore/file"
	"silt/objectstore/objectstoretest"
)

func newBucket(t *testing.T, root string) *file.Bucket {
	t.Helper()
	cfg := file.DefaultConfig()
	cfg.Root = root
	b, err := file.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

// tempFiles returns the temporary files under root.
func tempFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".silt-tmp-") {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestConformance(t *testing.T) {
	t.Parallel()
	objectstoretest.Run(t, func(t *testing.T) objectstore.Bucket {
		root := t.TempDir()
		t.Cleanup(func() {
			// Failed and cancelled Puts clean up after themselves.
			if left := tempFiles(t, root); len(left) > 0 {
				t.Errorf("temporary files left behind: %v", left)
			}
		})
		return newBucket(t, root)
	})
}

func TestMissingBucket(t *testing.T) {
	t.Parallel()
	objectstoretest.RunMissingBucket(t, newBucket(t, filepath.Join(t.TempDir(), "missing")))
}

func TestRootRemovedLater(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "root")
	cfg := file.DefaultConfig()
	cfg.Root, cfg.Create = root, true
	b, err := file.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Put(t.Context(), "a/b", strings.NewReader("x"), 1, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	objectstoretest.RunMissingBucket(t, b)
}

func TestNew(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	if _, err := file.New(ctx, file.Config{}); err == nil {
		t.Fatal("New accepted an empty root")
	}
	bad := file.DefaultConfig()
	bad.Root, bad.FileMode = t.TempDir(), 0o400
	if err := bad.Validate(); err == nil {
		t.Fatal("Validate accepted a read-only file mode")
	}
	// Create makes the root and its parents.
	root := filepath.Join(t.TempDir(), "x", "y")
	cfg := file.DefaultConfig()
	cfg.Root, cfg.Create = root, true
	b, err := file.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		t.Fatalf("root not created: %v", err)
	}
	if b.Name() != "file://"+filepath.ToSlash(root) {
		t.Fatalf("Name = %q", b.Name())
	}
	// A root that is a file is refused.
	f := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Root = f
	if _, err := file.New(ctx, cfg); err == nil {
		t.Fatal("New accepted a file as root")
	}
	// A cancelled ctx fails New.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := file.New(cctx, file.Config{Root: t.TempDir(), FileMode: 0o644, DirMode: 0o755}); !errors.Is(err, context.Canceled) {
		t.Fatalf("New with cancelled ctx: %v", err)
	}
}

func TestLayout(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	root := t.TempDir()
	b := newBucket(t, root)
	if err := b.Put(ctx, "a/b/c", strings.NewReader("data"), 4, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, "a", "b", "c"))
	if err != nil || string(got) != "data" {
		t.Fatalf("file content %q, %v", got, err)
	}
	fi, err := os.Stat(filepath.Join(root, "a", "b", "c"))
	if err != nil || fi.Mode().Perm()&0o600 != 0o600 {
		t.Fatalf("file mode %v, %v", fi.Mode(), err)
	}
	// An object cannot also be a directory, and vice versa.
	if err := b.Put(ctx, "a/b/c/d", strings.NewReader("x"), 1, objectstore.PutOptions{}); !errors.Is(err, objectstore.ErrInvalidKey) {
		t.Fatalf("Put under an object: %v, want ErrInvalidKey", err)
	}
	if err := b.Put(ctx, "a/b", strings.NewReader("x"), 1, objectstore.PutOptions{}); !errors.Is(err, objectstore.ErrInvalidKey) {
		t.Fatalf("Put over a directory: %v, want ErrInvalidKey", err)
	}
	if err := b.Put(ctx, "a/b", strings.NewReader("x"), 1, objectstore.PutOptions{IfNotExists: true}); err == nil {
		t.Fatal("conditional Put over a directory succeeded")
	}
	// Reserved names are rejected.
	if err := b.Put(ctx, "a/.silt-tmp-x", strings.NewReader("x"), 1, objectstore.PutOptions{}); !errors.Is(err, objectstore.ErrInvalidKey) {
		t.Fatalf("Put of a reserved name: %v, want ErrInvalidKey", err)
	}
	// A stray temporary file (say, from a crash) is not listed.
	if err := os.WriteFile(filepath.Join(root, "a", ".silt-tmp-crashed"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := b.List(ctx, "", func(info objectstore.ObjectInfo) error {
		keys = append(keys, info.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(keys, ",") != "a/b/c" {
		t.Fatalf("List = %v", keys)
	}
	// Delete prunes the directories it empties, and stops at one in use.
	if err := b.Delete(ctx, "a/b/c"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "a", "b")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("empty directory a/b left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "a")); err != nil {
		t.Fatalf("directory a (holding a stray file) removed: %v", err)
	}
	if _, err := os.Stat(root); err != nil {
		t.Fatalf("root removed: %v", err)
	}
}

// TestPutDeleteRace runs Puts and Deletes of keys in one directory at
// once: Delete's pruning of empty directories must not break Puts.
func TestPutDeleteRace(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := newBucket(t, t.TempDir())
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				key := "d/e/" + string(rune('a'+w))
				if err := b.Put(ctx, key, strings.NewReader("x"), 1, objectstore.PutOptions{}); err != nil {
					t.Errorf("Put %s (%d): %v", key, i, err)
					return
				}
				if err := b.Delete(ctx, key); err != nil {
					t.Errorf("Delete %s: %v", key, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
