package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"silt/agent"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/problem"
	"silt/recordjson"
)

// topicID describes a topic and returns its id.
func topicID(t *testing.T, a *agenttest.Agent, name string) int64 {
	t.Helper()
	var tj agent.TopicJSON
	getJSON(t, a.URL+"/v1/topics/"+name, &tj)
	if tj.ID < 1 {
		t.Fatalf("topic %s without an id: %+v", name, tj)
	}
	return tj.ID
}

// Deleting a topic through one agent ends, at once, the long-polls, the
// streams and the group long-polls waiting on it through another: the
// deletion NOTIFYs like a commit. The waits are far longer than the test
// allows, so only a wake-up can end them.
func TestDeletedTopicEndsLongPollsAndStreams(t *testing.T) {
	t.Parallel()
	long := func(c *agentd.Config) {
		c.HTTP.MaxWait = 10 * time.Minute
		c.HTTP.SSEHeartbeat = 10 * time.Minute
	}
	bucket := agenttest.MinIOBucket(t)
	a := agenttest.Start(t, agenttest.Options{Bucket: bucket, Configure: long})
	b := agenttest.Start(t, agenttest.Options{Bucket: bucket, DatabaseURL: a.DatabaseURL, Configure: long})
	createTopic(t, a, "t", 2, "")
	produceJSON(t, a, "t", agent.ProduceRequest{Records: []recordjson.Record{{Value: json.RawMessage(`1`), Partition: i32p(0)}}})
	<-b.Notifier().Ready()

	type answer struct {
		status int
		body   []byte
	}
	poll := make(chan answer, 1)
	go func() {
		status, _, body := call(t, "GET", b.URL+"/v1/topics/t/partitions/1/records?offset=0&wait_ms=600000", "", nil)
		poll <- answer{status, body}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	events, _ := openStream(t, ctx, b.URL+"/v1/topics/t/partitions/0/stream?offset=latest")
	if ev := <-events; ev.event != "comment" {
		t.Fatalf("stream opened with %+v", ev)
	}
	m := joinGroup(t, b, "g", agent.JoinGroupRequest{Topics: []string{"t"}, AutoOffsetReset: "latest"})
	group := make(chan answer, 1)
	go func() {
		status, _, body := call(t, "GET", fmt.Sprintf("%s/v1/groups/g/members/%s/records?wait_ms=600000", b.URL, m.id), "", nil)
		group <- answer{status, body}
	}()
	// Delete only once all three are parked: the partition long-poll,
	// the stream's wait for new records and the group's two partitions.
	waitUntil(t, func() bool { return counter(t, b.Metrics(), "silt_fetch_waits_total") >= 4 })
	status, _, body := call(t, "DELETE", a.URL+"/v1/topics/t", "", nil)
	if status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", status, body)
	}

	r := <-poll
	p := wantProblem(t, r.status, http.Header{"Content-Type": {problem.MediaType}}, r.body, http.StatusNotFound, problem.CodeTopicNotFound)
	if !strings.Contains(p.Detail, `topic "t" does not exist`) {
		t.Fatalf("long-poll detail %q", p.Detail)
	}
	var last sseEvent
	for ev := range events {
		last = ev
	}
	if last.event != "error" || !strings.Contains(last.data, `"code":"topic_not_found"`) {
		t.Fatalf("the stream ended with %+v, want an error event with topic_not_found", last)
	}
	if ctx.Err() != nil {
		t.Fatal("the stream did not end by itself")
	}
	g := <-group
	if g.status != http.StatusOK || !strings.Contains(string(g.body), `"records":[]`) {
		t.Fatalf("group long-poll: %d %s", g.status, g.body)
	}
	// The member learns of the rebalance at its next operation.
	status, hdr, body := call(t, "GET", fmt.Sprintf("%s/v1/groups/g/members/%s/records?generation=%d", b.URL, m.id, m.gen), "", nil)
	wantProblem(t, status, hdr, body, http.StatusConflict, problem.CodeStaleGeneration)
}

