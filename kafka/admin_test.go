package kafka_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"silt/internal/agentd"
)

// ApiVersions lists the served APIs; versions and APIs that are not
// served get UNSUPPORTED_VERSION, and the connection stays open.
func TestApiVersionsAndUnsupported(t *testing.T) {
	a := setup(t, nil)
	c := dialRaw(t, a.KafkaAddr)
	for v := int16(0); v <= 4; v++ {
		resp := c.do(kmsg.NewPtrApiVersionsRequest(), v).(*kmsg.ApiVersionsResponse)
		if resp.ErrorCode != 0 {
			t.Fatalf("v%d: error %d", v, resp.ErrorCode)
		}
		got := map[int16][2]int16{}
		for _, k := range resp.ApiKeys {
			got[k.ApiKey] = [2]int16{k.MinVersion, k.MaxVersion}
		}
		for key, want := range map[int16][2]int16{0: {3, 12}, 1: {4, 12}, 2: {1, 6}, 3: {0, 12}, 8: {1, 9}, 9: {1, 8}, 10: {0, 4},
			11: {0, 9}, 12: {0, 4}, 13: {0, 5}, 14: {0, 5}, 15: {0, 5}, 16: {0, 5}, 17: {0, 1}, 18: {0, 4}, 19: {0, 7}, 20: {0, 6},
			22: {0, 4}, 32: {0, 4}, 36: {0, 2}, 37: {0, 3}, 42: {0, 2}, 44: {0, 1}, 47: {0, 0}, 60: {0, 1}} {
			if got[key] != want {
				t.Fatalf("v%d: %s versions %v, want %v", v, kmsg.NameForKey(key), got[key], want)
			}
		}
	}
	// A newer ApiVersions than served: version 0 answer with the list.
	req := kmsg.NewPtrApiVersionsRequest()
	req.SetVersion(5)
	corr := c.send(req)
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(0)
	if err := c.receive(corr, resp); err != nil || resp.ErrorCode != 35 || len(resp.ApiKeys) == 0 {
		t.Fatalf("ApiVersions v5: %v, code %d, %d keys", err, resp.ErrorCode, len(resp.ApiKeys))
	}
	// An API not served, with a top-level error code.
	da := c.do(kmsg.NewPtrDescribeACLsRequest(), 1).(*kmsg.DescribeACLsResponse)
	if da.ErrorCode != 35 {
		t.Fatalf("DescribeACLs: code %d, want 35", da.ErrorCode)
	}
	// A version below the served range, without a top-level error code:
	// an empty answer, and the connection still serves.
	old := kmsg.NewPtrProduceRequest()
	old.Acks = 1
	if pr := c.do(old, 2).(*kmsg.ProduceResponse); len(pr.Topics) != 0 {
		t.Fatalf("Produce v2: %+v", pr)
	}
	if r := c.do(kmsg.NewPtrApiVersionsRequest(), 3).(*kmsg.ApiVersionsResponse); r.ErrorCode != 0 {
		t.Fatalf("after the unsupported requests: %d", r.ErrorCode)
	}
}

