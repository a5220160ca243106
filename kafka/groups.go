package kafka

import (
	"context"
	"errors"
	"math"
	"net"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"

	"silt/auth"
	"silt/groups"
	"silt/metadata"
)

// Consumer groups: Kafka's classic protocol, run by the group coordinator
// (package groups) with its state in Postgres, so that the members of a
// group may reach different agents. Every agent names the advertised
// address as the coordinator of every group.

// consumerProtocol is the protocol type of Kafka's consumers, whose
// metadata and assignments name topics and partitions.
const consumerProtocol = "consumer"

// groupContext ends when the connection closes or the listener begins
// shutting down: a parked JoinGroup or SyncGroup then answers
// NOT_COORDINATOR and its client looks for the coordinator again (through
// the load balancer, another agent).
func (s *Server) groupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	s.metrics.groupWaits.Inc()
	go func() {
		select {
		case <-s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		cancel()
		s.metrics.groupWaits.Dec()
	}
}

// findCoordinator names the one broker, the advertised address.
func (s *Server) findCoordinator(ctx context.Context, req *kmsg.FindCoordinatorRequest) *kmsg.FindCoordinatorResponse {
	resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
	keys := req.CoordinatorKeys
	if req.Version < 4 {
		keys = []string{req.CoordinatorKey}
	}
	for _, key := range keys {
		c := kmsg.NewFindCoordinatorResponseCoordinator()
		c.Key, c.NodeID, c.Host, c.Port = key, -1, "", -1
		switch {
		case req.CoordinatorType != 0:
			c.ErrorCode = errInvalidRequest
			c.ErrorMessage = strPtr("Silt coordinates consumer groups only; it serves no transactions")
		case !allowed(ctx, auth.OpDescribe, auth.ResourceGroup, key):
			c.ErrorCode = errGroupAuthorizationFailed
		default:
			c.NodeID, c.Host, c.Port = nodeID, s.host, s.port
		}
		resp.Coordinators = append(resp.Coordinators, c)
	}
	if req.Version < 4 && len(resp.Coordinators) == 1 {
		c := resp.Coordinators[0]
		resp.ErrorCode, resp.ErrorMessage, resp.NodeID, resp.Host, resp.Port = c.ErrorCode, c.ErrorMessage, c.NodeID, c.Host, c.Port
		resp.Coordinators = nil
	}
	return resp
}

// clientHost is the client's address as Kafka shows it ("/1.2.3.4").
func clientHost(c *conn) string {
	host, _, err := net.SplitHostPort(c.nc.RemoteAddr().String())
	if err != nil {
		return ""
	}
	return "/" + host
}

func (s *Server) joinGroup(ctx context.Context, cl *call, req *kmsg.JoinGroupRequest) *kmsg.JoinGroupResponse {
	resp := req.ResponseKind().(*kmsg.JoinGroupResponse)
	resp.Generation, resp.MemberID = -1, req.MemberID
	if !allowed(ctx, auth.OpConsume, auth.ResourceGroup, req.Group) {
		resp.ErrorCode = errGroupAuthorizationFailed
		return resp
	}
	jr := groups.KafkaJoinRequest{
		MemberID: req.MemberID, ClientID: cl.clientID, ClientHost: clientHost(cl.c), ProtocolType: req.ProtocolType,
		SessionTimeout: msDuration(req.SessionTimeoutMillis), RequireKnownMemberID: req.Version >= 4, SkipAssignment: req.Version >= 9,
	}
	if req.Version >= 1 {
		jr.RebalanceTimeout = msDuration(req.RebalanceTimeoutMillis)
	}
	if req.InstanceID != nil {
		jr.InstanceID = *req.InstanceID
	}
	for _, p := range req.Protocols {
		jr.Protocols = append(jr.Protocols, metadata.GroupProtocol{Name: p.Name, Metadata: p.Metadata})
		if req.ProtocolType == consumerProtocol && jr.Subscription == nil {
			var md kmsg.ConsumerMemberMetadata
			if md.ReadFrom(p.Metadata) == nil {
				jr.Subscription = md.Topics
			}
		}
	}
	gctx, cancel := s.groupContext(ctx)
	defer cancel()
	res, err := s.deps.Groups.KafkaJoin(gctx, req.Group, jr)
	if err != nil {
		resp.ErrorCode = groupErrorCode(err)
		var mir *groups.MemberIDRequiredError
		switch {
		case errors.As(err, &mir):
			resp.MemberID = mir.MemberID
		case resp.ErrorCode == errUnknownMemberID:
			resp.MemberID = ""
		}
		s.logGroupError("JoinGroup", req.Group, err, resp.ErrorCode)
		return resp
	}
	resp.Generation = int32(res.Generation)
	resp.ProtocolType, resp.Protocol = strPtr(res.ProtocolType), strPtr(res.ProtocolName)
	resp.LeaderID, resp.MemberID, resp.SkipAssignment = res.Leader, res.MemberID, res.SkipAssignment
	for _, m := range res.Members {
		rm := kmsg.NewJoinGroupResponseMember()
		rm.MemberID, rm.ProtocolMetadata = m.ID, m.Metadata
		if m.InstanceID != "" {
			rm.InstanceID = strPtr(m.InstanceID)
		}
		resp.Members = append(resp.Members, rm)
	}
	return resp
}

