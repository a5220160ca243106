package agent

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"silt/batcher"
	"silt/binformat"
	"silt/fetch"
	"silt/groups"
	"silt/metadata"
	"silt/problem"
)

// domainError is how one sentinel of the packages below reaches clients.
type domainError struct {
	sentinel error
	status   int
	code     problem.Code
	// detail, when set, replaces the error's own words: for the
	// retriable failures, whose chain names objects, hosts or SQL.
	detail string
	// fallback is the detail when the error says nothing but its sentinel.
	fallback string
	// hint is appended to the detail.
	hint string
}

// domainErrors maps sentinels to problems, most specific first: consumer
// groups, whose sentinels wrap metadata's, come before metadata.
var domainErrors = []domainError{
	{sentinel: groups.ErrInvalidName, status: http.StatusBadRequest, code: problem.CodeInvalidGroupName, fallback: "invalid group name"},
	{sentinel: groups.ErrInvalidArgument, status: http.StatusBadRequest, code: problem.CodeInvalidParameter, fallback: "invalid request"},
	{sentinel: groups.ErrInvalidOffset, status: http.StatusBadRequest, code: problem.CodeInvalidOffset, fallback: "offset outside the partition"},
	{sentinel: groups.ErrGroupNotFound, status: http.StatusNotFound, code: problem.CodeGroupNotFound, fallback: "the group does not exist"},
	{sentinel: groups.ErrMemberNotFound, status: http.StatusNotFound, code: problem.CodeMemberNotFound, fallback: "no such member", hint: "; join again without a member id"},
	{sentinel: groups.ErrTopicNotFound, status: http.StatusNotFound, code: problem.CodeTopicNotFound, fallback: "the topic does not exist"},
	{sentinel: groups.ErrPartitionNotFound, status: http.StatusNotFound, code: problem.CodePartitionNotFound, fallback: "the partition does not exist"},
	{sentinel: groups.ErrStaleGeneration, status: http.StatusConflict, code: problem.CodeStaleGeneration, fallback: "the group rebalanced; join again with the member id"},
	{sentinel: groups.ErrNotAssigned, status: http.StatusConflict, code: problem.CodeNotAssigned, fallback: "the partition is not assigned to the member"},
	{sentinel: groups.ErrGroupNotEmpty, status: http.StatusConflict, code: problem.CodeGroupNotEmpty, fallback: "the group has members"},
	{sentinel: groups.ErrGroupFull, status: http.StatusConflict, code: problem.CodeGroupFull, fallback: "the group is full"},
	{sentinel: groups.ErrProtocolMismatch, status: http.StatusConflict, code: problem.CodeInconsistentGroupProtocol, fallback: "the group is consumed over the Kafka protocol"},
	{sentinel: batcher.ErrBackpressure, status: http.StatusTooManyRequests, code: problem.CodeBackpressure, detail: "the agent's produce buffer is full; retry shortly"},
	{sentinel: batcher.ErrClosed, status: http.StatusServiceUnavailable, code: problem.CodeShuttingDown, detail: "the agent is shutting down; retry on another agent"},
	{sentinel: fetch.ErrBackpressure, status: http.StatusTooManyRequests, code: problem.CodeBackpressure, detail: "too many fetch response bytes in flight; retry shortly"},
	{sentinel: fetch.ErrStorage, status: http.StatusServiceUnavailable, code: problem.CodeUnavailable, detail: "reading from the object store failed; retry shortly"},
	// The client went away (or the agent is stopping): nobody reads this
	// answer, but it must not count as an internal error.
	{sentinel: context.Canceled, status: http.StatusServiceUnavailable, code: problem.CodeUnavailable, detail: "request canceled"},
	{sentinel: batcher.ErrStorage, status: http.StatusServiceUnavailable, code: problem.CodeUnavailable, detail: "writing to the object store failed; nothing was committed; retry shortly"},
	{sentinel: batcher.ErrTooLarge, status: http.StatusRequestEntityTooLarge, code: problem.CodeRequestTooLarge, fallback: "the request is larger than the agent's produce buffer"},
	{sentinel: metadata.ErrUnavailable, status: http.StatusServiceUnavailable, code: problem.CodeUnavailable, detail: "the metadata store is unavailable; retry shortly"},
	{sentinel: metadata.ErrTopicNotFound, status: http.StatusNotFound, code: problem.CodeTopicNotFound, fallback: "the topic does not exist"},
	{sentinel: metadata.ErrPartitionNotFound, status: http.StatusNotFound, code: problem.CodePartitionNotFound, fallback: "the partition does not exist"},
	{sentinel: metadata.ErrTopicExists, status: http.StatusConflict, code: problem.CodeTopicExists, fallback: "the topic already exists"},
	{sentinel: metadata.ErrPartitionQuota, status: http.StatusConflict, code: problem.CodePartitionQuota, fallback: "the cluster's partition quota would be exceeded", hint: "; delete topics or raise --max-cluster-partitions"},
	{sentinel: metadata.ErrPartitionCount, status: http.StatusBadRequest, code: problem.CodeInvalidPartitions, fallback: "a topic's partition count can only grow"},
	{sentinel: metadata.ErrInvalidArgument, status: http.StatusBadRequest, code: problem.CodeInvalidConfig, fallback: "invalid topic config"},
	{sentinel: metadata.ErrSegmentExpired, status: http.StatusServiceUnavailable, code: problem.CodeUnavailable, detail: "the write could not be committed in time; nothing was written; retry"},
	{sentinel: metadata.ErrUnknownProducer, status: http.StatusConflict, code: problem.CodeUnknownProducer, detail: "the producer id was not issued by this cluster or has expired; get a new one from POST /v1/producers"},
	{sentinel: metadata.ErrProducerFenced, status: http.StatusConflict, code: problem.CodeFenced, detail: "a newer instance of this producer id took over; get a new producer id"},
	{sentinel: metadata.ErrInvalidTimestamp, status: http.StatusBadRequest, code: problem.CodeInvalidTimestamp, fallback: "a timestamp is outside the topic's bounds"},
	{sentinel: metadata.ErrOutOfOrderSequence, status: http.StatusConflict, code: problem.CodeSequenceGap, fallback: "the sequence number is not the next one"},
	{sentinel: context.DeadlineExceeded, status: http.StatusServiceUnavailable, code: problem.CodeUnavailable, detail: "the request timed out; retry shortly"},
}

