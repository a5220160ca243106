package agent_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"silt/agent"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/problem"
)

// Topic creation and growth are bounded over HTTP: past
// --max-partitions-per-topic a request is 400 invalid_partitions (as a
// Kafka broker answers INVALID_PARTITIONS), and past
// --max-cluster-partitions it is 409 partition_quota_exceeded. A refused
// request changes nothing, and deleting a topic frees its share.
func TestPartitionQuotasOverHTTP(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) {
		c.HTTP.MaxPartitions = 6
		c.MaxClusterPartitions = 10
	}})
	create := func(name string, partitions int) (int, http.Header, []byte) {
		t.Helper()
		return call(t, "POST", a.URL+"/v1/topics", "application/json", []byte(fmt.Sprintf(`{"name":%q,"partitions":%d}`, name, partitions)))
	}
	grow := func(name string, partitions int) (int, http.Header, []byte) {
		t.Helper()
		return call(t, "PATCH", a.URL+"/v1/topics/"+name, "application/json", []byte(fmt.Sprintf(`{"partitions":%d}`, partitions)))
	}
	partitionsOf := func(name string) int32 {
		t.Helper()
		var tj agent.TopicJSON
		getJSON(t, a.URL+"/v1/topics/"+name, &tj)
		return tj.Partitions
	}
	wantQuota := func(status int, hdr http.Header, b []byte) {
		t.Helper()
		p := wantProblem(t, status, hdr, b, http.StatusConflict, problem.CodePartitionQuota)
		if !strings.Contains(p.Detail, "--max-cluster-partitions") {
			t.Fatalf("detail %q does not name the setting", p.Detail)
		}
	}

	// Past the per-topic bound.
	status, hdr, b := create("a", 7)
	wantProblem(t, status, hdr, b, http.StatusBadRequest, problem.CodeInvalidPartitions)
	if status, _, b := create("a", 6); status != http.StatusCreated {
		t.Fatalf("create 6 partitions: %d %s", status, b)
	}
	status, hdr, b = grow("a", 7)
	wantProblem(t, status, hdr, b, http.StatusBadRequest, problem.CodeInvalidPartitions)

	// Past the cluster's quota: 6 + 5 > 10.
	status, hdr, b = create("b", 5)
	wantQuota(status, hdr, b)
	if status, _, _ := call(t, "GET", a.URL+"/v1/topics/b", "", nil); status != http.StatusNotFound {
		t.Fatalf("a refused creation left topic b behind: %d", status)
	}
	if status, _, b := create("b", 4); status != http.StatusCreated {
		t.Fatalf("create up to the quota: %d %s", status, b)
	}
	status, hdr, b = grow("b", 5)
	wantQuota(status, hdr, b)
	if n := partitionsOf("b"); n != 4 {
		t.Fatalf("a refused growth left b with %d partitions", n)
	}
	status, hdr, b = create("c", 1)
	wantQuota(status, hdr, b)

	// Deleting a topic gives its partitions back.
	if status, _, b := call(t, "DELETE", a.URL+"/v1/topics/a", "", nil); status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", status, b)
	}
	if status, _, b := grow("b", 6); status != http.StatusOK {
		t.Fatalf("grow after a deletion freed partitions: %d %s", status, b)
	}
	if n := partitionsOf("b"); n != 6 {
		t.Fatalf("b has %d partitions after growing to 6", n)
	}
}

// A producer id the cluster never issued is refused with 409
// unknown_producer on every produce form, before anything is written; an
// issued one works.
func TestUnknownProducerOverHTTP(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{})
	createTopic(t, a, "t", 1, "")
	for _, id := range []int64{1000, 1001, 123456789, 1<<63 - 1} {
		status, hdr, b := call(t, "POST", a.URL+"/v1/topics/t/records", "application/json",
			[]byte(fmt.Sprintf(`{"producer_id":%d,"sequences":{"0":0},"records":[{"value":1,"partition":0}]}`, id)))
		wantProblem(t, status, hdr, b, http.StatusConflict, problem.CodeUnknownProducer)
		status, hdr, b = call(t, "POST", fmt.Sprintf("%s/v1/topics/t/partitions/0/records?producer_id=%d&sequence=0", a.URL, id),
			"application/x-ndjson", []byte("{\"value\":1}\n"))
		wantProblem(t, status, hdr, b, http.StatusConflict, problem.CodeUnknownProducer)
	}
	if hw := highWatermarks(t, a, "t"); hw[0] != 0 {
		t.Fatalf("unknown producers wrote %d records", hw[0])
	}
	status, _, b := call(t, "POST", a.URL+"/v1/producers", "", nil)
	if status != http.StatusCreated {
		t.Fatalf("new producer: %d %s", status, b)
	}
	var p struct {
		ProducerID int64 `json:"producer_id"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	status, _, b = call(t, "POST", a.URL+"/v1/topics/t/records", "application/json",
		[]byte(fmt.Sprintf(`{"producer_id":%d,"sequences":{"0":0},"records":[{"value":1,"partition":0}]}`, p.ProducerID)))
	wantOffset(t, status, b, 0)
}