// logGroupError logs what a client cannot be expected to cause: failures
// of the services below.
func (s *Server) logGroupError(api, group string, err error, code int16) {
	switch code {
	case errCoordinatorNotAvailable, errUnknownServerError, errKafkaStorageError:
		s.logger.Warn("kafka group request failed", "api", api, "group", group, "err", err)
	default:
		s.logger.Debug("kafka group request refused", "api", api, "group", group, "code", code, "err", err)
	}
}

// decodeAssignment reads the partitions of a consumer-protocol assignment.
func decodeAssignment(protocolType string, b []byte) []groups.TopicPartitionName {
	if protocolType != consumerProtocol || len(b) == 0 {
		return nil
	}
	var a kmsg.ConsumerMemberAssignment
	if a.ReadFrom(b) != nil {
		return nil
	}
	var out []groups.TopicPartitionName
	for _, t := range a.Topics {
		for _, p := range t.Partitions {
			out = append(out, groups.TopicPartitionName{Topic: t.Topic, Partition: p})
		}
	}
	return out
}

func (s *Server) syncGroup(ctx context.Context, req *kmsg.SyncGroupRequest) *kmsg.SyncGroupResponse {
	resp := req.ResponseKind().(*kmsg.SyncGroupResponse)
	resp.MemberAssignment = []byte{}
	if !allowed(ctx, auth.OpConsume, auth.ResourceGroup, req.Group) {
		resp.ErrorCode = errGroupAuthorizationFailed
		return resp
	}
	sr := groups.KafkaSyncRequest{MemberID: req.MemberID, Generation: int64(req.Generation), Decode: decodeAssignment}
	if req.InstanceID != nil {
		sr.InstanceID = *req.InstanceID
	}
	if req.ProtocolType != nil {
		sr.ProtocolType = *req.ProtocolType
	}
	if req.Protocol != nil {
		sr.ProtocolName = *req.Protocol
	}
	for _, a := range req.GroupAssignment {
		sr.Assignments = append(sr.Assignments, groups.KafkaAssignment{MemberID: a.MemberID, Assignment: a.MemberAssignment})
	}
	gctx, cancel := s.groupContext(ctx)
	defer cancel()
	res, err := s.deps.Groups.KafkaSync(gctx, req.Group, sr)
	if err != nil {
		resp.ErrorCode = groupErrorCode(err)
		s.logGroupError("SyncGroup", req.Group, err, resp.ErrorCode)
		return resp
	}
	resp.MemberAssignment = res.Assignment
	resp.ProtocolType, resp.Protocol = strPtr(res.ProtocolType), strPtr(res.ProtocolName)
	return resp
}

func (s *Server) heartbeat(ctx context.Context, req *kmsg.HeartbeatRequest) *kmsg.HeartbeatResponse {
	resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
	if !allowed(ctx, auth.OpConsume, auth.ResourceGroup, req.Group) {
		resp.ErrorCode = errGroupAuthorizationFailed
		return resp
	}
	instance := ""
	if req.InstanceID != nil {
		instance = *req.InstanceID
	}
	err := s.deps.Groups.KafkaHeartbeat(ctx, req.Group, req.MemberID, instance, int64(req.Generation))
	resp.ErrorCode = groupErrorCode(err)
	if err != nil && resp.ErrorCode != errRebalanceInProgress {
		s.logGroupError("Heartbeat", req.Group, err, resp.ErrorCode)
	}
	return resp
}