// Metadata names the advertised address as the one broker, leader of
// every partition; DescribeCluster agrees.
func TestMetadataAndCluster(t *testing.T) {
	a := setup(t, func(c *agentd.Config) { c.Kafka.AdvertisedAddr = "lb.example:19092" })
	name := topicName(t)
	// The client follows Metadata to the advertised broker, which does not
	// exist here; so this test speaks to the listener by hand.
	c := dialRaw(t, a.KafkaAddr)
	ct := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = name, 3, -1
	ct.Topics = append(ct.Topics, rt)
	ct.TimeoutMillis = 10000
	if r := c.do(ct, 7).(*kmsg.CreateTopicsResponse); r.Topics[0].ErrorCode != 0 || r.Topics[0].NumPartitions != 3 {
		t.Fatalf("create: %+v", r.Topics[0])
	}
	for _, v := range []int16{0, 1, 4, 9, 12} {
		mr := kmsg.NewPtrMetadataRequest()
		mt := kmsg.NewMetadataRequestTopic()
		mt.Topic = &name
		mr.Topics = []kmsg.MetadataRequestTopic{mt}
		resp := c.do(mr, v).(*kmsg.MetadataResponse)
		if len(resp.Brokers) != 1 || resp.Brokers[0].Host != "lb.example" || resp.Brokers[0].Port != 19092 {
			t.Fatalf("v%d brokers %+v", v, resp.Brokers)
		}
		if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 || len(resp.Topics[0].Partitions) != 3 {
			t.Fatalf("v%d topics %+v", v, resp.Topics)
		}
		for _, p := range resp.Topics[0].Partitions {
			if p.Leader != resp.Brokers[0].NodeID || !slices.Equal(p.Replicas, []int32{p.Leader}) {
				t.Fatalf("v%d partition %+v", v, p)
			}
		}
		if v >= 10 && resp.Topics[0].TopicID == [16]byte{} {
			t.Fatalf("v%d: no topic id", v)
		}
	}
	// An unknown topic, without auto-creation.
	mr := kmsg.NewPtrMetadataRequest()
	missing := name + "-missing"
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = &missing
	mr.Topics = []kmsg.MetadataRequestTopic{mt}
	mr.AllowAutoTopicCreation = true
	if resp := c.do(mr, 9).(*kmsg.MetadataResponse); resp.Topics[0].ErrorCode != 3 {
		t.Fatalf("missing topic: code %d", resp.Topics[0].ErrorCode)
	}
	dc := c.do(kmsg.NewPtrDescribeClusterRequest(), 1).(*kmsg.DescribeClusterResponse)
	if dc.ErrorCode != 0 || len(dc.Brokers) != 1 || dc.Brokers[0].Host != "lb.example" || dc.ClusterID == "" {
		t.Fatalf("describe cluster: %+v", dc)
	}
}

// Metadata creates topics when --kafka-auto-create-topics is on and the
// client allows it.
func TestMetadataAutoCreate(t *testing.T) {
	a := setup(t, func(c *agentd.Config) { c.Kafka.AutoCreateTopics = true })
	c := dialRaw(t, a.KafkaAddr)
	name := topicName(t)
	mr := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = &name
	mr.Topics = []kmsg.MetadataRequestTopic{mt}
	mr.AllowAutoTopicCreation = false
	if resp := c.do(mr, 9).(*kmsg.MetadataResponse); resp.Topics[0].ErrorCode != 3 {
		t.Fatalf("not allowed by the client: code %d", resp.Topics[0].ErrorCode)
	}
	mr.AllowAutoTopicCreation = true
	resp := c.do(mr, 9).(*kmsg.MetadataResponse)
	if resp.Topics[0].ErrorCode != 0 || len(resp.Topics[0].Partitions) != 1 {
		t.Fatalf("auto-create: %+v", resp.Topics[0])
	}
	if _, err := a.Store().GetTopic(ctxT(t, 10*time.Second), name); err != nil {
		t.Fatalf("the topic is not in the store: %v", err)
	}
	bad := "no/slashes"
	mr.Topics[0].Topic = &bad
	if resp := c.do(mr, 9).(*kmsg.MetadataResponse); resp.Topics[0].ErrorCode != 17 {
		t.Fatalf("invalid name: code %d", resp.Topics[0].ErrorCode)
	}
}

