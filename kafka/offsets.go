package kafka

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"

	"silt/auth"
	"silt/metadata"
)

// listOffsets answers ListOffsets: -1 the high watermark, -2 the log
// start, a timestamp the first record at or after it.
func (s *Server) listOffsets(ctx context.Context, req *kmsg.ListOffsetsRequest) *kmsg.ListOffsetsResponse {
	resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
	for _, rt := range req.Topics {
		ot := kmsg.NewListOffsetsResponseTopic()
		ot.Topic = rt.Topic
		ok := allowed(ctx, auth.OpDescribe, auth.ResourceTopic, rt.Topic)
		var topic metadata.Topic
		var terr error
		if ok {
			topic, terr = s.topics.get(ctx, rt.Topic)
		}
		for _, rp := range rt.Partitions {
			p := kmsg.NewListOffsetsResponseTopicPartition()
			p.Partition = rp.Partition
			p.Timestamp, p.Offset, p.LeaderEpoch = -1, -1, -1
			switch {
			case !ok:
				p.ErrorCode = errTopicAuthorizationFailed
			case terr != nil:
				p.ErrorCode = errorCode(terr)
			case rp.Partition < 0 || rp.Partition >= topic.Partitions:
				p.ErrorCode = errUnknownTopicOrPartition
			default:
				p.ErrorCode = s.listOffset(ctx, topic, rp, &p)
			}
			ot.Partitions = append(ot.Partitions, p)
		}
		resp.Topics = append(resp.Topics, ot)
	}
	return resp
}

func (s *Server) listOffset(ctx context.Context, topic metadata.Topic, rp kmsg.ListOffsetsRequestTopicPartition, p *kmsg.ListOffsetsResponseTopicPartition) int16 {
	switch ts := rp.Timestamp; {
	case ts == -1 || ts == -2:
		st, err := s.deps.Fetcher.Offsets(ctx, topic.ID, rp.Partition)
		if err != nil {
			return errorCode(err)
		}
		p.Offset = st.HighWatermark
		if ts == -2 {
			p.Offset = st.LogStartOffset
		}
	case ts >= 0:
		off, at, found, err := s.deps.Fetcher.RecordForTimestamp(ctx, topic.ID, rp.Partition, ts)
		if err != nil {
			return errorCode(err)
		}
		if found {
			p.Offset, p.Timestamp = off, at
		}
	default:
		return errInvalidRequest
	}
	return errNone
}
