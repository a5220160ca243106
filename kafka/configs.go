package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"

	"silt/auth"
	"silt/metadata"
)

// topicConfigKey is one topic setting Silt keeps, under Kafka's name.
type topicConfigKey struct {
	name string
	typ  kmsg.ConfigType
	doc  string
	get  func(metadata.TopicConfig) string
	set  func(*metadata.TopicConfig, string) error
}

func parseInt(name, v string, bits int) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, bits)
	if err != nil {
		return 0, fmt.Errorf("%s=%q is not an integer", name, v)
	}
	return n, nil
}

var topicConfigKeys = []topicConfigKey{
	{
		name: "cleanup.policy", typ: kmsg.ConfigTypeList,
		doc: "delete, compact, or both (compact,delete)",
		get: func(c metadata.TopicConfig) string { return c.CleanupPolicy },
		set: func(c *metadata.TopicConfig, v string) error {
			parts := strings.Split(strings.ReplaceAll(v, " ", ""), ",")
			slices.Sort(parts)
			parts = slices.Compact(parts)
			switch strings.Join(parts, ",") {
			case "delete":
				c.CleanupPolicy = metadata.CleanupDelete
			case "compact":
				c.CleanupPolicy = metadata.CleanupCompact
			case "compact,delete":
				c.CleanupPolicy = metadata.CleanupCompactDelete
			default:
				return fmt.Errorf("cleanup.policy=%q: want delete, compact or compact,delete", v)
			}
			return nil
		},
	},
	{
		name: "delete.retention.ms", typ: kmsg.ConfigTypeLong,
		doc: "how long compaction keeps tombstones",
		get: func(c metadata.TopicConfig) string { return strconv.FormatInt(c.DeleteRetentionMs, 10) },
		set: func(c *metadata.TopicConfig, v string) (err error) {
			c.DeleteRetentionMs, err = parseInt("delete.retention.ms", v, 64)
			return err
		},
	},
	{
		name: "max.message.bytes", typ: kmsg.ConfigTypeInt,
		doc: "the largest record accepted (key, value and headers; in Kafka, the largest batch)",
		get: func(c metadata.TopicConfig) string { return strconv.FormatInt(int64(c.MaxMessageBytes), 10) },
		set: func(c *metadata.TopicConfig, v string) error {
			n, err := parseInt("max.message.bytes", v, 32)
			c.MaxMessageBytes = int32(n)
			return err
		},
	},
	{
		name: "retention.bytes", typ: kmsg.ConfigTypeLong,
		doc: "bytes kept per partition; -1 is unlimited",
		get: func(c metadata.TopicConfig) string { return strconv.FormatInt(c.RetentionBytes, 10) },
		set: func(c *metadata.TopicConfig, v string) (err error) {
			c.RetentionBytes, err = parseInt("retention.bytes", v, 64)
			return err
		},
	},
	{
		name: "retention.ms", typ: kmsg.ConfigTypeLong,
		doc: "how long records are kept; -1 keeps them forever",
		get: func(c metadata.TopicConfig) string { return strconv.FormatInt(c.RetentionMs, 10) },
		set: func(c *metadata.TopicConfig, v string) (err error) {
			c.RetentionMs, err = parseInt("retention.ms", v, 64)
			return err
		},
	},
}

// inapplicableTopicConfigs are Kafka topic settings without a meaning in
// Silt (replication, local log segments, broker-side recompression).
// CreateTopics accepts and ignores them, because tools such as Kafka
// Connect and Kafka Streams send them; altering them is refused.
var inapplicableTopicConfigs = map[string]bool{
	"compression.type": true, "file.delete.delay.ms": true, "flush.messages": true, "flush.ms": true,
	"follower.replication.throttled.replicas": true, "index.interval.bytes": true,
	"leader.replication.throttled.replicas": true, "local.retention.bytes": true, "local.retention.ms": true,
	"max.compaction.lag.ms": true, "message.downconversion.enable": true, "message.format.version": true,
	"message.timestamp.after.max.ms": true, "message.timestamp.before.max.ms": true,
	"message.timestamp.difference.max.ms": true, "min.cleanable.dirty.ratio": true, "min.compaction.lag.ms": true,
	"min.insync.replicas": true, "preallocate": true, "remote.storage.enable": true, "segment.bytes": true,
	"segment.index.bytes": true, "segment.jitter.ms": true, "segment.ms": true, "unclean.leader.election.enable": true,
}