// Topic administration with kadm: create with settings, describe and
// alter settings, add partitions, list offsets, delete.
func TestTopicAdmin(t *testing.T) {
	a := setup(t, nil)
	adm := newAdmin(t, a)
	ctx := ctxT(t, time.Minute)
	name := topicName(t)
	ms := "3600000"
	createTopic(t, adm, name, 2, map[string]*string{"retention.ms": &ms, "segment.bytes": ptr("1048576")})

	again, err := adm.CreateTopics(ctx, 2, -1, nil, name)
	if err != nil || !errors.Is(again[name].Err, kerr.TopicAlreadyExists) {
		t.Fatalf("create twice: %v %v", err, again[name].Err)
	}
	bad, err := adm.CreateTopics(ctx, 1, -1, map[string]*string{"retention.ms": ptr("soon")}, name+"-bad")
	if err != nil || !errors.Is(bad[name+"-bad"].Err, kerr.InvalidConfig) {
		t.Fatalf("bad config: %v %v", err, bad[name+"-bad"].Err)
	}
	unknown, err := adm.CreateTopics(ctx, 1, -1, map[string]*string{"no.such.setting": ptr("1")}, name+"-unknown")
	if err != nil || !errors.Is(unknown[name+"-unknown"].Err, kerr.InvalidConfig) {
		t.Fatalf("unknown config: %v %v", err, unknown[name+"-unknown"].Err)
	}

	cfgs := describe(t, adm, name)
	if cfgs["retention.ms"] != "3600000" || cfgs["cleanup.policy"] != "delete" || cfgs["max.message.bytes"] != "1048576" {
		t.Fatalf("configs %v", cfgs)
	}
	alter, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "retention.bytes", Value: ptr("1000000")},
		{Op: kadm.AppendConfig, Name: "cleanup.policy", Value: ptr("compact")},
		{Op: kadm.DeleteConfig, Name: "retention.ms"},
	}, name)
	if err != nil || alter[0].Err != nil {
		t.Fatalf("alter: %v %+v", err, alter)
	}
	cfgs = describe(t, adm, name)
	if cfgs["retention.bytes"] != "1000000" || cfgs["cleanup.policy"] != "compact,delete" || cfgs["retention.ms"] != "604800000" {
		t.Fatalf("after alter: %v", cfgs)
	}
	// The HTTP side sees the same settings.
	tp, err := a.Store().GetTopic(ctx, name)
	if err != nil || tp.Config.RetentionBytes != 1000000 || tp.Config.CleanupPolicy != "compact,delete" {
		t.Fatalf("store: %+v %v", tp.Config, err)
	}
	refused, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: ptr("-5")}}, name)
	if err != nil || !errors.Is(refused[0].Err, kerr.InvalidConfig) {
		t.Fatalf("bad alter: %v %+v", err, refused)
	}

	grown, err := adm.CreatePartitions(ctx, 3, name) // adds 3: 5 in all
	if err != nil || grown[name].Err != nil {
		t.Fatalf("create partitions: %v %+v", err, grown)
	}
	shrink, err := adm.UpdatePartitions(ctx, 2, name)
	if err != nil || !errors.Is(shrink[name].Err, kerr.InvalidPartitions) {
		t.Fatalf("shrink: %v %+v", err, shrink)
	}
	td, err := adm.ListTopics(ctx, name)
	if err != nil || len(td[name].Partitions) != 5 {
		t.Fatalf("list: %v %+v", err, td)
	}
	ends, err := adm.ListEndOffsets(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil || o.Offset != 0 {
			t.Errorf("end offset %+v", o)
		}
	})

	del, err := adm.DeleteTopics(ctx, name)
	if err != nil || del[name].Err != nil {
		t.Fatalf("delete: %v %+v", err, del)
	}
	del, err = adm.DeleteTopics(ctx, name)
	if err != nil || !errors.Is(del[name].Err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("delete twice: %v %+v", err, del)
	}
}

func describe(t *testing.T, adm *kadm.Client, name string) map[string]string {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(ctxT(t, 30*time.Second), name)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(name, nil)
	if err != nil || rc.Err != nil {
		t.Fatalf("describe %s: %v %v", name, err, rc.Err)
	}
	out := map[string]string{}
	for _, c := range rc.Configs {
		out[c.Key] = c.MaybeValue()
	}
	return out
}

func ptr(s string) *string { return &s }
