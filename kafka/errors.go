package kafka

import (
	"context"
	"errors"

	"silt/batcher"
	"silt/fetch"
	"silt/groups"
	"silt/metadata"
	"silt/segment"
)

// Kafka error codes (the protocol's numbers) that this listener returns.
const (
	errNone                     int16 = 0
	errUnknownServerError       int16 = -1
	errOffsetOutOfRange         int16 = 1
	errCorruptMessage           int16 = 2
	errUnknownTopicOrPartition  int16 = 3
	errNotLeaderForPartition    int16 = 6
	errRequestTimedOut          int16 = 7
	errMessageTooLarge          int16 = 10
	errCoordinatorNotAvailable  int16 = 15
	errInvalidTopic             int16 = 17
	errInvalidRequiredAcks      int16 = 21
	errUnsupportedForMessageFmt int16 = 43
	errTopicAlreadyExists       int16 = 36
	errInvalidPartitions        int16 = 37
	errInvalidReplicationFactor int16 = 38
	errInvalidReplicaAssignment int16 = 39
	errInvalidConfig            int16 = 40
	errInvalidRequest           int16 = 42
	errOutOfOrderSequence       int16 = 45
	errInvalidProducerEpoch     int16 = 47
	errUnsupportedVersion       int16 = 35
	errKafkaStorageError        int16 = 56
	errUnknownProducerID        int16 = 59
	errFetchSessionIDNotFound   int16 = 70
	errInvalidRecord            int16 = 87
	errInvalidTimestamp         int16 = 32
	errPolicyViolation          int16 = 44
	errUnknownTopicID           int16 = 100

	// Groups.
	errOffsetMetadataTooLarge     int16 = 12
	errNotCoordinator             int16 = 16
	errIllegalGeneration          int16 = 22
	errInconsistentGroupProtocol  int16 = 23
	errInvalidGroupID             int16 = 24
	errUnknownMemberID            int16 = 25
	errInvalidSessionTimeout      int16 = 26
	errRebalanceInProgress        int16 = 27
	errNonEmptyGroup              int16 = 68
	errGroupIDNotFound            int16 = 69
	errMemberIDRequired           int16 = 79
	errGroupMaxSizeReached        int16 = 81
	errFencedInstanceID           int16 = 82
	errGroupSubscribedToTopic     int16 = 86
	errTopicAuthorizationFailed   int16 = 29
	errGroupAuthorizationFailed   int16 = 30
	errClusterAuthorizationFailed int16 = 31

	// SASL.
	errUnsupportedSASLMechanism int16 = 33
	errIllegalSASLState         int16 = 34
	errSASLAuthenticationFailed int16 = 58
)

// groupErrorCode maps an error of the group coordinator to the Kafka code
// a client acts on.
func groupErrorCode(err error) int16 {
	var mir *groups.MemberIDRequiredError
	switch {
	case err == nil:
		return errNone
	case errors.As(err, &mir):
		return errMemberIDRequired
	case errors.Is(err, groups.ErrInvalidName):
		return errInvalidGroupID
	case errors.Is(err, groups.ErrMemberNotFound):
		return errUnknownMemberID
	case errors.Is(err, groups.ErrStaleGeneration):
		return errIllegalGeneration
	case errors.Is(err, groups.ErrRebalanceInProgress):
		return errRebalanceInProgress
	case errors.Is(err, groups.ErrInconsistentProtocol), errors.Is(err, groups.ErrProtocolMismatch):
		return errInconsistentGroupProtocol
	case errors.Is(err, groups.ErrFencedInstance):
		return errFencedInstanceID
	case errors.Is(err, groups.ErrInvalidSessionTimeout):
		return errInvalidSessionTimeout
	case errors.Is(err, groups.ErrGroupFull):
		return errGroupMaxSizeReached
	case errors.Is(err, groups.ErrGroupNotFound):
		return errGroupIDNotFound
	case errors.Is(err, groups.ErrGroupNotEmpty):
		return errNonEmptyGroup
	case errors.Is(err, groups.ErrMetadataTooLarge):
		return errOffsetMetadataTooLarge
	case errors.Is(err, groups.ErrTopicNotFound), errors.Is(err, groups.ErrPartitionNotFound):
		return errUnknownTopicOrPartition
	case errors.Is(err, groups.ErrInvalidOffset):
		return errOffsetOutOfRange
	case errors.Is(err, groups.ErrGroupSubscribed):
		return errGroupSubscribedToTopic
	case errors.Is(err, groups.ErrInvalidArgument):
		return errInvalidRequest
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// The agent is stopping (or the client left): find the
		// coordinator again, through the load balancer.
		return errNotCoordinator
	case errors.Is(err, metadata.ErrUnavailable):
		return errCoordinatorNotAvailable
	}
	return errorCode(err)
}

// errorCode maps an error of the services below to the Kafka code a
// client acts on: retriable codes for what a retry may fix.
func errorCode(err error) int16 {
	var oor *fetch.OutOfRangeError
	switch {
	case err == nil:
		return errNone
	case errors.As(err, &oor):
		return errOffsetOutOfRange
	case errors.Is(err, metadata.ErrTopicNotFound), errors.Is(err, metadata.ErrPartitionNotFound):
		return errUnknownTopicOrPartition
	case errors.Is(err, metadata.ErrOutOfOrderSequence):
		return errOutOfOrderSequence
	case errors.Is(err, metadata.ErrUnknownProducer):
		return errUnknownProducerID
	case errors.Is(err, metadata.ErrProducerFenced):
		return errInvalidProducerEpoch
	case errors.Is(err, metadata.ErrInvalidTimestamp):
		return errInvalidTimestamp
	case errors.Is(err, metadata.ErrPartitionQuota):
		return errPolicyViolation
	case errors.Is(err, metadata.ErrSegmentExpired):
		return errRequestTimedOut
	case errors.Is(err, metadata.ErrTopicExists):
		return errTopicAlreadyExists
	case errors.Is(err, metadata.ErrPartitionCount):
		return errInvalidPartitions
	case errors.Is(err, metadata.ErrInvalidArgument):
		return errInvalidConfig
	case errors.Is(err, batcher.ErrTooLarge), errors.Is(err, segment.ErrTooLarge):
		return errMessageTooLarge
	case errors.Is(err, batcher.ErrClosed):
		// The agent is stopping: a client refreshes its metadata and
		// reconnects, through the load balancer, to another agent.
		return errNotLeaderForPartition
	case errors.Is(err, batcher.ErrBackpressure), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return errRequestTimedOut
	case errors.Is(err, batcher.ErrStorage), errors.Is(err, fetch.ErrStorage), errors.Is(err, metadata.ErrUnavailable):
		return errKafkaStorageError
	case errors.Is(err, segment.ErrCorrupt):
		return errCorruptMessage
	case errors.Is(err, segment.ErrUnsupported):
		return errUnsupportedForMessageFmt
	case errors.Is(err, segment.ErrInvalid):
		return errInvalidRecord
	}
	return errUnknownServerError
}
