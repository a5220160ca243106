package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"silt/auth"
	"silt/metadata"
	"silt/metadata/metadatatest"
)

func setup(t *testing.T) (*metadata.Store, *auth.Keys, *auth.Authenticator) {
	t.Helper()
	store := metadatatest.New(t)
	authn, err := auth.New(auth.DefaultConfig(), auth.Deps{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	return store, auth.NewKeys(store), authn
}

func TestKeysLifecycle(t *testing.T) {
	ctx := context.Background()
	_, keys, authn := setup(t)
	acl, _ := auth.ParseACL("produce:topic:orders")
	k, token, err := keys.Create(ctx, auth.KeySpec{Name: "app", ACLs: []auth.ACL{acl}, Quota: auth.Quota{RequestsPerSec: 5}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := authn.Authenticate(ctx, token)
	if err != nil || p.KeyID != k.ID || p.Name != "app" || p.Admin || !p.Allows(auth.OpProduce, auth.ResourceTopic, "orders") || p.Quota.RequestsPerSec != 5 {
		t.Fatalf("authenticate: %+v, %v", p, err)
	}
	// A live name is unique.
	if _, _, err := keys.Create(ctx, auth.KeySpec{Name: "app", Admin: true}); !errors.Is(err, metadata.ErrKeyExists) {
		t.Fatalf("second live key named app: %v", err)
	}
	// The wrong secret of a real id, an unknown id, junk.
	other, _, _ := auth.NewToken()
	forged := token[:len(token)-4] + "0000"
	if forged == token {
		forged = token[:len(token)-4] + "1111"
	}
	for tok, want := range map[string]error{forged: auth.ErrInvalidToken, other: auth.ErrInvalidToken, "silt_nope": auth.ErrMalformedKey, "": auth.ErrNoKey} {
		if _, err := authn.Authenticate(ctx, tok); !errors.Is(err, want) || !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("token %q: %v, want %v", tok, err, want)
		}
	}
	// The client-certificate name maps to the live key.
	if p, err := authn.AuthenticateName(ctx, "app"); err != nil || p.KeyID != k.ID {
		t.Fatalf("by name: %+v %v", p, err)
	}
	if _, err := authn.AuthenticateName(ctx, "nobody"); !errors.Is(err, auth.ErrUnknownName) {
		t.Fatalf("unknown name: %v", err)
	}

	// ACL change: a watcher hears it once the key is invalidated.
	seen := make(chan *auth.Principal, 4)
	stop := authn.Watch(k.ID, func(p *auth.Principal) { seen <- p })
	defer stop()
	acl2, _ := auth.ParseACL("consume:topic:orders")
	if _, err := keys.SetACLs(ctx, k.ID, []auth.ACL{acl2}); err != nil {
		t.Fatal(err)
	}
	authn.Invalidate(k.ID)
	if p := recv(t, seen); p == nil || p.Allows(auth.OpProduce, auth.ResourceTopic, "orders") || !p.Allows(auth.OpConsume, auth.ResourceTopic, "orders") {
		t.Fatalf("after the ACL change: %+v", p)
	}
	// Revocation: the watcher hears nil and the key stops working.
	if _, err := keys.Revoke(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	authn.Invalidate(k.ID)
	if p := recv(t, seen); p != nil {
		t.Fatalf("after revocation: %+v", p)
	}
	if _, err := authn.Authenticate(ctx, token); !errors.Is(err, auth.ErrRevoked) {
		t.Fatalf("revoked: %v", err)
	}
	if _, err := authn.AuthenticateName(ctx, "app"); !errors.Is(err, auth.ErrUnknownName) {
		t.Fatalf("a revoked key's name: %v", err)
	}
	// The name is free again.
	if _, _, err := keys.Create(ctx, auth.KeySpec{Name: "app", Admin: true}); err != nil {
		t.Fatal(err)
	}
	list, err := keys.List(ctx)
	if err != nil || len(list) != 2 || list[0].RevokedAt == nil || list[1].RevokedAt != nil {
		t.Fatalf("list: %+v %v", list, err)
	}
	if _, err := keys.SetACLs(ctx, k.ID, nil); !errors.Is(err, metadata.ErrKeyNotFound) {
		t.Fatalf("ACLs of a revoked key: %v", err)
	}
}

// Without any notification, a revoked key stops working within the TTL.
func TestRevocationWithoutNotificationWithinTTL(t *testing.T) {
	ctx := context.Background()
	store, keys, _ := setup(t)
	cfg := auth.DefaultConfig()
	cfg.CacheTTL = 200 * time.Millisecond
	authn, err := auth.New(cfg, auth.Deps{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	k, token, err := keys.Create(ctx, auth.KeySpec{Name: "short", Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := authn.Authenticate(ctx, token); err != nil {
		t.Fatal(err)
	}
	var revoked atomic.Bool
	stop := authn.Watch(k.ID, func(p *auth.Principal) {
		if p == nil {
			revoked.Store(true)
		}
	})
	defer stop()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go authn.Run(runCtx)
	if _, err := keys.Revoke(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := authn.Authenticate(ctx, token)
		if errors.Is(err, auth.ErrRevoked) && revoked.Load() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still accepted after 5s: %v (watcher told: %v)", err, revoked.Load())
		}
		<-tick.C
	}
}

func TestExpiredKey(t *testing.T) {
	ctx := context.Background()
	_, keys, authn := setup(t)
	// Making a key derives its SCRAM credentials (tens of milliseconds,
	// more under -race on a loaded machine): leave it time to be used.
	soon := time.Now().Add(2 * time.Second)
	_, token, err := keys.Create(ctx, auth.KeySpec{Name: "brief", Admin: true, ExpiresAt: &soon})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := authn.Authenticate(ctx, token); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, func() bool {
		_, err := authn.Authenticate(ctx, token)
		return errors.Is(err, auth.ErrExpired)
	})
}

func TestBootstrap(t *testing.T) {
	ctx := context.Background()
	_, keys, authn := setup(t)
	token, _, _ := auth.NewToken()
	for range 2 { // idempotent
		if err := keys.Bootstrap(ctx, token, "bootstrap-admin"); err != nil {
			t.Fatal(err)
		}
	}
	p, err := authn.Authenticate(ctx, token)
	if err != nil || !p.Admin {
		t.Fatalf("%+v %v", p, err)
	}
	if err := keys.Bootstrap(ctx, "not-a-key", "x"); !errors.Is(err, auth.ErrInvalidKey) {
		t.Fatalf("malformed: %v", err)
	}
	forged := token[:len(token)-1] + "0"
	if forged == token {
		forged = token[:len(token)-1] + "1"
	}
	if err := keys.Bootstrap(ctx, forged, "x"); !errors.Is(err, auth.ErrInvalidKey) {
		t.Fatalf("same id, other secret: %v", err)
	}
	if _, err := keys.Revoke(ctx, p.KeyID); err != nil {
		t.Fatal(err)
	}
	authn.Invalidate(p.KeyID) // no NOTIFY listener in this test
	if err := keys.Bootstrap(ctx, token, "bootstrap-admin"); !errors.Is(err, auth.ErrBootstrapRevoked) {
		t.Fatalf("a revoked bootstrap key came back: %v", err)
	}
	if _, err := authn.Authenticate(ctx, token); !errors.Is(err, auth.ErrRevoked) {
		t.Fatalf("after a second bootstrap: %v", err)
	}
}

func TestAuditAndProducerBinding(t *testing.T) {
	ctx := context.Background()
	store, keys, _ := setup(t)
	k, _, err := keys.Create(ctx, auth.KeySpec{Name: "ops", Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	a := auth.NewAuditor(store, nil, "agent-1")
	p := &auth.Principal{KeyID: k.ID, Name: k.Name, Admin: true}
	for i, action := range []string{auth.ActionTopicCreate, auth.ActionTopicDelete} {
		err := a.Record(ctx, auth.Event{Principal: p, Action: action, ResourceType: auth.ResourceTopic, ResourceName: "t",
			Source: "127.0.0.1:1234", Details: json.RawMessage(`{"n":` + string(rune('0'+i)) + `}`)})
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := a.List(ctx, 0, 10)
	if err != nil || len(got) != 2 || got[0].Action != auth.ActionTopicDelete || got[0].KeyName != "ops" || got[0].AgentID != "agent-1" || got[0].Source != "127.0.0.1:1234" {
		t.Fatalf("audit: %+v %v", got, err)
	}
	if older, err := a.List(ctx, got[0].ID, 10); err != nil || len(older) != 1 || older[0].ID != got[1].ID {
		t.Fatalf("page: %+v %v", older, err)
	}

	pid, err := store.NewProducerID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if owner, found, err := store.ProducerKey(ctx, pid); err != nil || !found || owner != "" {
		t.Fatalf("fresh producer: %q %v %v", owner, found, err)
	}
	if err := store.BindProducer(ctx, pid, k.ID); err != nil {
		t.Fatal(err)
	}
	if owner, _, _ := store.ProducerKey(ctx, pid); owner != k.ID {
		t.Fatalf("bound to %q", owner)
	}
	if err := store.BindProducer(ctx, pid, k.ID); !errors.Is(err, metadata.ErrInvalidArgument) {
		t.Fatalf("bound twice: %v", err)
	}
	if _, found, _ := store.ProducerKey(ctx, 42); found {
		t.Fatal("an unknown producer was found")
	}
}

func recv(t *testing.T, ch <-chan *auth.Principal) *auth.Principal {
	t.Helper()
	select {
	case p := <-ch:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no word from the watcher")
		return nil
	}
}

func waitUntil(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s", limit)
		}
		<-tick.C
	}
}
