package metadata

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// KeysChannel is the LISTEN/NOTIFY channel on which key changes (create,
// revoke, ACL change) announce the key's id, so that every agent drops its
// cached copy at once.
const KeysChannel = "silt_keys"

// Sentinels of the key verbs.
var (
	ErrKeyNotFound = errors.New("metadata: key not found")
	// ErrKeyExists: a live key has that name, or a key has that id.
	ErrKeyExists = errors.New("metadata: key exists")
)

func init() {
	sentinels = append(sentinels, ErrKeyNotFound, ErrKeyExists)
}

// Key is an API key's row and its ACL entries. SecretHash is the SHA-256 of
// the whole key; the key itself is never stored.
type Key struct {
	ID         string
	Name       string
	SecretHash []byte
	Admin      bool
	// Quotas over the whole cluster; 0 is unlimited.
	ProduceBytesPerSec int64
	FetchBytesPerSec   int64
	RequestsPerSec     float64
	ExpiresAt          *time.Time
	CreatedAt          time.Time
	UpdatedAt          time.Time
	LastUsedAt         *time.Time
	RevokedAt          *time.Time
	ACLs               []KeyACL
	// SCRAM holds the key's SCRAM credentials by mechanism name
	// ("SCRAM-SHA-256"); none for keys made before they were kept.
	SCRAM map[string]SCRAMCredential
}

// SCRAMCredential is what a server keeps to check a SCRAM client (RFC
// 5802): never the secret itself.
type SCRAMCredential struct {
	Salt       []byte `json:"salt"`
	Iterations int    `json:"iterations"`
	StoredKey  []byte `json:"stored_key"`
	ServerKey  []byte `json:"server_key"`
}

// KeyACL is one ACL entry of a key: allow Operations on the resources of
// ResourceType whose name equals (literal) or starts with (prefix) Name.
type KeyACL struct {
	ResourceType string
	PatternType  string
	Name         string
	Operations   []string
}

// CreateKey inserts a key and its ACL entries and announces it.
func (s *Store) CreateKey(ctx context.Context, k Key) (Key, error) {
	err := s.inTx(ctx, "create key", func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `
			INSERT INTO api_keys (id, name, secret_hash, admin, produce_bytes_per_sec, fetch_bytes_per_sec, requests_per_sec, expires_at, scram)
			VALUES ($1, $2, $3, $4, nullif($5, 0), nullif($6, 0), nullif($7, 0), $8, $9)
			RETURNING created_at, updated_at`,
			k.ID, k.Name, k.SecretHash, k.Admin, k.ProduceBytesPerSec, k.FetchBytesPerSec, k.RequestsPerSec, k.ExpiresAt, scramJSON(k.SCRAM)).
			Scan(&k.CreatedAt, &k.UpdatedAt)
		if pgCode(err) == sqlUniqueViolation {
			return fmt.Errorf("create key %q: %w", k.Name, ErrKeyExists)
		}
		if err != nil {
			return err
		}
		if err := insertACLs(ctx, tx, k.ID, k.ACLs); err != nil {
			return err
		}
		return notifyKey(ctx, tx, k.ID)
	})
	return k, err
}

func insertACLs(ctx context.Context, tx pgx.Tx, id string, acls []KeyACL) error {
	for _, a := range acls {
		_, err := tx.Exec(ctx, `
			INSERT INTO api_key_acls (key_id, resource_type, pattern_type, resource_name, operations)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (key_id, resource_type, pattern_type, resource_name)
			DO UPDATE SET operations = ARRAY(SELECT DISTINCT unnest(api_key_acls.operations || EXCLUDED.operations) ORDER BY 1)`,
			id, a.ResourceType, a.PatternType, a.Name, a.Operations)
		if err != nil {
			return fmt.Errorf("acl %s:%s:%s: %w", a.ResourceType, a.PatternType, a.Name, err)
		}
	}
	return nil
}

func notifyKey(ctx context.Context, tx pgx.Tx, id string) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, KeysChannel, id)
	return err
}

