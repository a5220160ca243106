package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"silt/metadata"
)

// Audited actions.
const (
	ActionTopicCreate  = "topic.create"
	ActionTopicAlter   = "topic.alter"
	ActionTopicDelete  = "topic.delete"
	ActionKeyCreate    = "key.create"
	ActionKeyRevoke    = "key.revoke"
	ActionACLChange    = "key.acls"
	ActionOffsetReset  = "group.offsets.reset"
	ActionOffsetDelete = "group.offsets.delete"
	ActionGroupDelete  = "group.delete"
)

// AuditKey is the resource type of audited key changes (not an ACL
// resource type: only admin keys manage keys).
const AuditKey ResourceType = "key"

// Event is an admin mutation that happened.
type Event struct {
	Principal    *Principal
	Action       string
	ResourceType ResourceType
	ResourceName string
	// Source is the peer's address; ForwardedFor what a proxy said the
	// client was (X-Forwarded-For), as sent, unverified.
	Source       string
	ForwardedFor string
	// Details is a small JSON object: what changed (never a secret).
	Details json.RawMessage
}

// AuditStore is what the audit log needs of the metadata store.
type AuditStore interface {
	AddAudit(ctx context.Context, e metadata.AuditEntry) (metadata.AuditEntry, error)
	ListAudit(ctx context.Context, q metadata.AuditQuery) ([]metadata.AuditEntry, error)
}

// Auditor writes admin mutations to the audit table and as structured log
// lines.
type Auditor struct {
	store   AuditStore
	logger  *slog.Logger
	agentID string
}

// NewAuditor returns an Auditor; agentID is recorded with every entry.
func NewAuditor(store AuditStore, logger *slog.Logger, agentID string) *Auditor {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Auditor{store: store, logger: logger, agentID: agentID}
}

// AuditEntry is one entry of the audit log.
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

// Record writes an event: a log line always, and a row in the audit table.
// The mutation has happened; an error means only the row is missing (the
// log line says so too).
func (a *Auditor) Record(ctx context.Context, e Event) error {
	p := e.Principal
	if p == nil {
		p = Anonymous
	}
	row := metadata.AuditEntry{KeyID: p.KeyID, KeyName: p.Name, Action: e.Action, ResourceType: string(e.ResourceType),
		ResourceName: e.ResourceName, Source: e.Source, ForwardedFor: e.ForwardedFor, AgentID: a.agentID, Details: e.Details}
	attrs := []any{"action", e.Action, "resource_type", e.ResourceType, "resource", e.ResourceName,
		"key_id", p.KeyID, "key_name", p.Name, "source", e.Source}
	if e.ForwardedFor != "" {
		attrs = append(attrs, "forwarded_for", e.ForwardedFor)
	}
	if len(e.Details) > 0 {
		attrs = append(attrs, "details", string(e.Details))
	}
	if _, err := a.store.AddAudit(context.WithoutCancel(ctx), row); err != nil {
		a.logger.Error("audit", append(attrs, "stored", false, "err", err)...)
		return fmt.Errorf("audit: %w", err)
	}
	a.logger.Info("audit", attrs...)
	return nil
}

// List returns entries newest first: at most limit, with ids below before
// (when positive).
func (a *Auditor) List(ctx context.Context, before int64, limit int) ([]AuditEntry, error) {
	rows, err := a.store.ListAudit(ctx, metadata.AuditQuery{Before: before, Limit: limit})
	if err != nil {
		return nil, err
	}
	out := make([]AuditEntry, len(rows))
	for i, r := range rows {
		out[i] = AuditEntry{ID: r.ID, At: r.At, KeyID: r.KeyID, KeyName: r.KeyName, Action: r.Action, ResourceType: r.ResourceType,
			ResourceName: r.ResourceName, Source: r.Source, ForwardedFor: r.ForwardedFor, AgentID: r.AgentID, Details: json.RawMessage(r.Details)}
	}
	return out, nil
}
