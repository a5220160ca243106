package problem

import "fmt"

// MediaType is the content type of error bodies.
const MediaType = "application/problem+json"

// Code is a stable, machine-readable error code.
type Code string

// The error codes of the HTTP API.
const (
	CodeBadRequest       Code = "bad_request"
	CodeInvalidJSON      Code = "invalid_json"
	CodeInvalidParameter Code = "invalid_parameter"
	CodeInvalidTopicName Code = "invalid_topic_name"
	CodeInvalidConfig    Code = "invalid_config"
	CodeInvalidRecord    Code = "invalid_record"
	// CodeInvalidTimestamp: a record's timestamp is outside the topic's
	// message.timestamp.before.max.ms / after.max.ms bounds.
	CodeInvalidTimestamp  Code = "invalid_timestamp"
	CodeInvalidPartitions Code = "invalid_partition_count"
	CodeRouteNotFound     Code = "route_not_found"
	CodeMethodNotAllowed  Code = "method_not_allowed"
	CodeTopicNotFound     Code = "topic_not_found"
	CodePartitionNotFound Code = "partition_not_found"
	CodeTopicExists       Code = "topic_exists"
	// CodePartitionQuota: the cluster-wide partition quota would be exceeded.
	CodePartitionQuota       Code = "partition_quota_exceeded"
	CodeRecordTooLarge       Code = "record_too_large"
	CodeRequestTooLarge      Code = "request_too_large"
	CodeTooManyRecords       Code = "too_many_records"
	CodeUnsupportedMediaType Code = "unsupported_media_type"
	CodeNotAcceptable        Code = "not_acceptable"
	CodeBackpressure         Code = "backpressure"
	CodeUnavailable          Code = "unavailable"
	CodeShuttingDown         Code = "shutting_down"
	CodeOffsetOutOfRange     Code = "offset_out_of_range"
	CodeSequenceGap          Code = "out_of_order_sequence"
	CodeUnknownProducer      Code = "unknown_producer"
	CodeFenced               Code = "fenced"
	// CodeOffsetMismatch: a conditional append (expected_offset) found the
	// partition at another next offset, given as next_offset; nothing was
	// written.
	CodeOffsetMismatch Code = "offset_mismatch"
	CodeInternal       Code = "internal"

	// Consumer groups.
	CodeInvalidGroupName Code = "invalid_group_name"
	CodeInvalidOffset    Code = "invalid_offset"
	CodeGroupNotFound    Code = "group_not_found"
	// CodeMemberNotFound: the member expired or left; join again without
	// a member id.
	CodeMemberNotFound Code = "member_not_found"
	// CodeStaleGeneration: the group rebalanced; join again with the
	// member id.
	CodeStaleGeneration Code = "stale_generation"
	CodeNotAssigned     Code = "not_assigned"
	CodeGroupNotEmpty   Code = "group_not_empty"
	CodeGroupFull       Code = "group_full"
	// CodeInconsistentGroupProtocol: the group has members consuming over
	// the Kafka protocol; a group is consumed over one protocol at a time.
	CodeInconsistentGroupProtocol Code = "inconsistent_group_protocol"

	// CodeTopicIDMismatch: the request pinned a topic id (topic_id) and
	// the topic of that name has another: it was deleted and created
	// again, with offsets from 0. The problem's TopicID is the current id.
	CodeTopicIDMismatch Code = "topic_id_mismatch"
	// Security.
	// CodeUnauthenticated (401): no key, or a malformed, unknown, revoked
	// or expired one; the response carries WWW-Authenticate: Bearer.
	CodeUnauthenticated Code = "unauthenticated"
	// CodeForbidden (403): the key's ACLs do not allow the operation on the
	// resource (or the route needs an admin key).
	CodeForbidden Code = "forbidden"
	// CodeQuotaExceeded (429): the key is over one of its quotas; retry
	// after Retry-After.
	CodeQuotaExceeded Code = "quota_exceeded"
	CodeKeyNotFound   Code = "key_not_found"
	CodeKeyExists     Code = "key_exists"
	CodeInvalidKey    Code = "invalid_key"
	// Hostile or broken clients (docs/security.md).
	// CodeRequestTimeout: the request body did not arrive within the
	// body timeout (408).
	CodeRequestTimeout Code = "request_timeout"
	// CodeTooManyHeaders: a record has more headers than the agent's cap
	// (413).
	CodeTooManyHeaders Code = "too_many_headers"
)

// TypeURI is the problem type of a code.
func TypeURI(c Code) string { return "urn:silt:problem:" + string(c) }

// Details is an RFC 9457 problem details object as Silt sends it.
type Details struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Instance  string `json:"instance,omitempty"`
	Code      Code   `json:"code"`
	Retriable bool   `json:"retriable"`
	// RetryAfter, in seconds, is also sent as the Retry-After header.
	RetryAfter int `json:"retry_after,omitempty"`
	// LogStartOffset and HighWatermark accompany offset_out_of_range.
	LogStartOffset *int64 `json:"log_start_offset,omitempty"`
	HighWatermark  *int64 `json:"high_watermark,omitempty"`
	// NextOffset accompanies offset_mismatch: the partition's next offset.
	NextOffset *int64 `json:"next_offset,omitempty"`
	// TopicID accompanies topic_id_mismatch: the topic's current id.
	TopicID *int64 `json:"topic_id,omitempty"`
}

// Error makes Details usable as an error.
func (d *Details) Error() string { return fmt.Sprintf("%d %s: %s", d.Status, d.Code, d.Detail) }
