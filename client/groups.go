package client

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"silt/recordjson"
)

// Offset reset policies, as Kafka's auto.offset.reset: where a reader
// goes when its offset is out of range (below the log start after
// retention, or past the high watermark, as with an offset of a topic
// deleted and created again). JoinGroupRequest takes the first two: where
// a member starts without a committed offset.
const (
	ResetEarliest = "earliest" // the log start offset
	ResetLatest   = "latest"   // the high watermark
	// ResetError fails with the offset_out_of_range *Error, whose
	// LogStartOffset and HighWatermark give the partition's range.
	ResetError = "error"
)

// resetTarget is where policy moves an offset that e says is out of
// range; ok is false when the policy is to fail.
func resetTarget(policy string, e *Error) (offset int64, ok bool) {
	switch policy {
	case ResetEarliest:
		return e.LogStartOffset, true
	case ResetLatest:
		return e.HighWatermark, true
	}
	return 0, false
}

func validReset(policy string) error {
	switch policy {
	case "", ResetEarliest, ResetLatest, ResetError:
		return nil
	}
	return fmt.Errorf("offset reset %q: want earliest, latest or error", policy)
}

// JoinGroupRequest joins a consumer group, or rejoins it with MemberID.
type JoinGroupRequest struct {
	// MemberID rejoins as that member; empty joins as a new one.
	MemberID string
	// Topics to consume; on a rejoin, empty keeps the member's.
	Topics []string
	// SessionTimeout: without a heartbeat for this long the member is
	// removed. Zero takes the agent's default (or keeps the member's).
	SessionTimeout time.Duration
	// AutoOffsetReset is where the member starts in partitions the group
	// has no committed offset for: ResetEarliest or ResetLatest (the
	// default).
	AutoOffsetReset string
}

// GroupAssignment is a partition assigned to a member.
type GroupAssignment struct {
	Topic string `json:"topic"`
	// TopicID is the topic's id, which OffsetCommit.TopicID may pin.
	TopicID   int64 `json:"topic_id"`
	Partition int32 `json:"partition"`
	// CommittedOffset is the group's committed offset, nil when none.
	CommittedOffset *int64 `json:"committed_offset"`
	// Offset is where the member starts.
	Offset int64 `json:"offset"`
}

// GroupMembership is a member's state after a join.
type GroupMembership struct {
	MemberID    string
	Generation  int64
	Assignments []GroupAssignment
	// HeartbeatInterval is how often to heartbeat.
	HeartbeatInterval time.Duration
	SessionTimeout    time.Duration
}

// HeartbeatResult tells a member whether the group rebalanced.
type HeartbeatResult struct {
	Generation int64 `json:"generation"`
	// Rejoin: join again with the member id to get the new assignment.
	Rejoin bool `json:"rejoin"`
}

