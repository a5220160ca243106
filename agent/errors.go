package agent

import (
	"context"
	"errors"
	"net/http"

	"silt/batcher"
	"silt/fetch"
	"silt/metadata"
)

// mapDomainError translates errors of the packages below into problems.
// It returns nil for errors it does not know.
func mapDomainError(err error) *Problem {
	var oor *fetch.OutOfRangeError
	if errors.As(err, &oor) {
		p := problem(http.StatusRequestedRangeNotSatisfiable, CodeOffsetOutOfRange,
			"offset %d is outside [%d, %d]; the log starts at %d", oor.Offset, oor.LogStartOffset, oor.HighWatermark, oor.LogStartOffset)
		p.LogStartOffset, p.HighWatermark = &oor.LogStartOffset, &oor.HighWatermark
		return p
	}
	switch {
	case errors.Is(err, batcher.ErrBackpressure):
		return problem(http.StatusTooManyRequests, CodeBackpressure, "the agent's produce buffer is full; retry shortly")
	case errors.Is(err, batcher.ErrClosed):
		return problem(http.StatusServiceUnavailable, CodeShuttingDown, "the agent is shutting down; retry on another agent")
	case errors.Is(err, batcher.ErrStorage):
		return problem(http.StatusServiceUnavailable, CodeUnavailable, "object store write failed; nothing was committed: %v", err)
	case errors.Is(err, batcher.ErrTooLarge):
		return problem(http.StatusRequestEntityTooLarge, CodeRequestTooLarge, "%v", err)
	case errors.Is(err, metadata.ErrUnavailable):
		return problem(http.StatusServiceUnavailable, CodeUnavailable, "metadata store unavailable: %v", err)
	case errors.Is(err, metadata.ErrTopicNotFound):
		return notFound(CodeTopicNotFound, "%v", err)
	case errors.Is(err, metadata.ErrPartitionNotFound):
		return notFound(CodePartitionNotFound, "%v", err)
	case errors.Is(err, metadata.ErrTopicExists):
		return problem(http.StatusConflict, CodeTopicExists, "%v", err)
	case errors.Is(err, metadata.ErrPartitionCount):
		return badRequest(CodeInvalidPartitions, "%v", err)
	case errors.Is(err, metadata.ErrInvalidArgument):
		return badRequest(CodeInvalidConfig, "%v", err)
	case errors.Is(err, metadata.ErrOutOfOrderSequence):
		return problem(http.StatusConflict, CodeSequenceGap, "%v", err)
	case errors.Is(err, context.DeadlineExceeded):
		return problem(http.StatusServiceUnavailable, CodeUnavailable, "timed out: %v", err)
	}
	return nil
}
