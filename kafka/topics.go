package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/singleflight"

	"silt/auth"
	"silt/metadata"
)

// nodeID is the one broker every agent presents itself as.
const nodeID int32 = 0

// Admin request timeouts: a request's own timeout, capped, or the default.
const (
	defaultAdminTimeout = 30 * time.Second
	maxAdminTimeout     = 2 * time.Minute
)

func msDuration(ms int32) time.Duration { return time.Duration(ms) * time.Millisecond }

var topicNameRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// validTopicName applies Kafka's rules (the HTTP API applies the same).
func validTopicName(name string) error {
	if name == "." || name == ".." || !topicNameRE.MatchString(name) {
		return fmt.Errorf("topic name %q must be 1 to 249 characters of [a-zA-Z0-9._-], and not . or ..", name)
	}
	return nil
}

// Topic IDs: Kafka names topics by UUID too. Silt's are derived from the
// topic's numeric id, so every agent gives the same one and a topic
// created again after a delete gets a new one: a version-8 (custom) UUID
// whose first six bytes spell "silt" and whose last eight hold the id.
var topicIDPrefix = [8]byte{'s', 'i', 'l', 't', 0, 0, 0x80, 0}

func topicUUID(id int64) [16]byte {
	var u [16]byte
	copy(u[:8], topicIDPrefix[:])
	binary.BigEndian.PutUint64(u[8:], uint64(id))
	u[8] |= 0x80 // RFC 9562 variant; ids stay below 2^62
	return u
}

// topicIDFromUUID reverses topicUUID; ok is false for a UUID it did not make.
func topicIDFromUUID(u [16]byte) (int64, bool) {
	if [8]byte(u[:8]) != topicIDPrefix || u[8]&0xc0 != 0x80 {
		return 0, false
	}
	u[8] &^= 0xc0
	return int64(binary.BigEndian.Uint64(u[8:])), true
}

// topicCache keeps recent topic descriptions so that produce and fetch do
// not read Postgres for every request; changes through this listener drop
// their entry at once, others are seen within the TTL (a deleted topic is
// caught at commit time regardless).
type topicCache struct {
	store  TopicStore
	ttl    time.Duration
	group  singleflight.Group
	mu     sync.Mutex
	byName map[string]cachedTopic
}

type cachedTopic struct {
	topic metadata.Topic
	at    time.Time
}

const (
	topicLookupTimeout = 10 * time.Second
	maxCachedTopics    = 10_000
)

func newTopicCache(store TopicStore, ttl time.Duration) *topicCache {
	return &topicCache{store: store, ttl: ttl, byName: map[string]cachedTopic{}}
}

func (c *topicCache) get(ctx context.Context, name string) (metadata.Topic, error) {
	c.mu.Lock()
	e, ok := c.byName[name]
	c.mu.Unlock()
	if ok && time.Since(e.at) < c.ttl {
		return e.topic, nil
	}
	v, err, _ := c.group.Do(name, func() (any, error) {
		// Shared by every caller waiting on this name: one client going
		// away must not fail the others.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), topicLookupTimeout)
		defer cancel()
		t, err := c.store.GetTopic(lctx, name)
		if err != nil {
			return nil, err
		}
		c.put(t)
		return t, nil
	})
	if err != nil {
		return metadata.Topic{}, err
	}
	return v.(metadata.Topic), nil
}

func (c *topicCache) put(t metadata.Topic) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.byName) >= maxCachedTopics {
		c.byName = map[string]cachedTopic{}
	}
	c.byName[t.Name] = cachedTopic{topic: t, at: time.Now()}
}

func (c *topicCache) forget(name string) {
	c.mu.Lock()
	delete(c.byName, name)
	c.mu.Unlock()
}

func strPtr(s string) *string { return &s }

