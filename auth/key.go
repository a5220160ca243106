package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"silt/metadata"
)

// A key is "silt_" + 16 hex digits of id + "_" + 64 hex digits of secret:
// the id is public (it names the key in listings, the audit log and
// revocations), the secret holds 256 random bits.
const (
	tokenPrefix = "silt_"
	idBytes     = 8
	secretBytes = 32
	// TokenLength is the length of every key.
	TokenLength = len(tokenPrefix) + 2*idBytes + 1 + 2*secretBytes
)

// NewToken returns a fresh random key and its id.
func NewToken() (token, id string, err error) {
	var b [idBytes + secretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("auth: random key: %w", err)
	}
	id = hex.EncodeToString(b[:idBytes])
	return tokenPrefix + id + "_" + hex.EncodeToString(b[idBytes:]), id, nil
}

// ParseToken returns the id of a well-formed key.
func ParseToken(token string) (id string, ok bool) {
	if len(token) != TokenLength || !strings.HasPrefix(token, tokenPrefix) {
		return "", false
	}
	rest := token[len(tokenPrefix):]
	id, secret := rest[:2*idBytes], rest[2*idBytes:]
	if secret[0] != '_' || !isLowerHex(id) || !isLowerHex(secret[1:]) {
		return "", false
	}
	return id, true
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// HashToken is what Postgres stores of a key: SHA-256 of the whole key. A
// fast hash is enough because the secret is 256 random bits, not a
// password: there is nothing to guess from a dictionary, and nobody can
// search 2^256 secrets, however fast each try is.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// Key is an API key as listed and shown: everything but the secret.
type Key struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Admin      bool       `json:"admin"`
	ACLs       []ACL      `json:"acls"`
	Quota      Quota      `json:"quota"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
}

func keyFrom(k metadata.Key) Key {
	out := Key{ID: k.ID, Name: k.Name, Admin: k.Admin, ACLs: make([]ACL, 0, len(k.ACLs)), ExpiresAt: k.ExpiresAt,
		CreatedAt: k.CreatedAt, LastUsedAt: k.LastUsedAt, RevokedAt: k.RevokedAt,
		Quota: Quota{ProduceBytesPerSec: k.ProduceBytesPerSec, FetchBytesPerSec: k.FetchBytesPerSec, RequestsPerSec: k.RequestsPerSec}}
	for _, a := range k.ACLs {
		ops := make([]Operation, len(a.Operations))
		for i, o := range a.Operations {
			ops[i] = Operation(o)
		}
		out.ACLs = append(out.ACLs, ACL{ResourceType: ResourceType(a.ResourceType), PatternType: PatternType(a.PatternType), Name: a.Name, Operations: ops})
	}
	return out
}

func aclsTo(acls []ACL) []metadata.KeyACL {
	out := make([]metadata.KeyACL, len(acls))
	for i, a := range acls {
		ops := make([]string, len(a.Operations))
		for j, o := range a.Operations {
			ops[j] = string(o)
		}
		out[i] = metadata.KeyACL{ResourceType: string(a.ResourceType), PatternType: string(a.PatternType), Name: a.Name, Operations: ops}
	}
	return out
}

// principal turns a live key into its principal.
func (k Key) principal() *Principal {
	p := &Principal{KeyID: k.ID, Name: k.Name, Admin: k.Admin, ACLs: k.ACLs, Quota: k.Quota}
	if k.ExpiresAt != nil {
		p.ExpiresAt = *k.ExpiresAt
	}
	return p
}

// KeySpec describes a key to create.
type KeySpec struct {
	Name      string
	Admin     bool
	ACLs      []ACL
	Quota     Quota
	ExpiresAt *time.Time
}

// maxKeyName bounds a key's name.
const maxKeyName = 200

// Validate checks the spec.
func (s KeySpec) Validate() error {
	if s.Name == "" || len(s.Name) > maxKeyName || strings.ContainsAny(s.Name, "\x00\n\r\t") {
		return fmt.Errorf("%w: a key needs a name of 1 to %d characters without control characters", ErrInvalidKey, maxKeyName)
	}
	if !s.Admin && len(s.ACLs) == 0 {
		return fmt.Errorf("%w: a key needs admin or at least one ACL entry", ErrInvalidKey)
	}
	for _, a := range s.ACLs {
		if err := a.Validate(); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidKey, err)
		}
	}
	if s.ExpiresAt != nil && !s.ExpiresAt.After(time.Now()) {
		return fmt.Errorf("%w: the expiry is in the past", ErrInvalidKey)
	}
	if err := s.Quota.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	return nil
}

// ErrInvalidKey: a key spec or ACL list is not valid.
var ErrInvalidKey = errors.New("auth: invalid key")

// ErrBootstrapRevoked: the bootstrap admin key exists and was revoked; it
// stays revoked.
var ErrBootstrapRevoked = errors.New("auth: the bootstrap admin key was revoked; it stays revoked (drop it from the configuration)")

// KeyStore is what managing keys needs of the metadata store.
type KeyStore interface {
	CreateKey(ctx context.Context, k metadata.Key) (metadata.Key, error)
	GetKey(ctx context.Context, id string) (metadata.Key, error)
	ListKeys(ctx context.Context) ([]metadata.Key, error)
	RevokeKey(ctx context.Context, id string) (metadata.Key, error)
	SetKeyACLs(ctx context.Context, id string, acls []metadata.KeyACL) (metadata.Key, error)
}

// Keys manages keys: create, list, revoke and replace ACLs. The store
// announces every change on metadata.KeysChannel.
type Keys struct{ store KeyStore }

// NewKeys returns a key manager over store.
func NewKeys(store KeyStore) *Keys { return &Keys{store: store} }

// Create makes a key and returns it with its secret token, which is
// never shown again.
func (k *Keys) Create(ctx context.Context, spec KeySpec) (Key, string, error) {
	if err := spec.Validate(); err != nil {
		return Key{}, "", err
	}
	token, id, err := NewToken()
	if err != nil {
		return Key{}, "", err
	}
	return k.insert(ctx, spec, token, id)
}

func (k *Keys) insert(ctx context.Context, spec KeySpec, token, id string) (Key, string, error) {
	scram, err := scramCredentials(token)
	if err != nil {
		return Key{}, "", err
	}
	row, err := k.store.CreateKey(ctx, metadata.Key{ID: id, Name: spec.Name, SecretHash: HashToken(token), Admin: spec.Admin,
		ProduceBytesPerSec: spec.Quota.ProduceBytesPerSec, FetchBytesPerSec: spec.Quota.FetchBytesPerSec,
		RequestsPerSec: spec.Quota.RequestsPerSec, ExpiresAt: spec.ExpiresAt, ACLs: aclsTo(spec.ACLs), SCRAM: scram})
	if err != nil {
		return Key{}, "", err
	}
	return keyFrom(row), token, nil
}

// Bootstrap makes sure token is a live admin key named name: it creates
// it when its id is unknown, and does nothing when it exists with the same
// secret. It refuses a token whose id exists with another secret, and
// never revives a revoked key.
func (k *Keys) Bootstrap(ctx context.Context, token, name string) error {
	id, ok := ParseToken(token)
	if !ok {
		return fmt.Errorf("%w: the bootstrap admin key is not of the form silt_<16 hex digits>_<64 hex digits> (make one with `silt keys generate`)", ErrInvalidKey)
	}
	existing, err := k.store.GetKey(ctx, id)
	switch {
	case err == nil:
		if !hashEqual(existing.SecretHash, HashToken(token)) {
			return fmt.Errorf("%w: the bootstrap admin key's id is taken by another key", ErrInvalidKey)
		}
		if existing.RevokedAt != nil {
			return ErrBootstrapRevoked
		}
		return nil
	case !errors.Is(err, metadata.ErrKeyNotFound):
		return err
	}
	_, _, err = k.insert(ctx, KeySpec{Name: name, Admin: true}, token, id)
	if errors.Is(err, metadata.ErrKeyExists) {
		// Another agent bootstrapped it at the same time, or the name is
		// held by another live key.
		if again, gerr := k.store.GetKey(ctx, id); gerr == nil && hashEqual(again.SecretHash, HashToken(token)) {
			return nil
		}
	}
	return err
}

// List returns every key, revoked ones included.
func (k *Keys) List(ctx context.Context) ([]Key, error) {
	rows, err := k.store.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Key, len(rows))
	for i, r := range rows {
		out[i] = keyFrom(r)
	}
	return out, nil
}

// Get returns one key.
func (k *Keys) Get(ctx context.Context, id string) (Key, error) {
	row, err := k.store.GetKey(ctx, id)
	if err != nil {
		return Key{}, err
	}
	return keyFrom(row), nil
}

// Revoke revokes a key; every agent refuses it within seconds.
func (k *Keys) Revoke(ctx context.Context, id string) (Key, error) {
	row, err := k.store.RevokeKey(ctx, id)
	if err != nil {
		return Key{}, err
	}
	return keyFrom(row), nil
}

// SetACLs replaces a live key's ACL entries.
func (k *Keys) SetACLs(ctx context.Context, id string, acls []ACL) (Key, error) {
	for _, a := range acls {
		if err := a.Validate(); err != nil {
			return Key{}, fmt.Errorf("%w: %v", ErrInvalidKey, err)
		}
	}
	row, err := k.store.SetKeyACLs(ctx, id, aclsTo(acls))
	if err != nil {
		return Key{}, err
	}
	return keyFrom(row), nil
}
