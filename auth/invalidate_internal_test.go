package auth

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"silt/metadata"
)

// gatedStore answers GetKey with the key as it was when the call began,
// after the test opens the gate.
type gatedStore struct {
	k       metadata.Key
	revoked atomic.Bool
	calls   atomic.Int32
	started chan struct{} // closed when the first call began
	gate    chan struct{}
}

func (s *gatedStore) GetKey(_ context.Context, id string) (metadata.Key, error) {
	k := s.k
	if s.revoked.Load() {
		now := time.Now()
		k.RevokedAt = &now
	}
	if s.calls.Add(1) == 1 {
		close(s.started)
		<-s.gate
	}
	return k, nil
}
func (*gatedStore) GetKeyByName(context.Context, string) (metadata.Key, error) {
	return metadata.Key{}, metadata.ErrKeyNotFound
}
func (*gatedStore) TouchKeys(context.Context, []string) error { return nil }

// A lookup that read a key before its revocation was announced does not
// cache what it read: the next request reads the key again and is
// refused.
func TestInvalidateBeatsLookupInFlight(t *testing.T) {
	token, id, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	store := &gatedStore{k: metadata.Key{ID: id, Name: "app", SecretHash: HashToken(token)},
		started: make(chan struct{}), gate: make(chan struct{})}
	a, err := New(DefaultConfig(), Deps{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.Authenticate(context.Background(), token)
		done <- err
	}()
	select {
	case <-store.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the lookup never started")
	}
	store.revoked.Store(true)
	a.Invalidate(id) // the revocation's NOTIFY
	close(store.gate)
	if err := <-done; err != nil {
		t.Fatalf("the request under way: %v", err)
	}
	if _, err := a.Authenticate(context.Background(), token); !errors.Is(err, ErrRevoked) {
		t.Fatalf("the next request: %v, want ErrRevoked", err)
	}
}