// sentinelTexts are the words of every sentinel, which details leave out:
// "topic \"nope\" does not exist: metadata: topic not found" is logged as
// it is and tells the client `topic "nope" does not exist`.
var sentinelTexts = func() []string {
	var out []string
	for _, d := range domainErrors {
		out = append(out, d.sentinel.Error())
	}
	out = append(out, fetch.ErrOffsetOutOfRange.Error(), metadata.ErrFenced.Error(), metadata.ErrGroupNotFound.Error(),
		binformat.ErrMalformed.Error(), binformat.ErrTooMany.Error(), binformat.ErrTooManyHeaders.Error())
	return out
}()

// mapDomainError translates errors of the packages below into problems.
// It returns nil for errors it does not know.
func mapDomainError(err error) *problem.Details {
	var mm *metadata.OffsetMismatchError
	if errors.As(err, &mm) {
		p := newProblem(http.StatusConflict, problem.CodeOffsetMismatch,
			"expected the partition's next offset to be %d; it is %d, and nothing was written", mm.Expected, mm.NextOffset)
		p.NextOffset = &mm.NextOffset
		return p
	}
	var oor *fetch.OutOfRangeError
	if errors.As(err, &oor) {
		return outOfRange(oor)
	}
	var tim *groups.TopicIDMismatchError
	if errors.As(err, &tim) {
		return topicIDMismatch(tim.Topic, tim.Pinned, tim.Current)
	}
	var full *groups.GroupFullError
	if errors.As(err, &full) {
		// Retriable: members that are not heard from expire and free
		// their places; Retry-After says when the first one could.
		p := newProblem(http.StatusConflict, problem.CodeGroupFull,
			"group %q is full: it has %d members, the most allowed; retry after %d s, when a member may have expired", full.Group, full.Members, int(full.RetryAfter/time.Second))
		p.Retriable, p.RetryAfter = true, int(full.RetryAfter/time.Second)
		return p
	}
	for _, d := range domainErrors {
		if !errors.Is(err, d.sentinel) {
			continue
		}
		detail := d.detail
		if detail == "" {
			detail = userDetail(err)
		}
		if detail == "" {
			detail = d.fallback
		}
		return newProblem(d.status, d.code, "%s%s", detail, d.hint)
	}
	return nil
}

// userDetail is err's text for clients: the wrapped chain without the
// sentinels' own words, which are for the logs ("metadata: topic not
// found"). Errors are worded so that what remains reads on its own.
func userDetail(err error) string {
	s := err.Error()
	for _, t := range sentinelTexts {
		if !strings.Contains(s, t) {
			continue
		}
		s = strings.ReplaceAll(s, ": "+t, "")
		s = strings.ReplaceAll(s, t+": ", "")
		s = strings.ReplaceAll(s, t, "")
	}
	return strings.TrimSpace(s)
}

// outOfRange is the 416 of a fetch outside the partition's offsets.
func outOfRange(oor *fetch.OutOfRangeError) *problem.Details {
	var p *problem.Details
	if oor.Offset < oor.LogStartOffset {
		p = newProblem(http.StatusRequestedRangeNotSatisfiable, problem.CodeOffsetOutOfRange,
			"offset %d is below the log start offset %d (retention removed it); the partition holds offsets from %d up to the high watermark %d",
			oor.Offset, oor.LogStartOffset, oor.LogStartOffset, oor.HighWatermark)
	} else {
		p = newProblem(http.StatusRequestedRangeNotSatisfiable, problem.CodeOffsetOutOfRange,
			"offset %d is past the high watermark %d, the offset of the next record to be written; the partition holds offsets from %d",
			oor.Offset, oor.HighWatermark, oor.LogStartOffset)
	}
	p.LogStartOffset, p.HighWatermark = &oor.LogStartOffset, &oor.HighWatermark
	return p
}
