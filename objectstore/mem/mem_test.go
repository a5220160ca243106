package mem_test

import (
	"bytes"
	"io"
	"testing"

	"silt/objectstore"
	"silt/objectstore/mem"
	"silt/objectstore/objectstoretest"
)

func newBucket(t *testing.T) objectstore.Bucket {
	t.Helper()
	b, err := mem.New(t.Context(), mem.DefaultConfig())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

func TestConformance(t *testing.T) {
	t.Parallel()
	objectstoretest.Run(t, newBucket)
}

func TestCopies(t *testing.T) {
	t.Parallel()
	b := newBucket(t)
	ctx := t.Context()
	data := []byte("hello")
	if err := b.Put(ctx, "k", bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	data[0] = 'J' // the caller reuses its buffer
	read := func() []byte {
		rc, err := b.Get(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		got, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	got := read()
	if string(got) != "hello" {
		t.Fatalf("stored data changed with the caller's buffer: %q", got)
	}
	got[0] = 'X' // the caller scribbles on what it read
	if again := read(); string(again) != "hello" {
		t.Fatalf("stored data changed with a reader's buffer: %q", again)
	}
	// An open reader keeps the version it opened.
	rc, err := b.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := b.Put(ctx, "k", bytes.NewReader([]byte("world")), 5, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if old, err := io.ReadAll(rc); err != nil || string(old) != "hello" {
		t.Fatalf("open reader read %q, %v after an overwrite", old, err)
	}
	if now := read(); string(now) != "world" {
		t.Fatalf("after overwrite: %q", now)
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	if err := (mem.Config{Name: "a/b"}).Validate(); err == nil {
		t.Fatal("Validate accepted a name with a slash")
	}
	b, err := mem.New(t.Context(), mem.Config{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Name() != "mem://x" {
		t.Fatalf("Name = %q", b.Name())
	}
}