// metadata answers Metadata: one broker, leader of every partition.
func (s *Server) metadata(ctx context.Context, req *kmsg.MetadataRequest) *kmsg.MetadataResponse {
	resp := req.ResponseKind().(*kmsg.MetadataResponse)
	b := kmsg.NewMetadataResponseBroker()
	b.NodeID, b.Host, b.Port = nodeID, s.host, s.port
	resp.Brokers = []kmsg.MetadataResponseBroker{b}
	resp.ClusterID = strPtr(s.cfg.ClusterID)
	resp.ControllerID = nodeID

	all := req.Topics == nil || (req.Version == 0 && len(req.Topics) == 0)
	if all {
		topics, err := s.deps.Topics.ListTopics(ctx, "", 0)
		if err != nil {
			// No topic-less error field before v13: answer the brokers
			// alone, and the client asks again.
			s.logger.Warn("kafka metadata: list topics", "err", err)
			return resp
		}
		for _, t := range topics {
			if allowed(ctx, auth.OpDescribe, auth.ResourceTopic, t.Name) {
				resp.Topics = append(resp.Topics, s.topicMetadata(t))
			}
		}
		return resp
	}
	autoCreate := s.cfg.AutoCreateTopics && (req.Version < 4 || req.AllowAutoTopicCreation)
	for _, rt := range req.Topics {
		var t metadata.Topic
		var err error
		switch {
		case rt.Topic != nil && !allowed(ctx, auth.OpDescribe, auth.ResourceTopic, *rt.Topic):
			err = errTopicDenied
		case rt.Topic != nil:
			t, err = s.lookupOrCreate(ctx, *rt.Topic, autoCreate && allowed(ctx, auth.OpCreate, auth.ResourceTopic, *rt.Topic))
		case rt.TopicID != [16]byte{}:
			id, ok := topicIDFromUUID(rt.TopicID)
			if !ok {
				err = metadata.ErrTopicNotFound
				break
			}
			t, err = s.deps.Topics.GetTopicByID(ctx, id)
			if err == nil && !allowed(ctx, auth.OpDescribe, auth.ResourceTopic, t.Name) {
				err = errTopicDenied
			}
		default:
			err = errInvalidTopicName
		}
		if err != nil {
			mt := kmsg.NewMetadataResponseTopic()
			mt.Topic, mt.TopicID = rt.Topic, rt.TopicID
			mt.ErrorCode = topicErrorCode(err)
			resp.Topics = append(resp.Topics, mt)
			continue
		}
		resp.Topics = append(resp.Topics, s.topicMetadata(t))
	}
	return resp
}

var (
	errInvalidTopicName = errors.New("kafka: invalid topic name")
	errTopicDenied      = errors.New("kafka: the key may not describe the topic")
)

// topicErrorCode is errorCode for topic lookups.
func topicErrorCode(err error) int16 {
	switch {
	case errors.Is(err, errInvalidTopicName):
		return errInvalidTopic
	case errors.Is(err, errTopicDenied):
		return errTopicAuthorizationFailed
	}
	return errorCode(err)
}

// lookupOrCreate finds a topic, creating it when allowed and missing.
func (s *Server) lookupOrCreate(ctx context.Context, name string, create bool) (metadata.Topic, error) {
	if err := validTopicName(name); err != nil {
		return metadata.Topic{}, fmt.Errorf("%w: %v", errInvalidTopicName, err)
	}
	t, err := s.topics.get(ctx, name)
	if !create || !errors.Is(err, metadata.ErrTopicNotFound) {
		return t, err
	}
	cctx, cancel := detached(ctx, 0)
	defer cancel()
	t, err = s.deps.Topics.CreateTopic(cctx, name, s.cfg.DefaultPartitions, metadata.DefaultTopicConfig())
	if errors.Is(err, metadata.ErrTopicExists) {
		s.topics.forget(name)
		return s.topics.get(ctx, name) // created by someone else meanwhile
	}
	if err != nil {
		return t, err
	}
	s.logger.Info("kafka: topic auto-created", "topic", name, "partitions", t.Partitions)
	s.topics.put(t)
	return t, nil
}

func (s *Server) topicMetadata(t metadata.Topic) kmsg.MetadataResponseTopic {
	mt := kmsg.NewMetadataResponseTopic()
	mt.Topic = strPtr(t.Name)
	mt.TopicID = topicUUID(t.ID)
	mt.Partitions = make([]kmsg.MetadataResponseTopicPartition, t.Partitions)
	for i := range mt.Partitions {
		p := kmsg.NewMetadataResponseTopicPartition()
		p.Partition = int32(i)
		p.Leader = nodeID
		p.LeaderEpoch = -1 // no epochs: clients skip epoch validation
		p.Replicas = []int32{nodeID}
		p.ISR = []int32{nodeID}
		mt.Partitions[i] = p
	}
	return mt
}