func (s *Server) leaveGroup(ctx context.Context, req *kmsg.LeaveGroupRequest) *kmsg.LeaveGroupResponse {
	resp := req.ResponseKind().(*kmsg.LeaveGroupResponse)
	members := req.Members
	if req.Version < 3 {
		m := kmsg.NewLeaveGroupRequestMember()
		m.MemberID = req.MemberID
		members = []kmsg.LeaveGroupRequestMember{m}
	}
	if !allowed(ctx, auth.OpConsume, auth.ResourceGroup, req.Group) {
		resp.ErrorCode = errGroupAuthorizationFailed
		return resp
	}
	refs := make([]groups.KafkaMemberRef, len(members))
	for i, m := range members {
		refs[i].MemberID = m.MemberID
		if m.InstanceID != nil {
			refs[i].InstanceID = *m.InstanceID
		}
	}
	errs, err := s.deps.Groups.KafkaLeave(ctx, req.Group, refs)
	if err != nil {
		resp.ErrorCode = groupErrorCode(err)
		if resp.ErrorCode == errGroupIDNotFound {
			resp.ErrorCode = errUnknownMemberID
		}
		s.logGroupError("LeaveGroup", req.Group, err, resp.ErrorCode)
		return resp
	}
	if req.Version < 3 {
		resp.ErrorCode = groupErrorCode(errs[0])
		return resp
	}
	for i, m := range members {
		rm := kmsg.NewLeaveGroupResponseMember()
		rm.MemberID, rm.InstanceID, rm.ErrorCode = m.MemberID, m.InstanceID, groupErrorCode(errs[i])
		resp.Members = append(resp.Members, rm)
	}
	return resp
}

func (s *Server) offsetCommit(ctx context.Context, cl *call, req *kmsg.OffsetCommitRequest) *kmsg.OffsetCommitResponse {
	resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
	groupOK := allowed(ctx, auth.OpConsume, auth.ResourceGroup, req.Group)
	cr := groups.KafkaCommitRequest{MemberID: req.MemberID, Generation: int64(req.Generation)}
	if req.Version < 1 {
		cr.Generation = -1
	}
	if req.InstanceID != nil {
		cr.InstanceID = *req.InstanceID
	}
	type slot struct{ t, p int }
	var slots []slot // of cr.Offsets
	resp.Topics = make([]kmsg.OffsetCommitResponseTopic, len(req.Topics))
	for i, rt := range req.Topics {
		ot := &resp.Topics[i]
		*ot = kmsg.NewOffsetCommitResponseTopic()
		ot.Topic = rt.Topic
		ot.Partitions = make([]kmsg.OffsetCommitResponseTopicPartition, len(rt.Partitions))
		topicOK := allowed(ctx, auth.OpConsume, auth.ResourceTopic, rt.Topic)
		for j, rp := range rt.Partitions {
			p := &ot.Partitions[j]
			*p = kmsg.NewOffsetCommitResponseTopicPartition()
			p.Partition = rp.Partition
			switch {
			case !groupOK:
				p.ErrorCode = errGroupAuthorizationFailed
			case !topicOK:
				p.ErrorCode = errTopicAuthorizationFailed
			default:
				meta := ""
				if rp.Metadata != nil {
					meta = *rp.Metadata
				}
				cr.Offsets = append(cr.Offsets, groups.OffsetCommit{Topic: rt.Topic, Partition: rp.Partition, Offset: rp.Offset, Metadata: meta})
				slots = append(slots, slot{i, j})
			}
		}
	}
	if len(cr.Offsets) == 0 {
		return resp
	}
	errs, err := s.deps.Groups.KafkaCommit(ctx, req.Group, cr)
	if err != nil {
		s.logGroupError("OffsetCommit", req.Group, err, groupErrorCode(err))
	}
	committed := 0
	for k, sl := range slots {
		code := groupErrorCode(err)
		if err == nil {
			code = groupErrorCode(errs[k])
		}
		resp.Topics[sl.t].Partitions[sl.p].ErrorCode = code
		if code == errNone {
			committed++
		}
	}
	if cr.Standalone() && committed > 0 {
		// Offsets set for a group without members: an offset reset.
		var offs []map[string]any
		for k, o := range cr.Offsets {
			if err == nil && errs[k] == nil {
				offs = append(offs, map[string]any{"topic": o.Topic, "partition": o.Partition, "offset": o.Offset})
			}
		}
		s.audit(ctx, cl, auth.ActionOffsetReset, auth.ResourceGroup, req.Group, map[string]any{"offsets": offs})
	}
	return resp
}

