package agent

import (
	"context"
	"errors"
	"net/http"

	"silt/batcher"
	"silt/fetch"
	"silt/groups"
	"silt/metadata"
	"silt/problem"
)

// mapDomainError translates errors of the packages below into problems.
// It returns nil for errors it does not know.
func mapDomainError(err error) *problem.Details {
	var oor *fetch.OutOfRangeError
	if errors.As(err, &oor) {
		p := newProblem(http.StatusRequestedRangeNotSatisfiable, problem.CodeOffsetOutOfRange,
			"offset %d is outside [%d, %d]; the log starts at %d", oor.Offset, oor.LogStartOffset, oor.HighWatermark, oor.LogStartOffset)
		p.LogStartOffset, p.HighWatermark = &oor.LogStartOffset, &oor.HighWatermark
		return p
	}
	switch {
	// Consumer groups first: their sentinels are the most specific.
	case errors.Is(err, groups.ErrInvalidName):
		return badRequest(problem.CodeInvalidGroupName, "%v", err)
	case errors.Is(err, groups.ErrInvalidArgument):
		return badRequest(problem.CodeInvalidParameter, "%v", err)
	case errors.Is(err, groups.ErrInvalidOffset):
		return badRequest(problem.CodeInvalidOffset, "%v", err)
	case errors.Is(err, groups.ErrGroupNotFound):
		return notFound(problem.CodeGroupNotFound, "%v", err)
	case errors.Is(err, groups.ErrMemberNotFound):
		return notFound(problem.CodeMemberNotFound, "%v; join again without a member id", err)
	case errors.Is(err, groups.ErrTopicNotFound):
		return notFound(problem.CodeTopicNotFound, "%v", err)
	case errors.Is(err, groups.ErrPartitionNotFound):
		return notFound(problem.CodePartitionNotFound, "%v", err)
	case errors.Is(err, groups.ErrStaleGeneration):
		return newProblem(http.StatusConflict, problem.CodeStaleGeneration, "%v", err)
	case errors.Is(err, groups.ErrNotAssigned):
		return newProblem(http.StatusConflict, problem.CodeNotAssigned, "%v", err)
	case errors.Is(err, groups.ErrGroupNotEmpty):
		return newProblem(http.StatusConflict, problem.CodeGroupNotEmpty, "%v", err)
	case errors.Is(err, groups.ErrGroupFull):
		return newProblem(http.StatusConflict, problem.CodeGroupFull, "%v", err)
	case errors.Is(err, batcher.ErrBackpressure):
		return newProblem(http.StatusTooManyRequests, problem.CodeBackpressure, "the agent's produce buffer is full; retry shortly")
	case errors.Is(err, batcher.ErrClosed):
		return newProblem(http.StatusServiceUnavailable, problem.CodeShuttingDown, "the agent is shutting down; retry on another agent")
	case errors.Is(err, fetch.ErrBackpressure):
		return newProblem(http.StatusTooManyRequests, problem.CodeBackpressure, "too many fetch response bytes in flight; retry shortly")
	case errors.Is(err, fetch.ErrStorage):
		return newProblem(http.StatusServiceUnavailable, problem.CodeUnavailable, "object store read failed: %v", err)
	case errors.Is(err, context.Canceled):
		// The client went away (or the agent is stopping): nobody reads
		// this answer, but it must not count as an internal error.
		return newProblem(http.StatusServiceUnavailable, problem.CodeUnavailable, "request canceled")
	case errors.Is(err, batcher.ErrStorage):
		return newProblem(http.StatusServiceUnavailable, problem.CodeUnavailable, "object store write failed; nothing was committed: %v", err)
	case errors.Is(err, batcher.ErrTooLarge):
		return newProblem(http.StatusRequestEntityTooLarge, problem.CodeRequestTooLarge, "%v", err)
	case errors.Is(err, metadata.ErrUnavailable):
		return newProblem(http.StatusServiceUnavailable, problem.CodeUnavailable, "metadata store unavailable: %v", err)
	case errors.Is(err, metadata.ErrTopicNotFound):
		return notFound(problem.CodeTopicNotFound, "%v", err)
	case errors.Is(err, metadata.ErrPartitionNotFound):
		return notFound(problem.CodePartitionNotFound, "%v", err)
	case errors.Is(err, metadata.ErrTopicExists):
		return newProblem(http.StatusConflict, problem.CodeTopicExists, "%v", err)
	case errors.Is(err, metadata.ErrPartitionCount):
		return badRequest(problem.CodeInvalidPartitions, "%v", err)
	case errors.Is(err, metadata.ErrInvalidArgument):
		return badRequest(problem.CodeInvalidConfig, "%v", err)
	case errors.Is(err, metadata.ErrOutOfOrderSequence):
		return newProblem(http.StatusConflict, problem.CodeSequenceGap, "%v", err)
	case errors.Is(err, context.DeadlineExceeded):
		return newProblem(http.StatusServiceUnavailable, problem.CodeUnavailable, "timed out: %v", err)
	}
	return nil
}