// A topic deleted and created again under its name starts over at offset
// 0. Requests that pin the old topic's id are refused with 409
// topic_id_mismatch (and the new id), through an agent that still has the
// old topic cached too; pinning the new id, or nothing, works.
func TestTopicIDMismatchIsRefused(t *testing.T) {
	t.Parallel()
	a, b := twoAgents(t, func(c *agentd.Config) { c.HTTP.TopicCacheTTL = time.Hour })
	createTopic(t, a, "t", 1, "")
	for range 3 {
		produceJSON(t, a, "t", agent.ProduceRequest{Records: []recordjson.Record{{Value: json.RawMessage(`"old"`)}}})
	}
	old := topicID(t, a, "t")
	// b caches the old topic (for an hour).
	var resp fetchResponse
	getJSON(t, fmt.Sprintf("%s/v1/topics/t/partitions/0/records?offset=0&topic_id=%d", b.URL, old), &resp)
	if len(resp.Records) != 3 {
		t.Fatalf("pinned fetch of the old topic: %+v", resp)
	}
	// The group commits pinned to the old topic.
	postJSON(t, a.URL+"/v1/groups/g/offsets", map[string]any{"offsets": []map[string]any{{"topic": "t", "topic_id": old, "partition": 0, "offset": 3}}}, nil)

	if status, _, body := call(t, "DELETE", a.URL+"/v1/topics/t", "", nil); status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", status, body)
	}
	createTopic(t, a, "t", 1, "")
	produceJSON(t, a, "t", agent.ProduceRequest{Records: []recordjson.Record{{Value: json.RawMessage(`"new"`)}}})
	cur := topicID(t, a, "t")
	if cur == old {
		t.Fatalf("the topic created again kept id %d", old)
	}

	for _, via := range []*agenttest.Agent{a, b} {
		for _, c := range []struct{ method, path, ct, body string }{
			{"GET", "/v1/topics/t/partitions/0/records?offset=3", "", ``},
			{"GET", "/v1/topics/t/partitions/0/offsets", "", ``},
			{"GET", "/v1/topics/t/partitions/0/stream?offset=0", "", ``},
			{"POST", "/v1/topics/t/records", "application/json", `{"records":[{"value":1}]}`},
			{"POST", "/v1/topics/t/partitions/0/records", "application/x-ndjson", "{\"value\":1}\n"},
			{"POST", "/v1/groups/g/offsets", "application/json", fmt.Sprintf(`{"offsets":[{"topic":"t","topic_id":%d,"partition":0,"offset":1}]}`, old)},
		} {
			path := c.path
			if !strings.HasPrefix(path, "/v1/groups") {
				sep := "?"
				if strings.Contains(path, "?") {
					sep = "&"
				}
				path += fmt.Sprintf("%stopic_id=%d", sep, old)
			}
			status, hdr, body := call(t, c.method, via.URL+path, c.ct, []byte(c.body), "Accept", "text/event-stream")
			p := wantProblem(t, status, hdr, body, http.StatusConflict, problem.CodeTopicIDMismatch)
			if p.TopicID == nil || *p.TopicID != cur || !strings.Contains(p.Detail, "deleted and created again") {
				t.Fatalf("%s %s: %s", c.method, path, body)
			}
		}
		// Pinning the new id reads the new topic, even where the old one
		// was cached.
		getJSON(t, fmt.Sprintf("%s/v1/topics/t/partitions/0/records?offset=0&topic_id=%d", via.URL, cur), &resp)
		if len(resp.Records) != 1 || string(resp.Records[0].Value) != `"new"` {
			t.Fatalf("pinned fetch of the new topic through %s: %+v", via.URL, resp)
		}
	}
	// The old commit went with the old topic; a commit pinned to the new
	// one is taken.
	postJSON(t, a.URL+"/v1/groups/g/offsets", map[string]any{"offsets": []map[string]any{{"topic": "t", "topic_id": cur, "partition": 0, "offset": 1}}}, nil)
	status, hdr, body := call(t, "GET", a.URL+"/v1/topics/t/partitions/0/records?topic_id=0", "", nil)
	wantProblem(t, status, hdr, body, http.StatusBadRequest, problem.CodeInvalidParameter)
}
