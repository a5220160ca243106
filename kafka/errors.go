package kafka

import (
	"context"
	"errors"

	"silt/batcher"
	"silt/fetch"
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
)

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