// describeCluster names the one broker.
func (s *Server) describeCluster(ctx context.Context, req *kmsg.DescribeClusterRequest) *kmsg.DescribeClusterResponse {
	resp := req.ResponseKind().(*kmsg.DescribeClusterResponse)
	if !allowed(ctx, auth.OpDescribe, auth.ResourceCluster, "") {
		resp.ErrorCode = errClusterAuthorizationFailed
		return resp
	}
	resp.EndpointType = req.EndpointType
	resp.ClusterID = s.cfg.ClusterID
	resp.ControllerID = nodeID
	b := kmsg.NewDescribeClusterResponseBroker()
	b.NodeID, b.Host, b.Port = nodeID, s.host, s.port
	resp.Brokers = []kmsg.DescribeClusterResponseBroker{b}
	return resp
}

// createTopics creates topics, validating each on its own.
func (s *Server) createTopics(ctx context.Context, cl *call, req *kmsg.CreateTopicsRequest) *kmsg.CreateTopicsResponse {
	resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
	ctx, cancel := detached(ctx, req.TimeoutMillis)
	defer cancel()
	seen := map[string]int{}
	for _, rt := range req.Topics {
		seen[rt.Topic]++
	}
	for _, rt := range req.Topics {
		out := kmsg.NewCreateTopicsResponseTopic()
		out.Topic = rt.Topic
		fail := func(code int16, format string, args ...any) {
			out.ErrorCode = code
			out.ErrorMessage = strPtr(fmt.Sprintf(format, args...))
			out.NumPartitions, out.ReplicationFactor = -1, -1
		}
		parts := rt.NumPartitions
		if parts == -1 {
			parts = s.cfg.DefaultPartitions
		}
		cfg := metadata.DefaultTopicConfig()
		var cfgErr error
		for _, c := range rt.Configs {
			if cfgErr = setTopicConfig(&cfg, c.Name, c.Value, true); cfgErr != nil {
				break
			}
		}
		if cfgErr == nil {
			cfgErr = cfg.Validate()
		}
		switch {
		case seen[rt.Topic] > 1:
			fail(errInvalidRequest, "topic %q is named more than once in the request", rt.Topic)
		case !allowed(ctx, auth.OpCreate, auth.ResourceTopic, rt.Topic):
			fail(errTopicAuthorizationFailed, "the key may not create topic %q", rt.Topic)
		case validTopicName(rt.Topic) != nil:
			fail(errInvalidTopic, "%v", validTopicName(rt.Topic))
		case len(rt.ReplicaAssignment) > 0:
			fail(errInvalidReplicaAssignment, "Silt places partitions itself; send no replica assignment")
		case parts < 1 || parts > s.cfg.MaxPartitions:
			fail(errInvalidPartitions, "partitions must be between 1 and %d", s.cfg.MaxPartitions)
		case rt.ReplicationFactor == 0 || rt.ReplicationFactor < -1:
			fail(errInvalidReplicationFactor, "replication factor must be positive or -1 (the object store replicates)")
		case cfgErr != nil:
			fail(errInvalidConfig, "%v", cfgErr)
		case req.ValidateOnly:
			if _, err := s.deps.Topics.GetTopic(ctx, rt.Topic); err == nil {
				fail(errTopicAlreadyExists, "topic %q already exists", rt.Topic)
			} else if !errors.Is(err, metadata.ErrTopicNotFound) {
				fail(errorCode(err), "%v", err)
			}
		default:
			t, err := s.deps.Topics.CreateTopic(ctx, rt.Topic, parts, cfg)
			if err != nil {
				fail(errorCode(err), "%v", err)
				break
			}
			s.topics.put(t)
			out.TopicID = topicUUID(t.ID)
			configs := map[string]*string{}
			for _, c := range rt.Configs {
				configs[c.Name] = c.Value
			}
			s.audit(ctx, cl, auth.ActionTopicCreate, auth.ResourceTopic, rt.Topic, map[string]any{"partitions": parts, "configs": configs})
		}
		if out.ErrorCode == errNone {
			out.NumPartitions, out.ReplicationFactor = parts, 1
			out.Configs = createdConfigs(cfg)
		}
		resp.Topics = append(resp.Topics, out)
	}
	return resp
}

func createdConfigs(cfg metadata.TopicConfig) []kmsg.CreateTopicsResponseTopicConfig {
	var out []kmsg.CreateTopicsResponseTopicConfig
	for _, k := range topicConfigKeys {
		c := kmsg.NewCreateTopicsResponseTopicConfig()
		c.Name = k.name
		c.Value = strPtr(k.get(cfg))
		c.Source = int8(configSource(k, cfg))
		out = append(out, c)
	}
	return out
}

