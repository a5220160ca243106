package client_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"silt/client"
	"silt/internal/agenttest"
	"silt/problem"
)

// start runs a real agent for the test and returns a client of it.
func start(t *testing.T, opts ...client.Option) (*client.Client, *agenttest.Agent) {
	t.Helper()
	a := agenttest.Start(t, agenttest.Options{})
	c, err := client.New(a.URL, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c, a
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ptr[T any](v T) *T { return &v }

// asError returns err's *client.Error or fails the test.
func asError(t *testing.T, err error) *client.Error {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *client.Error", err, err)
	}
	return e
}

func TestTopicLifecycle(t *testing.T) {
	c, _ := start(t)
	ctx := testContext(t)

	created, err := c.CreateTopic(ctx, client.NewTopic{
		Name:       "orders",
		Partitions: 3,
		Config:     client.ConfigPatch{RetentionMs: ptr[int64](60_000), CleanupPolicy: ptr("compact,delete")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if created.Name != "orders" || created.Partitions != 3 || created.ID == 0 {
		t.Fatalf("created %+v", created)
	}
	if created.Config.RetentionMs != 60_000 || created.Config.CleanupPolicy != "compact,delete" {
		t.Fatalf("config %+v", created.Config)
	}
	// Unset keys take the agent's defaults.
	if created.Config.MaxMessageBytes != 1<<20 || created.Config.RetentionBytes != -1 {
		t.Fatalf("defaults not applied: %+v", created.Config)
	}
	if created.CreatedAt.IsZero() {
		t.Fatal("created_at is zero")
	}

	if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "payments"}); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	parts := map[string]int32{}
	for _, tp := range list {
		parts[tp.Name] = tp.Partitions
	}
	if len(parts) != 2 || parts["orders"] != 3 || parts["payments"] != 1 {
		t.Fatalf("list = %+v", list)
	}

	desc, err := c.DescribeTopic(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if len(desc.PartitionStates) != 3 {
		t.Fatalf("describe: %d partition states, want 3", len(desc.PartitionStates))
	}
	for i, ps := range desc.PartitionStates {
		if ps.Partition != int32(i) || ps.HighWatermark != 0 || ps.LogStartOffset != 0 {
			t.Fatalf("partition state %d: %+v", i, ps)
		}
	}

	altered, err := c.AlterTopic(ctx, "orders", client.TopicUpdate{Partitions: 5, Config: client.ConfigPatch{MaxMessageBytes: ptr[int32](4096)}})
	if err != nil {
		t.Fatal(err)
	}
	if altered.Partitions != 5 || altered.Config.MaxMessageBytes != 4096 {
		t.Fatalf("altered %+v", altered)
	}
	// A partial patch keeps the other settings.
	if altered.Config.RetentionMs != 60_000 || altered.Config.CleanupPolicy != "compact,delete" {
		t.Fatalf("alter lost settings: %+v", altered.Config)
	}
	// Config only, partitions unchanged.
	altered, err = c.AlterTopic(ctx, "orders", client.TopicUpdate{Config: client.ConfigPatch{RetentionBytes: ptr[int64](1 << 30)}})
	if err != nil {
		t.Fatal(err)
	}
	if altered.Partitions != 5 || altered.Config.RetentionBytes != 1<<30 || altered.Config.MaxMessageBytes != 4096 {
		t.Fatalf("altered %+v", altered)
	}

	if err := c.DeleteTopic(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	_, err = c.DescribeTopic(ctx, "orders")
	if e := asError(t, err); e.Status != http.StatusNotFound || e.Code != problem.CodeTopicNotFound {
		t.Fatalf("describe deleted topic: %v", err)
	}
}

func TestErrorMapping(t *testing.T) {
	c, _ := start(t)
	ctx := testContext(t)
	if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t1", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		call   func() error
		status int
		code   client.Code
	}{
		{"describe missing", func() error { _, err := c.DescribeTopic(ctx, "nope"); return err }, 404, problem.CodeTopicNotFound},
		{"delete missing", func() error { return c.DeleteTopic(ctx, "nope") }, 404, problem.CodeTopicNotFound},
		{"produce missing", func() error {
			_, err := c.Produce(ctx, "nope", []client.Message{{Value: []byte("x")}})
			return err
		}, 404, problem.CodeTopicNotFound},
		{"create existing", func() error { _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t1"}); return err }, 409, problem.CodeTopicExists},
		{"bad name", func() error { _, err := c.CreateTopic(ctx, client.NewTopic{Name: "bad name!"}); return err }, 400, problem.CodeInvalidTopicName},
		{"bad config", func() error {
			_, err := c.CreateTopic(ctx, client.NewTopic{Name: "t2", Config: client.ConfigPatch{CleanupPolicy: ptr("sometimes")}})
			return err
		}, 400, problem.CodeInvalidConfig},
		{"shrink partitions", func() error { _, err := c.AlterTopic(ctx, "t1", client.TopicUpdate{Partitions: 1}); return err }, 400, problem.CodeInvalidPartitions},
		{"partition out of range", func() error {
			_, err := c.Produce(ctx, "t1", []client.Message{{Partition: client.Partition(7), Value: []byte("x")}})
			return err
		}, 400, problem.CodeInvalidRecord},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			e := asError(t, err)
			if e.Status != tc.status || e.Code != tc.code {
				t.Fatalf("got %d %s (%v), want %d %s", e.Status, e.Code, err, tc.status, tc.code)
			}
			if !client.IsCode(err, tc.code) {
				t.Fatal("IsCode is false")
			}
			if e.Retriable {
				t.Fatal("a client error is marked retriable")
			}
			if e.Detail == "" || e.Instance == "" || e.Type == "" {
				t.Fatalf("problem fields missing: %+v", e)
			}
		})
	}
}

func TestUnsupportedMediaType(t *testing.T) {
	// The client always sends a supported type; rewrite it on the way out
	// to see how a 415 is reported.
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.Header.Set("Content-Type", "text/csv")
		return http.DefaultTransport.RoundTrip(r)
	})}
	c, _ := start(t, client.WithHTTPClient(hc))
	ctx := testContext(t)
	_, err := c.CreateTopic(ctx, client.NewTopic{Name: "t"})
	e := asError(t, err)
	if e.Status != http.StatusUnsupportedMediaType || e.Code != problem.CodeUnsupportedMediaType {
		t.Fatalf("got %v", err)
	}
	_, err = c.Produce(ctx, "t", []client.Message{{Value: []byte("x")}})
	if e := asError(t, err); e.Status != http.StatusUnsupportedMediaType {
		t.Fatalf("produce: %v", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestNewRejectsBadURL(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://x", "http://", "http://h/?q=1"} {
		if _, err := client.New(u); err == nil {
			t.Errorf("New(%q) succeeded", u)
		}
	}
	if _, err := client.New("http://127.0.0.1:1/prefix/"); err != nil {
		t.Fatal(err)
	}
}

// Requests pinned to a topic's id fail with topic_id_mismatch, carrying
// the new id, once the topic was deleted and created again; pinned to the
// new id they work.
func TestTopicIDPinning(t *testing.T) {
	c, _ := start(t)
	ctx := testContext(t)
	old, err := c.CreateTopic(ctx, client.NewTopic{Name: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Produce(ctx, "t", []client.Message{{Value: []byte("old")}}, client.WithTopicID(old.ID)); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteTopic(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	cur, err := c.CreateTopic(ctx, client.NewTopic{Name: "t"})
	if err != nil {
		t.Fatal(err)
	}
	mismatch := func(what string, err error) {
		t.Helper()
		if e := asError(t, err); e.Status != 409 || e.Code != problem.CodeTopicIDMismatch || e.TopicID != cur.ID || e.Retriable {
			t.Fatalf("%s pinned to the old topic: %v (%+v)", what, err, e)
		}
	}
	_, err = c.Fetch(ctx, "t", 0, 0, client.FetchOptions{TopicID: old.ID})
	mismatch("fetch", err)
	_, err = c.Produce(ctx, "t", []client.Message{{Value: []byte("x")}}, client.WithTopicID(old.ID))
	mismatch("produce", err)
	_, err = c.ProduceBinary(ctx, "t", []client.Message{{Value: []byte("x")}}, client.WithTopicID(old.ID))
	mismatch("binary produce", err)
	err = c.CommitOffsets(ctx, "g", "", 0, []client.OffsetCommit{{Topic: "t", TopicID: old.ID, Partition: 0, Offset: 0}})
	mismatch("commit", err)
	for _, err := range c.Stream(ctx, "t", 0, client.Earliest, client.StreamOptions{TopicID: old.ID}) {
		mismatch("stream", err)
	}
	if _, err := c.Produce(ctx, "t", []client.Message{{Value: []byte("new")}}, client.WithTopicID(cur.ID)); err != nil {
		t.Fatal(err)
	}
	res, err := c.Fetch(ctx, "t", 0, 0, client.FetchOptions{TopicID: cur.ID})
	if err != nil || len(res.Records) != 1 || string(res.Records[0].Value) != "new" {
		t.Fatalf("fetch pinned to the new topic: %+v, %v", res, err)
	}
	if err := c.CommitOffsets(ctx, "g", "", 0, []client.OffsetCommit{{Topic: "t", TopicID: cur.ID, Partition: 0, Offset: 1}}); err != nil {
		t.Fatal(err)
	}
}
