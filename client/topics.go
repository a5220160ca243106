package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// TopicConfig is a topic's settings, named as in Kafka.
type TopicConfig struct {
	RetentionMs       int64  `json:"retention.ms"`        // -1 keeps forever
	RetentionBytes    int64  `json:"retention.bytes"`     // per partition; -1 is unlimited
	CleanupPolicy     string `json:"cleanup.policy"`      // delete, compact or compact,delete
	MaxMessageBytes   int32  `json:"max.message.bytes"`   // largest record accepted
	DeleteRetentionMs int64  `json:"delete.retention.ms"` // how long compaction keeps tombstones
	// TimestampType is CreateTime (the producer's timestamps, within the
	// bounds) or LogAppendTime (the agent's receive time).
	TimestampType        string `json:"message.timestamp.type"`
	TimestampBeforeMaxMs int64  `json:"message.timestamp.before.max.ms"` // how far in the past a timestamp may be
	TimestampAfterMaxMs  int64  `json:"message.timestamp.after.max.ms"`  // how far in the future
}

// ConfigPatch sets some of a topic's settings; nil fields are left as they
// are (on create: the agent's defaults).
type ConfigPatch struct {
	RetentionMs       *int64  `json:"retention.ms,omitempty"`
	RetentionBytes    *int64  `json:"retention.bytes,omitempty"`
	CleanupPolicy     *string `json:"cleanup.policy,omitempty"`
	MaxMessageBytes   *int32  `json:"max.message.bytes,omitempty"`
	DeleteRetentionMs *int64  `json:"delete.retention.ms,omitempty"`

	TimestampType        *string `json:"message.timestamp.type,omitempty"`
	TimestampBeforeMaxMs *int64  `json:"message.timestamp.before.max.ms,omitempty"`
	TimestampAfterMaxMs  *int64  `json:"message.timestamp.after.max.ms,omitempty"`
}

// IsZero reports whether the patch sets nothing.
func (p ConfigPatch) IsZero() bool { return p == ConfigPatch{} }

// Topic is a topic as the agent describes it.
type Topic struct {
	Name       string      `json:"name"`
	ID         int64       `json:"id"`
	Partitions int32       `json:"partitions"`
	Config     TopicConfig `json:"config"`
	CreatedAt  time.Time   `json:"created_at"`
	UpdatedAt  time.Time   `json:"updated_at"`
	// PartitionStates is filled by DescribeTopic only.
	PartitionStates []PartitionState `json:"partition_states,omitempty"`
}

// PartitionState is one partition's state.
type PartitionState struct {
	Partition      int32  `json:"partition"`
	LogStartOffset int64  `json:"log_start_offset"`
	HighWatermark  int64  `json:"high_watermark"`
	Bytes          int64  `json:"bytes"`
	Owner          string `json:"owner"` // empty when unowned
	LeaseEpoch     int64  `json:"lease_epoch"`
}

// NewTopic is what CreateTopic creates.
type NewTopic struct {
	Name string `json:"name"`
	// Partitions is the partition count; 0 takes the agent's default (1).
	Partitions int32       `json:"partitions,omitempty"`
	Config     ConfigPatch `json:"config,omitzero"`
}

// TopicUpdate is what AlterTopic changes.
type TopicUpdate struct {
	// Partitions, when positive, is the new partition count; counts only
	// grow.
	Partitions int32       `json:"partitions,omitempty"`
	Config     ConfigPatch `json:"config,omitzero"`
}

// CreateTopic creates a topic. An existing name fails with topic_exists.
func (c *Client) CreateTopic(ctx context.Context, t NewTopic) (Topic, error) {
	var out Topic
	err := c.callJSON(ctx, request{method: http.MethodPost, path: []string{"v1", "topics"}}, t, &out)
	if err != nil {
		return Topic{}, fmt.Errorf("create topic %s: %w", t.Name, err)
	}
	return out, nil
}

// ListTopics returns every topic, without partition states, reading the
// listing's pages one after the other.
func (c *Client) ListTopics(ctx context.Context) ([]Topic, error) {
	var all []Topic
	err := c.pages(ctx, []string{"v1", "topics"}, func(cursor string) (string, error) {
		var out struct {
			Topics     []Topic `json:"topics"`
			NextCursor string  `json:"next_cursor"`
		}
		err := c.callJSON(ctx, request{method: http.MethodGet, path: []string{"v1", "topics"}, query: pageQuery(cursor)}, nil, &out)
		all = append(all, out.Topics...)
		return out.NextCursor, err
	})
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	return all, nil
}

// DescribeTopic returns a topic with the states of all its partitions,
// reading their pages one after the other.
func (c *Client) DescribeTopic(ctx context.Context, name string) (Topic, error) {
	var t Topic
	var states []PartitionState
	err := c.pages(ctx, []string{"v1", "topics", name}, func(cursor string) (string, error) {
		var out struct {
			Topic
			NextCursor string `json:"next_cursor"`
		}
		err := c.callJSON(ctx, request{method: http.MethodGet, path: []string{"v1", "topics", name}, query: pageQuery(cursor)}, nil, &out)
		t = out.Topic
		states = append(states, out.PartitionStates...)
		return out.NextCursor, err
	})
	if err != nil {
		return Topic{}, fmt.Errorf("describe topic %s: %w", name, err)
	}
	t.PartitionStates = states
	return t, nil
}

// pageLimit is the page size the client asks listings for.
const pageLimit = 10_000

// pageQuery asks for the page at cursor ("" for the first).
func pageQuery(cursor string) url.Values {
	q := url.Values{"limit": {strconv.Itoa(pageLimit)}}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	return q
}

// pages calls page with each cursor, from "" on, until a page gives none.
func (c *Client) pages(ctx context.Context, what []string, page func(cursor string) (next string, err error)) error {
	cursor := ""
	for {
		next, err := page(cursor)
		if err != nil || next == "" {
			return err
		}
		if next == cursor {
			return fmt.Errorf("%s: the agent gave the same cursor twice", strings.Join(what, "/"))
		}
		cursor = next
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// AlterTopic adds partitions and changes settings of a topic.
func (c *Client) AlterTopic(ctx context.Context, name string, u TopicUpdate) (Topic, error) {
	var out Topic
	err := c.callJSON(ctx, request{method: http.MethodPatch, path: []string{"v1", "topics", name}}, u, &out)
	if err != nil {
		return Topic{}, fmt.Errorf("alter topic %s: %w", name, err)
	}
	return out, nil
}

// DeleteTopic deletes a topic and, eventually, its records.
func (c *Client) DeleteTopic(ctx context.Context, name string) error {
	if err := c.callJSON(ctx, request{method: http.MethodDelete, path: []string{"v1", "topics", name}}, nil, nil); err != nil {
		return fmt.Errorf("delete topic %s: %w", name, err)
	}
	return nil
}

// NewProducerID asks the agent for a fresh producer id for idempotent
// produce requests.
func (c *Client) NewProducerID(ctx context.Context) (int64, error) {
	var out struct {
		ProducerID int64 `json:"producer_id"`
	}
	if err := c.callJSON(ctx, request{method: http.MethodPost, path: []string{"v1", "producers"}, safe: true}, nil, &out); err != nil {
		return 0, fmt.Errorf("new producer id: %w", err)
	}
	if out.ProducerID <= 0 {
		return 0, fmt.Errorf("new producer id: agent returned %d", out.ProducerID)
	}
	return out.ProducerID, nil
}