// OffsetCommit is one committed offset: the offset of the next record to
// read.
type OffsetCommit struct {
	Topic string `json:"topic"`
	// TopicID, when not 0, pins the topic's id (from GroupAssignment,
	// GroupRecord or Topic.ID): if the topic was deleted and created again
	// under its name, the commit fails with topic_id_mismatch rather than
	// committing an offset of the old topic in the new one.
	TopicID   int64  `json:"topic_id,omitempty"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Metadata  string `json:"metadata,omitempty"`
}

// GroupOffset is a partition in a group's offsets view.
type GroupOffset struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// CommittedOffset is nil when the group committed nothing there.
	CommittedOffset *int64     `json:"committed_offset"`
	Metadata        string     `json:"metadata"`
	CommittedAt     *time.Time `json:"committed_at"`
	LogStartOffset  int64      `json:"log_start_offset"`
	HighWatermark   int64      `json:"high_watermark"`
	// Lag is HighWatermark - CommittedOffset, or HighWatermark -
	// LogStartOffset when nothing is committed.
	Lag int64 `json:"lag"`
}

// GroupSummary is a group in ListGroups.
type GroupSummary struct {
	Name       string `json:"name"`
	State      string `json:"state"` // empty, stable or rebalancing
	Generation int64  `json:"generation"`
	Members    int    `json:"members"`
}

// TopicPartition names a partition.
type TopicPartition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
}

// GroupMember is a member in DescribeGroup.
type GroupMember struct {
	MemberID string
	// Generation is the generation the member last joined at.
	Generation      int64
	Topics          []string
	SessionTimeout  time.Duration
	AutoOffsetReset string
	// Assignments is what the member gets at the group's generation.
	Assignments   []TopicPartition
	JoinedAt      time.Time
	LastHeartbeat time.Time
}

// GroupDescription is DescribeGroup's answer.
type GroupDescription struct {
	Name       string
	State      string
	Generation int64
	Members    []GroupMember
}

// GroupFetchOptions bound a group fetch. Zero values take the agent's
// defaults.
type GroupFetchOptions struct {
	MaxRecords int
	MaxBytes   int
	// Wait long-polls the member's partitions for up to this long.
	Wait time.Duration
	// AutoCommit commits the positions the previous fetch reached before
	// fetching (Kafka's auto-commit: at least once).
	AutoCommit bool
	// Generation, when positive, must be the group's generation.
	Generation int64
	// Base64 makes every key and value travel in base64.
	Base64 bool
}

// GroupRecord is a record of a group fetch.
type GroupRecord struct {
	Topic   string
	TopicID int64
	Record
}

// GroupFetchResult is a page of a group fetch.
type GroupFetchResult struct {
	Generation int64
	Records    []GroupRecord
	// Positions are where the next fetch continues, per partition.
	Positions []OffsetCommit
}

func groupPath(group string, rest ...string) []string {
	return append([]string{"v1", "groups", group}, rest...)
}

// JoinGroup joins a group (or rejoins it with req.MemberID) and returns
// the member's assignment. Heartbeat every HeartbeatInterval afterwards.
func (c *Client) JoinGroup(ctx context.Context, group string, req JoinGroupRequest) (GroupMembership, error) {
	in := struct {
		Topics           []string `json:"topics,omitempty"`
		SessionTimeoutMs int64    `json:"session_timeout_ms,omitempty"`
		MemberID         string   `json:"member_id,omitempty"`
		AutoOffsetReset  string   `json:"auto_offset_reset,omitempty"`
	}{req.Topics, req.SessionTimeout.Milliseconds(), req.MemberID, req.AutoOffsetReset}
	var out struct {
		MemberID            string            `json:"member_id"`
		Generation          int64             `json:"generation"`
		Assignments         []GroupAssignment `json:"assignments"`
		HeartbeatIntervalMs int64             `json:"heartbeat_interval_ms"`
		SessionTimeoutMs    int64             `json:"session_timeout_ms"`
	}
	if err := c.callJSON(ctx, request{method: http.MethodPost, path: groupPath(group, "members")}, in, &out); err != nil {
		return GroupMembership{}, fmt.Errorf("join group %s: %w", group, err)
	}
	if out.MemberID == "" {
		return GroupMembership{}, fmt.Errorf("join group %s: decode response: member_id is missing", group)
	}
	return GroupMembership{MemberID: out.MemberID, Generation: out.Generation, Assignments: out.Assignments,
		HeartbeatInterval: time.Duration(out.HeartbeatIntervalMs) * time.Millisecond,
		SessionTimeout:    time.Duration(out.SessionTimeoutMs) * time.Millisecond}, nil
}

// Heartbeat keeps a member alive. An unknown member fails with
// member_not_found: join again without a member id.
func (c *Client) Heartbeat(ctx context.Context, group, memberID string, generation int64) (HeartbeatResult, error) {
	var out HeartbeatResult
	in := map[string]int64{"generation": generation}
	req := request{method: http.MethodPost, path: groupPath(group, "members", memberID, "heartbeat"), safe: true}
	if err := c.callJSON(ctx, req, in, &out); err != nil {
		return HeartbeatResult{}, fmt.Errorf("heartbeat %s/%s: %w", group, redact(memberID), err)
	}
	return out, nil
}

// LeaveGroup removes a member; the others rebalance.
func (c *Client) LeaveGroup(ctx context.Context, group, memberID string) error {
	if err := c.callJSON(ctx, request{method: http.MethodDelete, path: groupPath(group, "members", memberID)}, nil, nil); err != nil {
		return fmt.Errorf("leave group %s/%s: %w", group, redact(memberID), err)
	}
	return nil
}

// CommitOffsets commits offsets as a member at a generation. With an
// empty memberID it is a standalone commit, which the agent accepts only
// while the group has no members (group_not_empty otherwise).
func (c *Client) CommitOffsets(ctx context.Context, group, memberID string, generation int64, offsets []OffsetCommit) error {
	in := struct {
		MemberID   string         `json:"member_id,omitempty"`
		Generation *int64         `json:"generation,omitempty"`
		Offsets    []OffsetCommit `json:"offsets"`
	}{MemberID: memberID, Offsets: offsets}
	if memberID != "" {
		in.Generation = &generation
	}
	req := request{method: http.MethodPost, path: groupPath(group, "offsets"), safe: true}
	if err := c.callJSON(ctx, req, in, nil); err != nil {
		return fmt.Errorf("commit offsets of %s: %w", group, err)
	}
	return nil
}

// GroupOffsets returns the committed offsets, high watermarks and lag of
// every partition of the topics the group committed in or subscribes to.
func (c *Client) GroupOffsets(ctx context.Context, group string) ([]GroupOffset, error) {
	var out struct {
		Offsets []GroupOffset `json:"offsets"`
	}
	if err := c.callJSON(ctx, request{method: http.MethodGet, path: groupPath(group, "offsets")}, nil, &out); err != nil {
		return nil, fmt.Errorf("offsets of group %s: %w", group, err)
	}
	return out.Offsets, nil
}

// ListGroups returns every group, reading the listing's pages one after
// the other.
func (c *Client) ListGroups(ctx context.Context) ([]GroupSummary, error) {
	var all []GroupSummary
	err := c.pages(ctx, []string{"v1", "groups"}, func(cursor string) (string, error) {
		var out struct {
			Groups     []GroupSummary `json:"groups"`
			NextCursor string         `json:"next_cursor"`
		}
		err := c.callJSON(ctx, request{method: http.MethodGet, path: []string{"v1", "groups"}, query: pageQuery(cursor)}, nil, &out)
		all = append(all, out.Groups...)
		return out.NextCursor, err
	})
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	return all, nil
}

// DescribeGroup returns a group's state, members and assignments.
func (c *Client) DescribeGroup(ctx context.Context, group string) (GroupDescription, error) {
	var out struct {
		Name       string `json:"name"`
		State      string `json:"state"`
		Generation int64  `json:"generation"`
		Members    []struct {
			MemberID         string           `json:"member_id"`
			Generation       int64            `json:"generation"`
			Topics           []string         `json:"topics"`
			SessionTimeoutMs int64            `json:"session_timeout_ms"`
			AutoOffsetReset  string           `json:"auto_offset_reset"`
			Assignments      []TopicPartition `json:"assignments"`
			JoinedAt         time.Time        `json:"joined_at"`
			LastHeartbeat    time.Time        `json:"last_heartbeat"`
		} `json:"members"`
	}
	if err := c.callJSON(ctx, request{method: http.MethodGet, path: groupPath(group)}, nil, &out); err != nil {
		return GroupDescription{}, fmt.Errorf("describe group %s: %w", group, err)
	}
	d := GroupDescription{Name: out.Name, State: out.State, Generation: out.Generation, Members: make([]GroupMember, len(out.Members))}
	for i, m := range out.Members {
		d.Members[i] = GroupMember{MemberID: m.MemberID, Generation: m.Generation, Topics: m.Topics,
			SessionTimeout: time.Duration(m.SessionTimeoutMs) * time.Millisecond, AutoOffsetReset: m.AutoOffsetReset,
			Assignments: m.Assignments, JoinedAt: m.JoinedAt, LastHeartbeat: m.LastHeartbeat}
	}
	return d, nil
}

// DeleteGroup deletes a group without members, with its offsets.
func (c *Client) DeleteGroup(ctx context.Context, group string) error {
	if err := c.callJSON(ctx, request{method: http.MethodDelete, path: groupPath(group)}, nil, nil); err != nil {
		return fmt.Errorf("delete group %s: %w", group, err)
	}
	return nil
}

// groupRecordJSON is a record of a group fetch body.
type groupRecordJSON struct {
	Topic   string `json:"topic"`
	TopicID int64  `json:"topic_id"`
	recordjson.Record
}

// GroupFetch reads records across the member's assigned partitions from
// the positions the agent keeps for it, and advances them. It is never
// retried after a transport failure: the agent may have advanced the
// positions of a response that was lost, so rejoin (with the member id:
// positions go back to the committed offsets) before fetching again. Each
// group fetch goes on a connection of its own, since net/http resends a
// GET by itself when a reused connection closes before the answer; with a
// transport other than *http.Transport (WithHTTPClient), make sure it
// does not resend. A
// rebalance fails it with stale_generation: rejoin with the member id.
func (c *Client) GroupFetch(ctx context.Context, group, memberID string, opts GroupFetchOptions) (GroupFetchResult, error) {
	q := fetchQuery(opts.MaxRecords, opts.MaxBytes, opts.Wait)
	if opts.AutoCommit {
		q.Set("auto_commit", "true")
	}
	if opts.Generation > 0 {
		q.Set("generation", strconv.FormatInt(opts.Generation, 10))
	}
	if opts.Base64 {
		q.Set("encoding", "base64")
	}
	var page struct {
		Generation int64             `json:"generation"`
		Records    []groupRecordJSON `json:"records"`
		Positions  []OffsetCommit    `json:"positions"`
	}
	// Never resent, not even by net/http (fresh: no reused connection).
	req := request{method: http.MethodGet, path: groupPath(group, "members", memberID, "records"), query: q, retry: &RetryPolicy{}, fresh: true}
	if err := c.callJSON(ctx, req, nil, &page); err != nil {
		return GroupFetchResult{}, fmt.Errorf("group fetch %s/%s: %w", group, redact(memberID), err)
	}
	out := GroupFetchResult{Generation: page.Generation, Records: make([]GroupRecord, len(page.Records)), Positions: page.Positions}
	for i := range page.Records {
		j := &page.Records[i]
		if j.Partition == nil {
			return GroupFetchResult{}, fmt.Errorf("group fetch %s/%s: decode response: record without a partition", group, redact(memberID))
		}
		r, err := recordFrom(&j.Record, *j.Partition)
		if err != nil {
			return GroupFetchResult{}, fmt.Errorf("group fetch %s/%s: decode response: %w", group, redact(memberID), err)
		}
		out.Records[i] = GroupRecord{Topic: j.Topic, TopicID: j.TopicID, Record: r}
	}
	return out, nil
}

// redact shortens a member id for error messages, which end up in logs: a
// member id authorizes the member's commits and fetches.
func redact(memberID string) string {
	if len(memberID) <= 8 {
		return memberID
	}
	return memberID[:8] + "…"
}
