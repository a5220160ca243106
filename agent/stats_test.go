package agent_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"silt/agent"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/recordjson"
)

// GET /v1/stats names the agent and carries its readiness, the time of
// its last acknowledged produce and the console's metric families, and no
// others.
func TestStats(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	read := func() agent.StatsJSON {
		t.Helper()
		status, hdr, b := call(t, "GET", a.URL+"/v1/stats", "", nil)
		if status != http.StatusOK || hdr.Get("Cache-Control") != "no-store" {
			t.Fatalf("stats: %d %s", status, b)
		}
		var s agent.StatsJSON
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := read()
	if !strings.HasPrefix(before.AgentID, "test-agent-") || before.LastFlushAt != nil || before.StartedAt.IsZero() {
		t.Fatalf("before any produce: %+v", before)
	}
	for _, c := range []string{"postgres", "objectstore", "flush"} {
		if before.Checks[c] != "ok" {
			t.Fatalf("check %s: %q", c, before.Checks[c])
		}
	}
	createTopic(t, a, "stats", 1, "")
	produceJSON(t, a, "stats", agent.ProduceRequest{Records: []recordjson.Record{{Value: json.RawMessage(`{"a":1}`)}, {Value: json.RawMessage(`2`)}}})
	after := read()
	if after.LastFlushAt == nil || time.Since(*after.LastFlushAt) > time.Minute {
		t.Fatalf("last flush: %v", after.LastFlushAt)
	}
	if got := after.Metrics["silt_batcher_flush_records_sum"]; got < 2 {
		t.Fatalf("flushed records %v; metrics %v", got, after.Metrics)
	}
	var puts float64
	for k, v := range after.Metrics {
		if strings.HasPrefix(k, "silt_objectstore_requests_total{") && strings.Contains(k, `op="put"`) {
			puts += v
		}
		if strings.HasPrefix(k, "go_") || strings.HasPrefix(k, "process_") || strings.HasPrefix(k, "silt_auth_") {
			t.Errorf("stats carries %s", k)
		}
	}
	if puts < 1 {
		t.Fatalf("no PUT counted: %v", after.Metrics)
	}
}

// The lag history answers for any valid group name, and refuses others.
func TestLagHistoryRoute(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) {
		c.Groups.LagHistoryInterval, c.Groups.LagHistoryWindow = 50*time.Millisecond, time.Minute
	}})
	createTopic(t, a, "lagged", 1, "")
	produceJSON(t, a, "lagged", agent.ProduceRequest{Records: []recordjson.Record{{Value: json.RawMessage(`1`)}, {Value: json.RawMessage(`2`)}}})
	status, _, b := call(t, "POST", a.URL+"/v1/groups/g1/offsets", "application/json",
		[]byte(`{"offsets":[{"topic":"lagged","partition":0,"offset":0}]}`))
	if status != http.StatusNoContent {
		t.Fatalf("commit: %d %s", status, b)
	}
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		status, _, b := call(t, "GET", a.URL+"/v1/groups/g1/lag-history", "", nil)
		if status != http.StatusOK {
			t.Fatalf("lag history: %d %s", status, b)
		}
		var h agent.LagHistoryResponse
		if err := json.Unmarshal(b, &h); err != nil {
			t.Fatal(err)
		}
		if h.IntervalMs != 50 || h.Group != "g1" {
			t.Fatalf("history: %+v", h)
		}
		if len(h.Points) > 0 && h.Points[len(h.Points)-1].Lag == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sample of lag 2: %+v", h)
		}
		<-tick.C
	}
	status, hdr, b := call(t, "GET", a.URL+"/v1/groups/..%2F/lag-history", "", nil)
	wantProblem(t, status, hdr, b, http.StatusBadRequest, "invalid_group_name")
}