func (s *Server) offsetFetch(ctx context.Context, req *kmsg.OffsetFetchRequest) *kmsg.OffsetFetchResponse {
	resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
	if req.Version >= 8 {
		for _, rg := range req.Groups {
			var topics []offsetFetchTopic
			if rg.Topics != nil {
				topics = []offsetFetchTopic{}
				for _, t := range rg.Topics {
					topics = append(topics, offsetFetchTopic{t.Topic, t.Partitions})
				}
			}
			code, parts := s.groupOffsets(ctx, rg.Group, topics)
			og := kmsg.NewOffsetFetchResponseGroup()
			og.Group, og.ErrorCode = rg.Group, code
			for _, t := range parts {
				ot := kmsg.NewOffsetFetchResponseGroupTopic()
				ot.Topic = t.topic
				for _, p := range t.parts {
					op := kmsg.NewOffsetFetchResponseGroupTopicPartition()
					op.Partition, op.Offset, op.LeaderEpoch, op.Metadata, op.ErrorCode = p.Partition, p.Offset, -1, p.Metadata, p.ErrorCode
					ot.Partitions = append(ot.Partitions, op)
				}
				og.Topics = append(og.Topics, ot)
			}
			resp.Groups = append(resp.Groups, og)
		}
		return resp
	}
	var topics []offsetFetchTopic
	if req.Topics != nil {
		topics = []offsetFetchTopic{}
		for _, t := range req.Topics {
			topics = append(topics, offsetFetchTopic{t.Topic, t.Partitions})
		}
	}
	code, parts := s.groupOffsets(ctx, req.Group, topics)
	if req.Version >= 2 {
		resp.ErrorCode = code
	}
	for _, t := range parts {
		ot := kmsg.NewOffsetFetchResponseTopic()
		ot.Topic = t.topic
		for _, p := range t.parts {
			if req.Version < 2 && code != errNone {
				p.ErrorCode = code
			}
			ot.Partitions = append(ot.Partitions, p)
		}
		resp.Topics = append(resp.Topics, ot)
	}
	return resp
}

type offsetFetchTopic struct {
	topic string
	parts []int32
}

type fetchedTopic struct {
	topic string
	parts []kmsg.OffsetFetchResponseTopicPartition
}

