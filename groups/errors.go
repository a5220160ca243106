package groups

import (
	"errors"
	"fmt"
	"time"

	"silt/metadata"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrInvalidName: a group name breaks the topic-name rules.
	ErrInvalidName = errors.New("groups: invalid group name")
	// ErrInvalidArgument: a malformed request (session timeout out of
	// bounds, no topics, unknown auto_offset_reset, duplicate partitions).
	ErrInvalidArgument = errors.New("groups: invalid argument")
	// ErrInvalidOffset: a committed offset is negative or past the
	// partition's high watermark.
	ErrInvalidOffset = errors.New("groups: offset outside the partition")
	// ErrGroupNotFound: no group has that name.
	ErrGroupNotFound = errors.New("groups: group not found")
	// ErrMemberNotFound: the member left, expired or never joined; join
	// again without a member id.
	ErrMemberNotFound = errors.New("groups: member not found")
	// ErrTopicNotFound and ErrPartitionNotFound: a subscription or commit
	// names a topic or partition that does not exist.
	ErrTopicNotFound     = errors.New("groups: topic not found")
	ErrPartitionNotFound = errors.New("groups: partition not found")
	// ErrStaleGeneration: the group rebalanced since the member joined;
	// rejoin with the member id.
	ErrStaleGeneration = errors.New("groups: stale generation")
	// ErrNotAssigned: a member committed a partition it is not assigned.
	ErrNotAssigned = errors.New("groups: partition not assigned to the member")
	// ErrGroupNotEmpty: the operation needs a group without members
	// (commits without a member id, deletion).
	ErrGroupNotEmpty = errors.New("groups: group has members")
	// ErrGroupFull: the group has Config.MaxMembers members.
	ErrGroupFull = errors.New("groups: group is full")
	// ErrTopicIDMismatch: a commit pinned a topic id that is not the
	// topic's (see TopicIDMismatchError).
	ErrTopicIDMismatch = errors.New("groups: topic id mismatch")
	// ErrProtocolMismatch: the group has members of the other door (HTTP
	// or Kafka); a group is managed by one of them at a time.
	ErrProtocolMismatch = errors.New("groups: the group is managed by the other protocol")

	// Kafka protocol errors (Kafka's names in the comments).

	// ErrRebalanceInProgress: REBALANCE_IN_PROGRESS; rejoin.
	ErrRebalanceInProgress = errors.New("groups: rebalance in progress")
	// ErrInconsistentProtocol: INCONSISTENT_GROUP_PROTOCOL: another
	// protocol type, or no assignor in common with the members.
	ErrInconsistentProtocol = errors.New("groups: inconsistent group protocol")
	// ErrFencedInstance: FENCED_INSTANCE_ID: another member holds the
	// static instance id now.
	ErrFencedInstance = errors.New("groups: fenced instance id")
	// ErrInvalidSessionTimeout: INVALID_SESSION_TIMEOUT.
	ErrInvalidSessionTimeout = errors.New("groups: session timeout out of bounds")
	// ErrMetadataTooLarge: OFFSET_METADATA_TOO_LARGE.
	ErrMetadataTooLarge = errors.New("groups: offset metadata too large")
	// ErrGroupSubscribed: GROUP_SUBSCRIBED_TO_TOPIC: offsets of a topic
	// that members read cannot be deleted.
	ErrGroupSubscribed = errors.New("groups: the group is subscribed to the topic")
)

// MemberIDRequiredError answers a new member's first JoinGroup (version 4
// and later, KIP-394): join again with this id.
type MemberIDRequiredError struct{ MemberID string }

func (e *MemberIDRequiredError) Error() string {
	return "groups: join again with the member id the group gave"
}

// GroupFullError is a join refused because the group has MaxMembers
// members; a place may free up after RetryAfter, when the member that
// expires first would if it is not heard from.
type GroupFullError struct {
	Group      string
	Members    int
	RetryAfter time.Duration
}

func (e *GroupFullError) Error() string {
	return fmt.Sprintf("group %q is full: it has %d members, the most allowed; a place may free up in %v", e.Group, e.Members, e.RetryAfter)
}

// Unwrap makes errors.Is(err, ErrGroupFull) hold.
func (e *GroupFullError) Unwrap() error { return ErrGroupFull }

// TopicIDMismatchError is a commit that pinned topic id Pinned for a
// topic whose id is Current: the topic was deleted and created again,
// with offsets from 0, since the committer read it.
type TopicIDMismatchError struct {
	Topic           string
	Pinned, Current int64
}

func (e *TopicIDMismatchError) Error() string {
	return fmt.Sprintf("topic %q has id %d, not %d: it was deleted and created again", e.Topic, e.Current, e.Pinned)
}

// Unwrap makes errors.Is(err, ErrTopicIDMismatch) hold.
func (e *TopicIDMismatchError) Unwrap() error { return ErrTopicIDMismatch }

// rejection marks an error of an operation that decided to refuse the
// request after the group's maintenance (expiry, rebalance) was done: the
// maintenance is committed and the error returned.
type rejection struct{ err error }

func (r *rejection) Error() string { return r.err.Error() }
func (r *rejection) Unwrap() error { return r.err }

func reject(format string, args ...any) error {
	return &rejection{fmt.Errorf(format, args...)}
}

// translate maps metadata's sentinels to this package's.
func translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, metadata.ErrGroupNotFound):
		return fmt.Errorf("%w: %v", ErrGroupNotFound, err)
	case errors.Is(err, metadata.ErrPartitionNotFound):
		return fmt.Errorf("%w: %v", ErrPartitionNotFound, err)
	case errors.Is(err, metadata.ErrTopicNotFound):
		return fmt.Errorf("%w: %v", ErrTopicNotFound, err)
	}
	return err
}
