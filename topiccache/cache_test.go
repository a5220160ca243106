package topiccache_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"silt/metadata"
	"silt/topiccache"
)

type countingStore struct {
	calls atomic.Int32
	err   error
}

func (s *countingStore) GetTopic(_ context.Context, name string) (metadata.Topic, error) {
	n := s.calls.Add(1)
	if s.err != nil {
		return metadata.Topic{}, s.err
	}
	return metadata.Topic{Name: name, ID: int64(n)}, nil
}

func TestCacheServesUntilForgotten(t *testing.T) {
	st := &countingStore{}
	c := topiccache.New(st, time.Hour)
	ctx := t.Context()
	for range 3 {
		if tp, err := c.Get(ctx, "a"); err != nil || tp.ID != 1 {
			t.Fatalf("get: %+v %v", tp, err)
		}
	}
	if n := st.calls.Load(); n != 1 {
		t.Fatalf("%d lookups for three gets within the TTL", n)
	}
	c.Forget("a")
	if tp, _ := c.Get(ctx, "a"); tp.ID != 2 {
		t.Fatalf("after Forget: %+v, want a fresh lookup", tp)
	}
	c.Put(metadata.Topic{Name: "a", ID: 42})
	if tp, _ := c.Get(ctx, "a"); tp.ID != 42 {
		t.Fatalf("after Put: %+v", tp)
	}
}

func TestCacheExpiresAndKeepsNoErrors(t *testing.T) {
	st := &countingStore{}
	c := topiccache.New(st, time.Nanosecond)
	ctx := t.Context()
	first, _ := c.Get(ctx, "a")
	deadline := time.Now().Add(5 * time.Second)
	for {
		tp, err := c.Get(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		if tp.ID != first.ID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an expired entry was never looked up again")
		}
	}
	st.err = metadata.ErrTopicNotFound
	if _, err := c.Get(ctx, "b"); !errors.Is(err, metadata.ErrTopicNotFound) {
		t.Fatalf("err %v", err)
	}
	st.err = nil
	if _, err := c.Get(ctx, "b"); err != nil {
		t.Fatalf("an error was cached: %v", err)
	}
}