// groupOffsets answers one group of an OffsetFetch: the committed offsets
// of the named partitions (-1 where none), or of every partition with a
// committed offset that the key may see when topics is nil.
func (s *Server) groupOffsets(ctx context.Context, group string, topics []offsetFetchTopic) (int16, []fetchedTopic) {
	fail := func(code int16) (int16, []fetchedTopic) {
		var out []fetchedTopic
		for _, t := range topics {
			ft := fetchedTopic{topic: t.topic}
			for _, p := range t.parts {
				rp := kmsg.NewOffsetFetchResponseTopicPartition()
				rp.Partition, rp.Offset, rp.LeaderEpoch, rp.ErrorCode = p, -1, -1, code
				ft.parts = append(ft.parts, rp)
			}
			out = append(out, ft)
		}
		return code, out
	}
	if !allowed(ctx, auth.OpDescribe, auth.ResourceGroup, group) {
		return fail(errGroupAuthorizationFailed)
	}
	offs, err := s.deps.Groups.KafkaOffsets(ctx, group)
	if err != nil {
		code := groupErrorCode(err)
		s.logGroupError("OffsetFetch", group, err, code)
		return fail(code)
	}
	type tp struct {
		topic string
		part  int32
	}
	byTP := map[tp]metadata.CommittedOffset{}
	for _, o := range offs {
		byTP[tp{o.Topic, o.Partition}] = o
	}
	var out []fetchedTopic
	if topics == nil {
		for _, o := range offs {
			if !allowed(ctx, auth.OpDescribe, auth.ResourceTopic, o.Topic) {
				continue
			}
			if len(out) == 0 || out[len(out)-1].topic != o.Topic {
				out = append(out, fetchedTopic{topic: o.Topic})
			}
			rp := kmsg.NewOffsetFetchResponseTopicPartition()
			rp.Partition, rp.Offset, rp.LeaderEpoch, rp.Metadata = o.Partition, o.Offset, -1, strPtr(o.Metadata)
			out[len(out)-1].parts = append(out[len(out)-1].parts, rp)
		}
		return errNone, out
	}
	for _, t := range topics {
		ft := fetchedTopic{topic: t.topic}
		ok := allowed(ctx, auth.OpDescribe, auth.ResourceTopic, t.topic)
		for _, p := range t.parts {
			rp := kmsg.NewOffsetFetchResponseTopicPartition()
			rp.Partition, rp.Offset, rp.LeaderEpoch, rp.Metadata = p, -1, -1, strPtr("")
			switch o, found := byTP[tp{t.topic, p}]; {
			case !ok:
				rp.ErrorCode = errTopicAuthorizationFailed
			case found:
				rp.Offset, rp.Metadata = o.Offset, strPtr(o.Metadata)
			}
			ft.parts = append(ft.parts, rp)
		}
		out = append(out, ft)
	}
	return errNone, out
}

func (s *Server) listGroups(ctx context.Context, req *kmsg.ListGroupsRequest) *kmsg.ListGroupsResponse {
	resp := req.ResponseKind().(*kmsg.ListGroupsResponse)
	all, err := s.deps.Groups.List(ctx, "", 0)
	if err != nil {
		resp.ErrorCode = groupErrorCode(err)
		s.logGroupError("ListGroups", "", err, resp.ErrorCode)
		return resp
	}
	seeAll := allowed(ctx, auth.OpDescribe, auth.ResourceCluster, "")
	for _, g := range all {
		if !seeAll && !allowed(ctx, auth.OpDescribe, auth.ResourceGroup, g.Name) {
			continue
		}
		if len(req.StatesFilter) > 0 && !slices.ContainsFunc(req.StatesFilter, func(st string) bool { return strings.EqualFold(st, g.KafkaState) }) {
			continue
		}
		if len(req.TypesFilter) > 0 && !slices.ContainsFunc(req.TypesFilter, func(t string) bool { return strings.EqualFold(t, "classic") }) {
			continue
		}
		rg := kmsg.NewListGroupsResponseGroup()
		rg.Group, rg.ProtocolType, rg.GroupState, rg.GroupType = g.Name, g.ProtocolType, g.KafkaState, "classic"
		resp.Groups = append(resp.Groups, rg)
	}
	return resp
}

// Kafka's ACL operation codes, for DescribeGroups' authorized operations.
const (
	aclRead     = 3
	aclDelete   = 6
	aclDescribe = 8
)

func (s *Server) describeGroups(ctx context.Context, req *kmsg.DescribeGroupsRequest) *kmsg.DescribeGroupsResponse {
	resp := req.ResponseKind().(*kmsg.DescribeGroupsResponse)
	for _, name := range req.Groups {
		g := kmsg.NewDescribeGroupsResponseGroup()
		g.Group, g.AuthorizedOperations = name, math.MinInt32
		if !allowed(ctx, auth.OpDescribe, auth.ResourceGroup, name) {
			g.ErrorCode = errGroupAuthorizationFailed
			resp.Groups = append(resp.Groups, g)
			continue
		}
		d, err := s.deps.Groups.KafkaDescribe(ctx, name)
		switch {
		case errors.Is(err, groups.ErrGroupNotFound):
			g.State = "Dead" // as Kafka describes a group it does not know
		case err != nil:
			g.ErrorCode = groupErrorCode(err)
			s.logGroupError("DescribeGroups", name, err, g.ErrorCode)
		default:
			g.State, g.ProtocolType, g.Protocol = d.State, d.ProtocolType, d.ProtocolName
			for _, m := range d.Members {
				gm := kmsg.NewDescribeGroupsResponseGroupMember()
				gm.MemberID, gm.ClientID, gm.ClientHost = m.ID, m.ClientID, m.ClientHost
				gm.ProtocolMetadata, gm.MemberAssignment = orEmpty(m.Metadata), orEmpty(m.Assignment)
				if m.InstanceID != "" {
					gm.InstanceID = strPtr(m.InstanceID)
				}
				g.Members = append(g.Members, gm)
			}
		}
		if req.IncludeAuthorizedOperations {
			g.AuthorizedOperations = 0
			for op, code := range map[auth.Operation]int32{auth.OpConsume: aclRead, auth.OpDelete: aclDelete, auth.OpDescribe: aclDescribe} {
				if allowed(ctx, op, auth.ResourceGroup, name) {
					g.AuthorizedOperations |= 1 << code
				}
			}
		}
		resp.Groups = append(resp.Groups, g)
	}
	return resp
}

