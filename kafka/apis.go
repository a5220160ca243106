package kafka

import (
	"context"
	"errors"
	"reflect"
	"runtime/debug"
	"sort"

	"github.com/twmb/franz-go/pkg/kmsg"

	"silt/auth"
)

// API keys with handlers here.
const (
	keyProduce                 int16 = 0
	keyFetch                   int16 = 1
	keyListOffsets             int16 = 2
	keyMetadata                int16 = 3
	keyOffsetCommit            int16 = 8
	keyOffsetFetch             int16 = 9
	keyFindCoordinator         int16 = 10
	keyJoinGroup               int16 = 11
	keyHeartbeat               int16 = 12
	keyLeaveGroup              int16 = 13
	keySyncGroup               int16 = 14
	keyDescribeGroups          int16 = 15
	keyListGroups              int16 = 16
	keySaslHandshake           int16 = 17
	keyApiVersions             int16 = 18
	keyCreateTopics            int16 = 19
	keyDeleteTopics            int16 = 20
	keyInitProducerID          int16 = 22
	keyDescribeConfigs         int16 = 32
	keySaslAuthenticate        int16 = 36
	keyCreatePartitions        int16 = 37
	keyDeleteGroups            int16 = 42
	keyIncrementalAlterConfigs int16 = 44
	keyOffsetDelete            int16 = 47
	keyDescribeCluster         int16 = 60
)

// versionRange is the versions of one API that are served.
type versionRange struct{ min, max int16 }

// apiVersions is what this listener serves. The floors leave out the
// message formats before RecordBatch v2 (Produce v0-2, Fetch v0-3) and
// ListOffsets v0's offset lists; the ceilings stop before topic IDs in
// Produce and Fetch (v13), ListOffsets' max-timestamp lookups (v7) and
// Metadata's top-level error (v13); the group APIs stop before KIP-848's
// fields (OffsetFetch v9), share groups (FindCoordinator v5) and topic ids
// (OffsetCommit v10); OffsetCommit v0 and OffsetFetch v0 kept offsets in
// ZooKeeper.
var apiVersions = map[int16]versionRange{
	keyProduce:                 {3, 12},
	keyFetch:                   {4, 12},
	keyListOffsets:             {1, 6},
	keyMetadata:                {0, 12},
	keyOffsetCommit:            {1, 9},
	keyOffsetFetch:             {1, 8},
	keyFindCoordinator:         {0, 4},
	keyJoinGroup:               {0, 9},
	keyHeartbeat:               {0, 4},
	keyLeaveGroup:              {0, 5},
	keySyncGroup:               {0, 5},
	keyDescribeGroups:          {0, 5},
	keyListGroups:              {0, 5},
	keySaslHandshake:           {0, 1},
	keySaslAuthenticate:        {0, 2},
	keyDeleteGroups:            {0, 2},
	keyOffsetDelete:            {0, 0},
	keyApiVersions:             {0, 4},
	keyCreateTopics:            {0, 7},
	keyDeleteTopics:            {0, 6},
	keyInitProducerID:          {0, 4},
	keyDescribeConfigs:         {0, 4},
	keyCreatePartitions:        {0, 3},
	keyIncrementalAlterConfigs: {0, 1},
	keyDescribeCluster:         {0, 1},
}

func served(key, version int16) bool {
	r, ok := apiVersions[key]
	return ok && version >= r.min && version <= r.max
}

