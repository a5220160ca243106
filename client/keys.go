package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"
)

// WithToken sends the API key token (silt_<id>_<secret>) as a bearer token
// with every request.
func WithToken(token string) Option {
	return func(c *Client) { c.token = token }
}

// TLSConfig returns a TLS client configuration that trusts the PEM
// certificates in caFile (in addition to nothing else), for agents whose
// certificates a private CA signed. An empty caFile trusts the system's
// roots.
func TLSConfig(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("client: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("client: CA file %s holds no PEM certificate", caFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// WithTLSConfig sends requests over a transport with cfg (HTTP/2 when the
// agent offers it), replacing the HTTP client.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *Client) {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = cfg.Clone() // HTTP/2 edits its copy's protocols
		tr.ForceAttemptHTTP2 = true
		c.http = &http.Client{Transport: tr}
	}
}

// ACL is an allow entry of a key: Operations (produce, consume, describe,
// create, alter, delete) on the resources of ResourceType (topic, group,
// cluster) whose name equals Name (PatternType literal; "*" is every
// resource) or starts with it (prefix).
type ACL struct {
	ResourceType string   `json:"resource_type"`
	PatternType  string   `json:"pattern_type"`
	Name         string   `json:"name"`
	Operations   []string `json:"operations"`
}

// Quota bounds a key's traffic over the whole cluster; 0 is unlimited.
type Quota struct {
	ProduceBytesPerSec int64   `json:"produce_bytes_per_sec,omitempty"`
	FetchBytesPerSec   int64   `json:"fetch_bytes_per_sec,omitempty"`
	RequestsPerSec     float64 `json:"requests_per_sec,omitempty"`
}

// Key is an API key as listed: everything but its secret.
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

// NewKey is what CreateKey creates. ACLs may be given as entries or in
// the command line's form (Allow: "produce:topic:orders",
// "consume:topic:logs-*").
type NewKey struct {
	Name      string     `json:"name"`
	Admin     bool       `json:"admin,omitempty"`
	ACLs      []ACL      `json:"acls,omitempty"`
	Allow     []string   `json:"allow,omitempty"`
	Quota     Quota      `json:"quota,omitzero"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// Replace revokes the live key of the same name first.
	Replace bool `json:"replace,omitempty"`
}

// CreatedKey is a new key and its token, shown this once.
type CreatedKey struct {
	Key   Key    `json:"key"`
	Token string `json:"token"`
}

// CreateKey creates an API key (admin keys only).
func (c *Client) CreateKey(ctx context.Context, k NewKey) (CreatedKey, error) {
	var out CreatedKey
	if err := c.callJSON(ctx, request{method: http.MethodPost, path: []string{"v1", "keys"}}, k, &out); err != nil {
		return CreatedKey{}, fmt.Errorf("create key %s: %w", k.Name, err)
	}
	return out, nil
}

// ListKeys lists every key, revoked ones included (admin keys only).
func (c *Client) ListKeys(ctx context.Context) ([]Key, error) {
	var out struct {
		Keys []Key `json:"keys"`
	}
	if err := c.callJSON(ctx, request{method: http.MethodGet, path: []string{"v1", "keys"}}, nil, &out); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return out.Keys, nil
}

// GetKey returns one key by id (admin keys only).
func (c *Client) GetKey(ctx context.Context, id string) (Key, error) {
	var out Key
	if err := c.callJSON(ctx, request{method: http.MethodGet, path: []string{"v1", "keys", id}}, nil, &out); err != nil {
		return Key{}, fmt.Errorf("get key %s: %w", id, err)
	}
	return out, nil
}

// RevokeKey revokes a key by id: every agent refuses it within seconds
// and ends its open streams (admin keys only).
func (c *Client) RevokeKey(ctx context.Context, id string) (Key, error) {
	var out Key
	if err := c.callJSON(ctx, request{method: http.MethodDelete, path: []string{"v1", "keys", id}, safe: true}, nil, &out); err != nil {
		return Key{}, fmt.Errorf("revoke key %s: %w", id, err)
	}
	return out, nil
}

// SetKeyACLs replaces a key's ACL entries (admin keys only).
func (c *Client) SetKeyACLs(ctx context.Context, id string, acls []ACL, allow []string) (Key, error) {
	var out Key
	body := struct {
		ACLs  []ACL    `json:"acls"`
		Allow []string `json:"allow,omitempty"`
	}{ACLs: append([]ACL{}, acls...), Allow: allow}
	if err := c.callJSON(ctx, request{method: http.MethodPut, path: []string{"v1", "keys", id, "acls"}, safe: true}, body, &out); err != nil {
		return Key{}, fmt.Errorf("set ACLs of key %s: %w", id, err)
	}
	return out, nil
}

// WhoAmI describes the key the client authenticates with.
type WhoAmI struct {
	// Auth is the agent's mode: required or none.
	Auth      string     `json:"auth"`
	KeyID     string     `json:"key_id,omitempty"`
	Name      string     `json:"name"`
	Admin     bool       `json:"admin"`
	ACLs      []ACL      `json:"acls"`
	Quota     Quota      `json:"quota"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// WhoAmI returns the client's key: its name and ACLs.
func (c *Client) WhoAmI(ctx context.Context) (WhoAmI, error) {
	var out WhoAmI
	if err := c.callJSON(ctx, request{method: http.MethodGet, path: []string{"v1", "whoami"}}, nil, &out); err != nil {
		return WhoAmI{}, fmt.Errorf("whoami: %w", err)
	}
	return out, nil
}

// AuditEntry is one admin mutation of the audit log.
type AuditEntry struct {
	ID           int64           `json:"id"`
	At           time.Time       `json:"at"`
	KeyID        string          `json:"key_id,omitempty"`
	KeyName      string          `json:"key_name"`
	Action       string          `json:"action"`
	ResourceType string          `json:"resource_type"`
	ResourceName string          `json:"resource_name"`
	Source       string          `json:"source"`
	ForwardedFor string          `json:"forwarded_for,omitempty"`
	AgentID      string          `json:"agent_id"`
	Details      json.RawMessage `json:"details"`
}

// Audit returns audit entries newest first: at most limit (0: the agent's
// default), older than the entry before (0: from the newest). Admin keys
// only.
func (c *Client) Audit(ctx context.Context, before int64, limit int) ([]AuditEntry, error) {
	q := url.Values{}
	if before > 0 {
		q.Set("before", strconv.FormatInt(before, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Entries []AuditEntry `json:"entries"`
	}
	if err := c.callJSON(ctx, request{method: http.MethodGet, path: []string{"v1", "audit"}, query: q}, nil, &out); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return out.Entries, nil
}