func orEmpty(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func (s *Server) deleteGroups(ctx context.Context, cl *call, req *kmsg.DeleteGroupsRequest) *kmsg.DeleteGroupsResponse {
	resp := req.ResponseKind().(*kmsg.DeleteGroupsResponse)
	for _, name := range req.Groups {
		g := kmsg.NewDeleteGroupsResponseGroup()
		g.Group = name
		if !allowed(ctx, auth.OpDelete, auth.ResourceGroup, name) {
			g.ErrorCode = errGroupAuthorizationFailed
		} else if err := s.deps.Groups.Delete(ctx, name); err != nil {
			g.ErrorCode = groupErrorCode(err)
			g.ErrorMessage = strPtr(err.Error())
			s.logGroupError("DeleteGroups", name, err, g.ErrorCode)
		} else {
			s.audit(ctx, cl, auth.ActionGroupDelete, auth.ResourceGroup, name, nil)
		}
		resp.Groups = append(resp.Groups, g)
	}
	return resp
}

func (s *Server) offsetDelete(ctx context.Context, cl *call, req *kmsg.OffsetDeleteRequest) *kmsg.OffsetDeleteResponse {
	resp := req.ResponseKind().(*kmsg.OffsetDeleteResponse)
	if !allowed(ctx, auth.OpDelete, auth.ResourceGroup, req.Group) {
		resp.ErrorCode = errGroupAuthorizationFailed
		return resp
	}
	type slot struct{ t, p int }
	var parts []groups.TopicPartitionName
	var slots []slot
	for i, rt := range req.Topics {
		ot := kmsg.NewOffsetDeleteResponseTopic()
		ot.Topic = rt.Topic
		ok := allowed(ctx, auth.OpConsume, auth.ResourceTopic, rt.Topic)
		for j, rp := range rt.Partitions {
			op := kmsg.NewOffsetDeleteResponseTopicPartition()
			op.Partition = rp.Partition
			if !ok {
				op.ErrorCode = errTopicAuthorizationFailed
			} else {
				parts = append(parts, groups.TopicPartitionName{Topic: rt.Topic, Partition: rp.Partition})
				slots = append(slots, slot{i, j})
			}
			ot.Partitions = append(ot.Partitions, op)
		}
		resp.Topics = append(resp.Topics, ot)
	}
	if len(parts) == 0 {
		return resp
	}
	errs, err := s.deps.Groups.KafkaDeleteOffsets(ctx, req.Group, parts)
	if err != nil {
		resp.ErrorCode = groupErrorCode(err)
		s.logGroupError("OffsetDelete", req.Group, err, resp.ErrorCode)
		return resp
	}
	var deleted []map[string]any
	for k, sl := range slots {
		code := groupErrorCode(errs[k])
		resp.Topics[sl.t].Partitions[sl.p].ErrorCode = code
		if code == errNone {
			deleted = append(deleted, map[string]any{"topic": parts[k].Topic, "partition": parts[k].Partition})
		}
	}
	if len(deleted) > 0 {
		s.audit(ctx, cl, auth.ActionOffsetDelete, auth.ResourceGroup, req.Group, map[string]any{"partitions": deleted})
	}
	return resp
}