const keyColumns = `id, name, secret_hash, admin, coalesce(produce_bytes_per_sec, 0), coalesce(fetch_bytes_per_sec, 0),
	coalesce(requests_per_sec, 0), expires_at, created_at, updated_at, last_used_at, revoked_at, scram`

func scanKey(row pgx.Row) (Key, error) {
	var k Key
	err := row.Scan(&k.ID, &k.Name, &k.SecretHash, &k.Admin, &k.ProduceBytesPerSec, &k.FetchBytesPerSec,
		&k.RequestsPerSec, &k.ExpiresAt, &k.CreatedAt, &k.UpdatedAt, &k.LastUsedAt, &k.RevokedAt, &k.SCRAM)
	return k, err
}

// scramJSON is the stored form of SCRAM credentials: NULL when none.
func scramJSON(m map[string]SCRAMCredential) any {
	if len(m) == 0 {
		return nil
	}
	return m
}

// GetKey returns a key, revoked or not, with its ACL entries.
func (s *Store) GetKey(ctx context.Context, id string) (Key, error) {
	return s.getKey(ctx, "get key", `SELECT `+keyColumns+` FROM api_keys WHERE id = $1`, id)
}

// GetKeyByName returns the live (unrevoked) key of that name.
func (s *Store) GetKeyByName(ctx context.Context, name string) (Key, error) {
	return s.getKey(ctx, "get key by name", `SELECT `+keyColumns+` FROM api_keys WHERE name = $1 AND revoked_at IS NULL`, name)
}

func (s *Store) getKey(ctx context.Context, what, query, arg string) (Key, error) {
	k, err := scanKey(s.pool.QueryRow(ctx, query, arg))
	if errors.Is(err, pgx.ErrNoRows) {
		return Key{}, fmt.Errorf("key %q: %w", arg, ErrKeyNotFound)
	}
	if err != nil {
		return Key{}, s.classify(what, err)
	}
	acls, err := s.keyACLs(ctx, []string{k.ID})
	if err != nil {
		return Key{}, s.classify(what, err)
	}
	k.ACLs = acls[k.ID]
	return k, nil
}