func findConfigKey(name string) (topicConfigKey, bool) {
	for _, k := range topicConfigKeys {
		if k.name == name {
			return k, true
		}
	}
	return topicConfigKey{}, false
}

// setTopicConfig sets one setting by its Kafka name; value nil restores
// the default. lenient accepts (and ignores) inapplicable settings and
// message.timestamp.type=CreateTime.
func setTopicConfig(cfg *metadata.TopicConfig, name string, value *string, lenient bool) error {
	k, ok := findConfigKey(name)
	if !ok {
		switch {
		case name == "message.timestamp.type" && (value == nil || *value == "CreateTime"):
			if lenient {
				return nil
			}
			return fmt.Errorf("message.timestamp.type is always CreateTime in Silt")
		case lenient && inapplicableTopicConfigs[name]:
			return nil
		case inapplicableTopicConfigs[name]:
			return fmt.Errorf("%s does not apply to Silt", name)
		}
		return fmt.Errorf("unknown topic config %q (Silt keeps %s)", name, configNames())
	}
	if value == nil {
		return k.set(cfg, k.get(metadata.DefaultTopicConfig()))
	}
	return k.set(cfg, *value)
}

func configNames() string {
	names := make([]string, len(topicConfigKeys))
	for i, k := range topicConfigKeys {
		names[i] = k.name
	}
	return strings.Join(names, ", ")
}

// configSource says whether a setting differs from the default. Silt
// keeps values, not whether they were set, so a value equal to the
// default reads as the default.
func configSource(k topicConfigKey, cfg metadata.TopicConfig) kmsg.ConfigSource {
	if k.get(cfg) == k.get(metadata.DefaultTopicConfig()) {
		return kmsg.ConfigSourceDefaultConfig
	}
	return kmsg.ConfigSourceDynamicTopicConfig
}

// describeConfigs lists topic settings; brokers have none to show.
func (s *Server) describeConfigs(ctx context.Context, req *kmsg.DescribeConfigsRequest) *kmsg.DescribeConfigsResponse {
	resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
	for _, rr := range req.Resources {
		out := kmsg.NewDescribeConfigsResponseResource()
		out.ResourceType, out.ResourceName = rr.ResourceType, rr.ResourceName
		switch rr.ResourceType {
		case kmsg.ConfigResourceTypeBroker, kmsg.ConfigResourceTypeBrokerLogger:
			// Agents have no per-broker settings to report.
			if !allowed(ctx, auth.OpDescribe, auth.ResourceCluster, "") {
				out.ErrorCode = errClusterAuthorizationFailed
			}
		case kmsg.ConfigResourceTypeTopic:
			if !allowed(ctx, auth.OpDescribe, auth.ResourceTopic, rr.ResourceName) {
				out.ErrorCode = errTopicAuthorizationFailed
				break
			}
			t, err := s.deps.Topics.GetTopic(ctx, rr.ResourceName)
			if err != nil {
				out.ErrorCode, out.ErrorMessage = errorCode(err), strPtr(err.Error())
				break
			}
			def := metadata.DefaultTopicConfig()
			for _, k := range topicConfigKeys {
				if rr.ConfigNames != nil && !slices.Contains(rr.ConfigNames, k.name) {
					continue
				}
				c := kmsg.NewDescribeConfigsResponseResourceConfig()
				c.Name = k.name
				c.Value = strPtr(k.get(t.Config))
				c.Source = configSource(k, t.Config)
				c.IsDefault = c.Source == kmsg.ConfigSourceDefaultConfig
				c.ConfigType = k.typ
				if req.IncludeDocumentation {
					c.Documentation = strPtr(k.doc)
				}
				if req.IncludeSynonyms {
					syn := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
					syn.Name, syn.Value, syn.Source = k.name, c.Value, c.Source
					c.ConfigSynonyms = []kmsg.DescribeConfigsResponseResourceConfigConfigSynonym{syn}
					if c.Source != kmsg.ConfigSourceDefaultConfig {
						d := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
						d.Name, d.Value, d.Source = k.name, strPtr(k.get(def)), kmsg.ConfigSourceDefaultConfig
						c.ConfigSynonyms = append(c.ConfigSynonyms, d)
					}
				}
				out.Configs = append(out.Configs, c)
			}
		default:
			out.ErrorCode = errInvalidRequest
			out.ErrorMessage = strPtr(fmt.Sprintf("resource type %v is not described by Silt", rr.ResourceType))
		}
		resp.Resources = append(resp.Resources, out)
	}
	return resp
}

