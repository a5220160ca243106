package metadata_test

import (
	"context"
	"errors"
	"testing"

	"silt/metadata"
	"silt/metadata/metadatatest"
)

func setup(t *testing.T) (*metadata.Store, context.Context) {
	t.Helper()
	t.Parallel()
	return metadatatest.New(t), context.Background()
}

func TestTopicLifecycle(t *testing.T) {
	s, ctx := setup(t)
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := metadata.DefaultTopicConfig()
	cfg.RetentionMs = 1000
	top, err := s.CreateTopic(ctx, "orders", 3, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if top.ID == 0 || top.Partitions != 3 || top.Config.RetentionMs != 1000 {
		t.Fatalf("created %+v", top)
	}
	if _, err := s.CreateTopic(ctx, "orders", 1, cfg); !errors.Is(err, metadata.ErrTopicExists) {
		t.Fatalf("duplicate create: %v, want ErrTopicExists", err)
	}
	got, err := s.GetTopic(ctx, "orders")
	if err != nil || got.ID != top.ID || got.Config != cfg {
		t.Fatalf("get = %+v, %v", got, err)
	}
	parts, err := s.Partitions(ctx, top.ID, 0, 0)
	if err != nil || len(parts) != 3 {
		t.Fatalf("partitions = %+v, %v", parts, err)
	}
	for i, p := range parts {
		if p.Partition != int32(i) || p.HighWatermark != 0 || p.LogStartOffset != 0 || p.Owner != "" {
			t.Fatalf("partition %d = %+v", i, p)
		}
	}

	five := int32(5)
	cfg.CleanupPolicy = metadata.CleanupCompact
	alt, err := s.AlterTopic(ctx, "orders", metadata.TopicUpdate{Partitions: &five, Config: &cfg})
	if err != nil || alt.Partitions != 5 || !alt.Config.Compacted() {
		t.Fatalf("alter = %+v, %v", alt, err)
	}
	if parts, _ := s.Partitions(ctx, top.ID, 0, 0); len(parts) != 5 {
		t.Fatalf("after grow: %d partitions", len(parts))
	}
	two := int32(2)
	if _, err := s.AlterTopic(ctx, "orders", metadata.TopicUpdate{Partitions: &two}); !errors.Is(err, metadata.ErrPartitionCount) {
		t.Fatalf("shrink: %v, want ErrPartitionCount", err)
	}
	if _, err := s.AlterTopic(ctx, "nope", metadata.TopicUpdate{Partitions: &two}); !errors.Is(err, metadata.ErrTopicNotFound) {
		t.Fatalf("alter missing: %v", err)
	}

	if _, err := s.CreateTopic(ctx, "another", 1, metadata.DefaultTopicConfig()); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListTopics(ctx, "", 0)
	if err != nil || len(list) != 2 || list[0].Name != "another" || list[1].Name != "orders" {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if err := s.DeleteTopic(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTopic(ctx, "orders"); !errors.Is(err, metadata.ErrTopicNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := s.GetTopic(ctx, "orders"); !errors.Is(err, metadata.ErrTopicNotFound) {
		t.Fatalf("get deleted: %v", err)
	}
	if parts, _ := s.Partitions(ctx, top.ID, 0, 0); len(parts) != 0 {
		t.Fatalf("partitions of deleted topic remain: %+v", parts)
	}
}

func TestTopicConfigValidation(t *testing.T) {
	s, ctx := setup(t)
	bad := []func(*metadata.TopicConfig){
		func(c *metadata.TopicConfig) { c.RetentionMs = 0 },
		func(c *metadata.TopicConfig) { c.RetentionBytes = -5 },
		func(c *metadata.TopicConfig) { c.CleanupPolicy = "shred" },
		func(c *metadata.TopicConfig) { c.MaxMessageBytes = 0 },
		func(c *metadata.TopicConfig) { c.DeleteRetentionMs = -1 },
	}
	for i, mutate := range bad {
		cfg := metadata.DefaultTopicConfig()
		mutate(&cfg)
		if _, err := s.CreateTopic(ctx, "t", 1, cfg); !errors.Is(err, metadata.ErrInvalidArgument) {
			t.Errorf("case %d: %v, want ErrInvalidArgument", i, err)
		}
	}
	if _, err := s.CreateTopic(ctx, "t", 0, metadata.DefaultTopicConfig()); !errors.Is(err, metadata.ErrInvalidArgument) {
		t.Errorf("zero partitions: %v", err)
	}
}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	cfg := metadata.DefaultConfig()
	cfg.URL = "postgres://silt@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"
	s, err := metadata.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ping(context.Background()); !errors.Is(err, metadata.ErrUnavailable) {
		t.Fatalf("ping of closed port: %v, want ErrUnavailable", err)
	}
}

// Topic creation and growth stop at the cluster's partition quota.
func TestPartitionQuota(t *testing.T) {
	t.Parallel()
	s := metadatatest.Open(t, metadatatest.URL(t), func(c *metadata.Config) { c.MaxClusterPartitions = 10 })
	ctx := context.Background()
	if _, err := s.CreateTopic(ctx, "a", 6, metadata.DefaultTopicConfig()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateTopic(ctx, "b", 5, metadata.DefaultTopicConfig()); !errors.Is(err, metadata.ErrPartitionQuota) {
		t.Fatalf("past the quota: %v", err)
	}
	if _, err := s.CreateTopic(ctx, "b", 4, metadata.DefaultTopicConfig()); err != nil {
		t.Fatalf("up to the quota: %v", err)
	}
	n := int32(7)
	if _, err := s.AlterTopic(ctx, "a", metadata.TopicUpdate{Partitions: &n}); !errors.Is(err, metadata.ErrPartitionQuota) {
		t.Fatalf("growth past the quota: %v", err)
	}
	if err := s.DeleteTopic(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AlterTopic(ctx, "a", metadata.TopicUpdate{Partitions: &n}); err != nil {
		t.Fatalf("growth after a delete: %v", err)
	}
}