// handle answers one call; the writer sends the answer in turn.
func (s *Server) handle(cl *call) {
	defer func() {
		if r := recover(); r != nil {
			s.logger.Error("kafka handler panicked; closing the connection", "api", kmsg.NameForKey(cl.key), "panic", r, "stack", string(debug.Stack()))
			cl.release()
			cl.closeAfter = true
			cl.resp = nil
			select {
			case <-cl.done:
			default:
				close(cl.done)
			}
		}
	}()
	defer cl.submitDone() // a produce request that failed early passes the token on
	if !cl.served {
		s.metrics.unsupported.Inc()
		cl.release()
		cl.reply(unsupportedResponse(cl))
		return
	}
	ctx := cl.c.ctx
	p, err := cl.c.who(ctx)
	if err != nil {
		// A revoked or expired key, or one that could not be checked:
		// the connection closes; the client connects again and
		// authenticates (or learns why it cannot).
		if errors.Is(err, auth.ErrUnauthenticated) {
			cl.c.s.logger.Info("kafka connection closed: its API key no longer holds", "remote", cl.c.remote(), "err", err)
		} else {
			cl.c.s.logger.Warn("kafka connection closed: its API key could not be checked", "remote", cl.c.remote(), "err", err)
		}
		cl.release()
		cl.closeAfter = true
		cl.reply(nil)
		cl.c.abort()
		return
	}
	ctx = auth.WithPrincipal(ctx, p)
	switch req := cl.req.(type) {
	case *kmsg.ProduceRequest:
		s.produce(ctx, cl, req) // releases the request's bytes itself
		return
	case *kmsg.FetchRequest:
		cl.release()
		cl.reply(s.fetch(ctx, cl, req))
		return
	}
	cl.release()
	var resp kmsg.Response
	switch req := cl.req.(type) {
	case *kmsg.ApiVersionsRequest:
		resp = apiVersionsResponse(req.Version, errNone)
	case *kmsg.MetadataRequest:
		resp = s.metadata(ctx, req)
	case *kmsg.ListOffsetsRequest:
		resp = s.listOffsets(ctx, req)
	case *kmsg.CreateTopicsRequest:
		resp = s.createTopics(ctx, cl, req)
	case *kmsg.DeleteTopicsRequest:
		resp = s.deleteTopics(ctx, cl, req)
	case *kmsg.CreatePartitionsRequest:
		resp = s.createPartitions(ctx, cl, req)
	case *kmsg.InitProducerIDRequest:
		resp = s.initProducerID(ctx, req)
	case *kmsg.DescribeConfigsRequest:
		resp = s.describeConfigs(ctx, req)
	case *kmsg.IncrementalAlterConfigsRequest:
		resp = s.incrementalAlterConfigs(ctx, cl, req)
	case *kmsg.DescribeClusterRequest:
		resp = s.describeCluster(ctx, req)
	case *kmsg.FindCoordinatorRequest:
		resp = s.findCoordinator(ctx, req)
	case *kmsg.JoinGroupRequest:
		resp = s.joinGroup(ctx, cl, req)
	case *kmsg.SyncGroupRequest:
		resp = s.syncGroup(ctx, req)
	case *kmsg.HeartbeatRequest:
		resp = s.heartbeat(ctx, req)
	case *kmsg.LeaveGroupRequest:
		resp = s.leaveGroup(ctx, req)
	case *kmsg.OffsetCommitRequest:
		resp = s.offsetCommit(ctx, cl, req)
	case *kmsg.OffsetFetchRequest:
		resp = s.offsetFetch(ctx, req)
	case *kmsg.ListGroupsRequest:
		resp = s.listGroups(ctx, req)
	case *kmsg.DescribeGroupsRequest:
		resp = s.describeGroups(ctx, req)
	case *kmsg.DeleteGroupsRequest:
		resp = s.deleteGroups(ctx, cl, req)
	case *kmsg.OffsetDeleteRequest:
		resp = s.offsetDelete(ctx, cl, req)
	case *kmsg.SASLHandshakeRequest:
		// Authenticated already, or keys are not required.
		r := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
		if s.cfg.RequireAuth {
			r.ErrorCode, r.SupportedMechanisms = errIllegalSASLState, mechanisms
			cl.closeAfter = true
		} else {
			r.ErrorCode, r.SupportedMechanisms = errUnsupportedSASLMechanism, []string{}
		}
		resp = r
	case *kmsg.SASLAuthenticateRequest:
		r := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		r.ErrorCode, r.ErrorMessage = errIllegalSASLState, strPtr("the connection is authenticated already, or keys are not required")
		cl.closeAfter = true
		resp = r
	default:
		resp = unsupportedResponse(cl)
	}
	cl.reply(resp)
}

// apiVersionsResponse lists the served APIs.
func apiVersionsResponse(version int16, code int16) *kmsg.ApiVersionsResponse {
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(version)
	resp.ErrorCode = code
	keys := make([]int16, 0, len(apiVersions))
	for k := range apiVersions {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	for _, k := range keys {
		r := apiVersions[k]
		ak := kmsg.NewApiVersionsResponseApiKey()
		ak.ApiKey, ak.MinVersion, ak.MaxVersion = k, r.min, r.max
		resp.ApiKeys = append(resp.ApiKeys, ak)
	}
	return resp
}

// unsupportedResponse answers an API or version that is not served:
// ApiVersions in version 0 with the served list (as Kafka does, so the
// client retries with a version it finds there), anything else with
// UNSUPPORTED_VERSION in its top-level error code when the response has
// one, and empty otherwise.
func unsupportedResponse(cl *call) kmsg.Response {
	if cl.key == keyApiVersions {
		return apiVersionsResponse(0, errUnsupportedVersion)
	}
	resp := cl.req.ResponseKind()
	resp.SetVersion(cl.version)
	if f := reflect.ValueOf(resp).Elem().FieldByName("ErrorCode"); f.IsValid() && f.Kind() == reflect.Int16 && f.CanSet() {
		f.SetInt(int64(errUnsupportedVersion))
	}
	return resp
}

// detached bounds work that must not stop half-way when a client goes
// away (topic admin), to a request timeout of its own.
func detached(ctx context.Context, timeoutMs int32) (context.Context, context.CancelFunc) {
	d := defaultAdminTimeout
	if timeoutMs > 0 {
		d = min(msDuration(timeoutMs), maxAdminTimeout)
	}
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}