// errConfigOp is an IncrementalAlterConfigs operation that cannot apply.
var errConfigOp = errors.New("kafka: invalid config operation")

// incrementalAlterConfigs changes topic settings; each resource's
// operations apply together or not at all.
func (s *Server) incrementalAlterConfigs(ctx context.Context, cl *call, req *kmsg.IncrementalAlterConfigsRequest) *kmsg.IncrementalAlterConfigsResponse {
	resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
	ctx, cancel := detached(ctx, 0)
	defer cancel()
	for _, rr := range req.Resources {
		out := kmsg.NewIncrementalAlterConfigsResponseResource()
		out.ResourceType, out.ResourceName = rr.ResourceType, rr.ResourceName
		fail := func(code int16, err error) {
			out.ErrorCode, out.ErrorMessage = code, strPtr(err.Error())
		}
		if rr.ResourceType != kmsg.ConfigResourceTypeTopic {
			code := errInvalidRequest
			if !allowed(ctx, auth.OpAlter, auth.ResourceCluster, "") {
				code = errClusterAuthorizationFailed
			}
			fail(code, fmt.Errorf("only topic settings can be altered in Silt, not %v", rr.ResourceType))
			resp.Resources = append(resp.Resources, out)
			continue
		}
		if !allowed(ctx, auth.OpAlter, auth.ResourceTopic, rr.ResourceName) {
			fail(errTopicAuthorizationFailed, fmt.Errorf("the key may not alter topic %q", rr.ResourceName))
			resp.Resources = append(resp.Resources, out)
			continue
		}
		patch := func(cfg *metadata.TopicConfig) error {
			for _, c := range rr.Configs {
				if err := applyConfigOp(cfg, c); err != nil {
					return fmt.Errorf("%w: %v", errConfigOp, err)
				}
			}
			return nil
		}
		var err error
		if req.ValidateOnly {
			var t metadata.Topic
			if t, err = s.deps.Topics.GetTopic(ctx, rr.ResourceName); err == nil {
				if err = patch(&t.Config); err == nil {
					err = t.Config.Validate()
				}
			}
		} else {
			_, err = s.deps.Topics.AlterTopic(ctx, rr.ResourceName, metadata.TopicUpdate{ConfigPatch: patch})
			s.topics.forget(rr.ResourceName)
		}
		switch {
		case err == nil:
			if !req.ValidateOnly {
				changes := map[string]any{}
				for _, c := range rr.Configs {
					changes[c.Name] = map[string]any{"op": c.Op.String(), "value": c.Value}
				}
				s.audit(ctx, cl, auth.ActionTopicAlter, auth.ResourceTopic, rr.ResourceName, map[string]any{"configs": changes})
			}
		case errors.Is(err, errConfigOp), errors.Is(err, metadata.ErrInvalidArgument):
			fail(errInvalidConfig, err)
		default:
			fail(errorCode(err), err)
		}
		resp.Resources = append(resp.Resources, out)
	}
	return resp
}

func applyConfigOp(cfg *metadata.TopicConfig, c kmsg.IncrementalAlterConfigsRequestResourceConfig) error {
	switch c.Op {
	case kmsg.IncrementalAlterConfigOpSet:
		if c.Value == nil {
			return fmt.Errorf("SET %s needs a value", c.Name)
		}
		return setTopicConfig(cfg, c.Name, c.Value, false)
	case kmsg.IncrementalAlterConfigOpDelete:
		return setTopicConfig(cfg, c.Name, nil, false)
	case kmsg.IncrementalAlterConfigOpAppend, kmsg.IncrementalAlterConfigOpSubtract:
		k, ok := findConfigKey(c.Name)
		if !ok || k.typ != kmsg.ConfigTypeList || c.Value == nil {
			return fmt.Errorf("%v applies to list settings (cleanup.policy) with a value", c.Op)
		}
		items := strings.Split(k.get(*cfg), ",")
		for _, v := range strings.Split(*c.Value, ",") {
			v = strings.TrimSpace(v)
			if c.Op == kmsg.IncrementalAlterConfigOpAppend {
				items = append(items, v)
			} else {
				items = slices.DeleteFunc(items, func(x string) bool { return x == v })
			}
		}
		return k.set(cfg, strings.Join(items, ","))
	}
	return fmt.Errorf("unknown operation %v", c.Op)
}
