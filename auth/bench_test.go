package auth

import (
	"context"
	"testing"

	"silt/metadata"
)

type oneKey struct{ key metadata.Key }

func (o oneKey) GetKey(_ context.Context, id string) (metadata.Key, error) {
	if id != o.key.ID {
		return metadata.Key{}, metadata.ErrKeyNotFound
	}
	return o.key, nil
}

func (o oneKey) GetKeyByName(context.Context, string) (metadata.Key, error) {
	return metadata.Key{}, metadata.ErrKeyNotFound
}

func (o oneKey) TouchKeys(context.Context, []string) error { return nil }

// BenchmarkAuthenticateAuthorize is the per-request cost of a cached key:
// parse, hash, compare, expiry, and an ACL walk of three entries.
func BenchmarkAuthenticateAuthorize(b *testing.B) {
	token, id, err := NewToken()
	if err != nil {
		b.Fatal(err)
	}
	a, err := New(DefaultConfig(), Deps{Store: oneKey{metadata.Key{ID: id, Name: "bench", SecretHash: HashToken(token), ACLs: []metadata.KeyACL{
		{ResourceType: "topic", PatternType: "literal", Name: "other", Operations: []string{"consume"}},
		{ResourceType: "group", PatternType: "prefix", Name: "bench-", Operations: []string{"consume"}},
		{ResourceType: "topic", PatternType: "prefix", Name: "bench-", Operations: []string{"produce", "consume"}},
	}}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		p, err := a.Authenticate(ctx, token)
		if err != nil {
			b.Fatal(err)
		}
		if err := Authorize(p, OpProduce, ResourceTopic, "bench-1"); err != nil {
			b.Fatal(err)
		}
	}
}
