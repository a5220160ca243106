package objectstore

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// WithPrefix returns a Bucket that stores key k of its own as prefix+"/"+k
// in b, and lists only keys under that prefix, with the prefix stripped.
// Leading and trailing slashes of prefix are ignored; an empty prefix
// returns b itself. An invalid prefix (say "..") makes every keyed call
// fail with ErrInvalidKey.
func WithPrefix(b Bucket, prefix string) Bucket {
	p := strings.Trim(prefix, "/")
	if p == "" {
		return b
	}
	return &prefixed{b: b, prefix: p + "/"}
}

type prefixed struct {
	b      Bucket
	prefix string // ends in "/"
}

func (p *prefixed) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) error {
	if err := p.check("put", key); err != nil {
		return err
	}
	return p.b.Put(ctx, p.prefix+key, r, size, opts)
}

func (p *prefixed) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := p.check("get", key); err != nil {
		return nil, err
	}
	return p.b.Get(ctx, p.prefix+key)
}

func (p *prefixed) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := p.check("get range", key); err != nil {
		return nil, err
	}
	return p.b.GetRange(ctx, p.prefix+key, offset, length)
}

func (p *prefixed) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	if err := p.check("stat", key); err != nil {
		return ObjectInfo{}, err
	}
	info, err := p.b.Stat(ctx, p.prefix+key)
	info.Key = strings.TrimPrefix(info.Key, p.prefix)
	return info, err
}

func (p *prefixed) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	return p.b.List(ctx, p.prefix+prefix, func(info ObjectInfo) error {
		info.Key = strings.TrimPrefix(info.Key, p.prefix)
		return fn(info)
	})
}

func (p *prefixed) Delete(ctx context.Context, key string) error {
	if err := p.check("delete", key); err != nil {
		return err
	}
	return p.b.Delete(ctx, p.prefix+key)
}

func (p *prefixed) Capabilities() Capabilities { return p.b.Capabilities() }

func (p *prefixed) Name() string {
	return strings.TrimSuffix(p.b.Name(), "/") + "/" + strings.TrimSuffix(p.prefix, "/")
}

// check validates the key on its own, so that errors name the caller's key
// and a key such as "" cannot address the prefix itself.
func (p *prefixed) check(op, key string) error {
	if err := ValidateKey(key); err != nil {
		return fmt.Errorf("%s %s: %w", p.Name(), op, err)
	}
	return nil
}
