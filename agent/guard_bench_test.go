package agent

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"silt/auth"
	"silt/batcher"
	"silt/binformat"
	"silt/metadata"
)

// keyStore is an in-memory auth.Store with one key.
type keyStore struct{ key metadata.Key }

func (k keyStore) GetKey(_ context.Context, id string) (metadata.Key, error) {
	if id != k.key.ID {
		return metadata.Key{}, metadata.ErrKeyNotFound
	}
	return k.key, nil
}

func (k keyStore) GetKeyByName(context.Context, string) (metadata.Key, error) {
	return metadata.Key{}, metadata.ErrKeyNotFound
}

func (k keyStore) TouchKeys(context.Context, []string) error { return nil }

// nullProducer acknowledges at once.
type nullProducer struct{}

func (nullProducer) Produce(_ context.Context, parts []batcher.Part) ([]batcher.Result, error) {
	return make([]batcher.Result, len(parts)), nil
}

// oneTopic describes one topic.
type oneTopic struct{ TopicStore }

func (oneTopic) GetTopic(_ context.Context, name string) (metadata.Topic, error) {
	return metadata.Topic{ID: 1, Name: name, Partitions: 16, Config: metadata.DefaultTopicConfig()}, nil
}

// BenchmarkProduceGuard measures what authentication and authorization
// add to a produce request (100 records of 1 KiB, binary), with the
// batcher taken out: the agent's own work on the request, parsing and
// partitioning, with and without the guard. The key is not an admin: it
// holds a prefix ACL among others, so the ACL walk is paid.
func BenchmarkProduceGuard(b *testing.B) {
	token, id, err := auth.NewToken()
	if err != nil {
		b.Fatal(err)
	}
	authn, err := auth.New(auth.DefaultConfig(), auth.Deps{Store: keyStore{metadata.Key{ID: id, Name: "bench", SecretHash: auth.HashToken(token),
		ACLs: []metadata.KeyACL{
			{ResourceType: "topic", PatternType: "literal", Name: "other", Operations: []string{"consume"}},
			{ResourceType: "group", PatternType: "prefix", Name: "bench-", Operations: []string{"consume"}},
			{ResourceType: "topic", PatternType: "prefix", Name: "bench-", Operations: []string{"produce", "consume"}},
		}}}})
	if err != nil {
		b.Fatal(err)
	}
	recs := make([]binformat.Record, 100)
	for i := range recs {
		recs[i] = binformat.Record{Partition: -1, Timestamp: -1, Value: bytes.Repeat([]byte{byte(i)}, 1024)}
	}
	body := binformat.AppendRequest(nil, &binformat.Request{Records: recs})
	for _, mode := range []string{AuthNone, AuthRequired} {
		b.Run(mode, func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.Auth = mode
			s, err := New(cfg, Deps{Topics: oneTopic{}, Producer: nullProducer{},
				Auth: AuthDeps{Authenticator: authn, Quotas: must(auth.NewQuotas(auth.DefaultQuotaConfig(), nil, nil, nil))}})
			if err != nil {
				b.Fatal(err)
			}
			h := s.Handler()
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				req := httptest.NewRequest(http.MethodPost, "/v1/topics/bench-1/records", bytes.NewReader(body))
				req.Header.Set("Content-Type", binformat.MediaType)
				req.Header.Set("Authorization", "Bearer "+token)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatal(fmt.Sprint(rec.Code, rec.Body))
				}
			}
		})
	}
}

// offsetsOnly answers offsets at once.
type offsetsOnly struct{ Fetcher }

func (offsetsOnly) Offsets(context.Context, int64, int32) (metadata.PartitionState, error) {
	return metadata.PartitionState{}, nil
}

// BenchmarkGuardCheapRequest is the guard's cost in absolute terms, on a
// request whose handler does almost nothing (a partition's offsets).
func BenchmarkGuardCheapRequest(b *testing.B) {
	token, id, err := auth.NewToken()
	if err != nil {
		b.Fatal(err)
	}
	authn, err := auth.New(auth.DefaultConfig(), auth.Deps{Store: keyStore{metadata.Key{ID: id, Name: "bench", SecretHash: auth.HashToken(token),
		ACLs: []metadata.KeyACL{{ResourceType: "topic", PatternType: "prefix", Name: "bench-", Operations: []string{"describe"}}}}}})
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{AuthNone, AuthRequired} {
		b.Run(mode, func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.Auth = mode
			s, err := New(cfg, Deps{Topics: oneTopic{}, Fetcher: offsetsOnly{}, Auth: AuthDeps{Authenticator: authn}})
			if err != nil {
				b.Fatal(err)
			}
			h := s.Handler()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				req := httptest.NewRequest(http.MethodGet, "/v1/topics/bench-1/partitions/0/offsets", nil)
				req.Header.Set("Authorization", "Bearer "+token)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatal(rec.Code, rec.Body)
				}
			}
		})
	}
}