func (s *Store) keyACLs(ctx context.Context, ids []string) (map[string][]KeyACL, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT key_id, resource_type, pattern_type, resource_name, operations FROM api_key_acls
		WHERE key_id = ANY ($1) ORDER BY key_id, resource_type, pattern_type, resource_name`, ids)
	if err != nil {
		return nil, err
	}
	out := map[string][]KeyACL{}
	var id string
	var a KeyACL
	_, err = pgx.ForEachRow(rows, []any{&id, &a.ResourceType, &a.PatternType, &a.Name, &a.Operations}, func() error {
		out[id] = append(out[id], KeyACL{ResourceType: a.ResourceType, PatternType: a.PatternType, Name: a.Name,
			Operations: append([]string(nil), a.Operations...)})
		return nil
	})
	return out, err
}

// ListKeys returns every key, the revoked ones too, oldest first.
func (s *Store) ListKeys(ctx context.Context) ([]Key, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+keyColumns+` FROM api_keys ORDER BY created_at, id`)
	if err != nil {
		return nil, s.classify("list keys", err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Key, error) { return scanKey(r) })
	if err != nil {
		return nil, s.classify("list keys", err)
	}
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	acls, err := s.keyACLs(ctx, ids)
	if err != nil {
		return nil, s.classify("list keys", err)
	}
	for i := range keys {
		keys[i].ACLs = acls[keys[i].ID]
	}
	return keys, nil
}

// RevokeKey revokes a key and announces it. Revoking a revoked key
// changes nothing and is not an error.
func (s *Store) RevokeKey(ctx context.Context, id string) (Key, error) {
	err := s.inTx(ctx, "revoke key", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()), updated_at = now() WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("key %q: %w", id, ErrKeyNotFound)
		}
		return notifyKey(ctx, tx, id)
	})
	if err != nil {
		return Key{}, err
	}
	return s.GetKey(ctx, id)
}

// SetKeyACLs replaces a live key's ACL entries and announces it.
func (s *Store) SetKeyACLs(ctx context.Context, id string, acls []KeyACL) (Key, error) {
	err := s.inTx(ctx, "set key acls", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE api_keys SET updated_at = now() WHERE id = $1 AND revoked_at IS NULL`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("live key %q: %w", id, ErrKeyNotFound)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM api_key_acls WHERE key_id = $1`, id); err != nil {
			return err
		}
		if err := insertACLs(ctx, tx, id, acls); err != nil {
			return err
		}
		return notifyKey(ctx, tx, id)
	})
	if err != nil {
		return Key{}, err
	}
	return s.GetKey(ctx, id)
}

// TouchKeys sets the last-used time of keys to now.
func (s *Store) TouchKeys(ctx context.Context, ids []string) error {
	_, err := s.pool.Exec(ctx, `UPDATE api_keys SET last_used_at = now() WHERE id = ANY ($1)`, ids)
	return s.classify("touch keys", err)
}

// ProducerKey returns the key an idempotent producer id was issued to:
// found is false for an unknown id, and keyID is empty for an id issued
// without a key.
func (s *Store) ProducerKey(ctx context.Context, producerID int64) (keyID string, found bool, err error) {
	var k *string
	err = s.pool.QueryRow(ctx, `SELECT key_id FROM producers WHERE id = $1`, producerID).Scan(&k)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, s.classify("producer key", err)
	}
	if k != nil {
		keyID = *k
	}
	return keyID, true, nil
}

// BindProducer binds an unbound producer id to a key.
func (s *Store) BindProducer(ctx context.Context, producerID int64, keyID string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE producers SET key_id = $2 WHERE id = $1 AND key_id IS NULL`, producerID, keyID)
	if err != nil {
		return s.classify("bind producer", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: producer %d is unknown or already bound", ErrInvalidArgument, producerID)
	}
	return nil
}

// AuditEntry is one row of the audit log.
type AuditEntry struct {
	ID           int64
	At           time.Time
	KeyID        string // empty without authentication
	KeyName      string
	Action       string
	ResourceType string
	ResourceName string
	Source       string // the peer address
	ForwardedFor string // the X-Forwarded-For header, as sent
	AgentID      string
	Details      []byte // a JSON object
}

// AddAudit appends an entry; ID and At are filled in.
func (s *Store) AddAudit(ctx context.Context, e AuditEntry) (AuditEntry, error) {
	details := e.Details
	if len(details) == 0 {
		details = []byte("{}")
	}
	var keyID *string
	if e.KeyID != "" {
		keyID = &e.KeyID
	}
	err := s.pool.QueryRow(ctx, `
		INSERT INTO audit_log (key_id, key_name, action, resource_type, resource_name, source, forwarded_for, agent_id, details)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id, at`,
		keyID, e.KeyName, e.Action, e.ResourceType, e.ResourceName, e.Source, e.ForwardedFor, e.AgentID, details).Scan(&e.ID, &e.At)
	return e, s.classify("add audit", err)
}

// AuditQuery selects audit entries: newest first, with ids below Before
// (when positive), at most Limit.
type AuditQuery struct {
	Before int64
	Limit  int
}

// ListAudit returns audit entries, newest first.
func (s *Store) ListAudit(ctx context.Context, q AuditQuery) ([]AuditEntry, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	before := q.Before
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, err := s.pool.Query(ctx, `
		SELECT id, at, coalesce(key_id, ''), key_name, action, resource_type, resource_name, source, forwarded_for, agent_id, details
		FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2`, before, q.Limit)
	if err != nil {
		return nil, s.classify("list audit", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditEntry, error) {
		var e AuditEntry
		err := r.Scan(&e.ID, &e.At, &e.KeyID, &e.KeyName, &e.Action, &e.ResourceType, &e.ResourceName, &e.Source, &e.ForwardedFor, &e.AgentID, &e.Details)
		return e, err
	})
	return out, s.classify("list audit", err)
}