// deleteTopics deletes topics by name or (v6) by ID.
func (s *Server) deleteTopics(ctx context.Context, cl *call, req *kmsg.DeleteTopicsRequest) *kmsg.DeleteTopicsResponse {
	resp := req.ResponseKind().(*kmsg.DeleteTopicsResponse)
	ctx, cancel := detached(ctx, req.TimeoutMillis)
	defer cancel()
	type target struct {
		name *string
		id   [16]byte
	}
	var targets []target
	for _, n := range req.TopicNames {
		targets = append(targets, target{name: strPtr(n)})
	}
	for _, t := range req.Topics {
		targets = append(targets, target{name: t.Topic, id: t.TopicID})
	}
	for _, t := range targets {
		out := kmsg.NewDeleteTopicsResponseTopic()
		out.Topic, out.TopicID = t.name, t.id
		fail := func(code int16, err error) {
			out.ErrorCode = code
			out.ErrorMessage = strPtr(err.Error())
		}
		name := ""
		switch {
		case t.name != nil:
			name = *t.name
		case t.id != [16]byte{}:
			id, ok := topicIDFromUUID(t.id)
			if !ok {
				fail(errUnknownTopicID, fmt.Errorf("no topic has id %x", t.id))
				break
			}
			topic, err := s.deps.Topics.GetTopicByID(ctx, id)
			if errors.Is(err, metadata.ErrTopicNotFound) {
				fail(errUnknownTopicID, err)
				break
			} else if err != nil {
				fail(errorCode(err), err)
				break
			}
			name = topic.Name
			out.Topic = strPtr(name)
		default:
			fail(errInvalidRequest, errors.New("a topic needs a name or an id"))
		}
		switch {
		case name == "":
		case !allowed(ctx, auth.OpDelete, auth.ResourceTopic, name):
			fail(errTopicAuthorizationFailed, fmt.Errorf("the key may not delete topic %q", name))
		default:
			if err := s.deps.Topics.DeleteTopic(ctx, name); err != nil {
				fail(errorCode(err), err)
			} else {
				s.audit(ctx, cl, auth.ActionTopicDelete, auth.ResourceTopic, name, nil)
			}
			s.topics.forget(name)
		}
		resp.Topics = append(resp.Topics, out)
	}
	return resp
}

// createPartitions grows topics to the asked partition counts.
func (s *Server) createPartitions(ctx context.Context, cl *call, req *kmsg.CreatePartitionsRequest) *kmsg.CreatePartitionsResponse {
	resp := req.ResponseKind().(*kmsg.CreatePartitionsResponse)
	ctx, cancel := detached(ctx, req.TimeoutMillis)
	defer cancel()
	for _, rt := range req.Topics {
		out := kmsg.NewCreatePartitionsResponseTopic()
		out.Topic = rt.Topic
		fail := func(code int16, format string, args ...any) {
			out.ErrorCode = code
			out.ErrorMessage = strPtr(fmt.Sprintf(format, args...))
		}
		switch {
		case !allowed(ctx, auth.OpAlter, auth.ResourceTopic, rt.Topic):
			fail(errTopicAuthorizationFailed, "the key may not alter topic %q", rt.Topic)
		case len(rt.Assignment) > 0:
			fail(errInvalidReplicaAssignment, "Silt places partitions itself; send no assignment")
		case rt.Count < 1 || rt.Count > s.cfg.MaxPartitions:
			fail(errInvalidPartitions, "partitions must be between 1 and %d", s.cfg.MaxPartitions)
		default:
			t, err := s.deps.Topics.GetTopic(ctx, rt.Topic)
			if err != nil {
				fail(errorCode(err), "%v", err)
				break
			}
			if rt.Count <= t.Partitions {
				fail(errInvalidPartitions, "topic %q has %d partitions; the count can only grow", rt.Topic, t.Partitions)
				break
			}
			if req.ValidateOnly {
				break
			}
			count := rt.Count
			t, err = s.deps.Topics.AlterTopic(ctx, rt.Topic, metadata.TopicUpdate{Partitions: &count})
			if err != nil {
				fail(errorCode(err), "%v", err)
				break
			}
			s.topics.put(t)
			s.audit(ctx, cl, auth.ActionTopicAlter, auth.ResourceTopic, rt.Topic, map[string]any{"partitions": count})
		}
		resp.Topics = append(resp.Topics, out)
	}
	return resp
}
