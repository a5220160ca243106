package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"silt/agent"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/problem"
	"silt/recordjson"
)

// groupAgents starts two agents sharing one database and one MinIO bucket.
func groupAgents(t *testing.T) (*agenttest.Agent, *agenttest.Agent) {
	t.Helper()
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Bucket: agenttest.MinIOBucket(t)})
	b := agenttest.Start(t, agenttest.Options{DatabaseURL: a.DatabaseURL, Bucket: a.Raw})
	return a, b
}

// groupRecord is a record of a group fetch.
type groupRecord struct {
	fetched
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
}

type groupFetchResponse struct {
	Generation int64         `json:"generation"`
	Records    []groupRecord `json:"records"`
	Positions  []struct {
		Topic     string `json:"topic"`
		Partition int32  `json:"partition"`
		Offset    int64  `json:"offset"`
	} `json:"positions"`
}

// member is a test's view of one group member.
type member struct {
	id   string
	gen  int64
	via  *agenttest.Agent
	asgn []agent.AssignmentJSON
}

func postJSON(t *testing.T, url string, body any, out any) {
	t.Helper()
	status, _, b := call(t, "POST", url, "application/json", jsonBody(t, body))
	if status != http.StatusOK && status != http.StatusNoContent {
		t.Fatalf("POST %s: %d %s", url, status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("POST %s: %v in %s", url, err, b)
		}
	}
}

func joinGroup(t *testing.T, via *agenttest.Agent, group string, req agent.JoinGroupRequest) *member {
	t.Helper()
	var res agent.JoinGroupResponse
	postJSON(t, via.URL+"/v1/groups/"+group+"/members", req, &res)
	if res.MemberID == "" || res.Generation < 1 || res.HeartbeatIntervalMs <= 0 {
		t.Fatalf("join response %+v", res)
	}
	return &member{id: res.MemberID, gen: res.Generation, via: via, asgn: res.Assignments}
}

func (m *member) rejoin(t *testing.T, via *agenttest.Agent, group string, topics []string, sessionMs int64) {
	t.Helper()
	r := joinGroup(t, via, group, agent.JoinGroupRequest{MemberID: m.id, Topics: topics, SessionTimeoutMs: &sessionMs})
	if r.id != m.id {
		t.Fatalf("rejoin as %s got %s", m.id, r.id)
	}
	m.gen, m.asgn, m.via = r.gen, r.asgn, via
}

func heartbeat(t *testing.T, via *agenttest.Agent, group string, m *member) agent.HeartbeatResponse {
	t.Helper()
	var hb agent.HeartbeatResponse
	postJSON(t, via.URL+"/v1/groups/"+group+"/members/"+m.id+"/heartbeat", agent.HeartbeatRequest{Generation: &m.gen}, &hb)
	return hb
}

// settle heartbeats every member, alternating agents, and rejoins those
// told to, until a round where nobody has to.
func settle(t *testing.T, group string, topics []string, sessionMs int64, agents []*agenttest.Agent, ms ...*member) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for round := 0; ; round++ {
		quiet := true
		for i, m := range ms {
			via := agents[(i+round)%len(agents)]
			if hb := heartbeat(t, via, group, m); hb.Rejoin {
				quiet = false
				m.rejoin(t, via, group, topics, sessionMs)
			}
		}
		if quiet {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the group never settled")
		}
	}
}

// checkCover checks that the members' assignments are disjoint and cover
// partitions 0..n-1 of topic.
func checkCover(t *testing.T, topic string, n int, ms ...*member) {
	t.Helper()
	owner := map[int32]string{}
	for _, m := range ms {
		for _, a := range m.asgn {
			if a.Topic != topic {
				t.Fatalf("member %s assigned %s/%d", m.id, a.Topic, a.Partition)
			}
			if prev, dup := owner[a.Partition]; dup {
				t.Fatalf("partition %d assigned to %s and %s", a.Partition, prev, m.id)
			}
			owner[a.Partition] = m.id
		}
	}
	for p := range n {
		if _, ok := owner[int32(p)]; !ok {
			t.Fatalf("partition %d unassigned: %v", p, owner)
		}
	}
	if len(owner) != n {
		t.Fatalf("%d partitions assigned, want %d", len(owner), n)
	}
}

func describeGroup(t *testing.T, via *agenttest.Agent, group string) agent.GroupJSON {
	t.Helper()
	var d agent.GroupJSON
	getJSON(t, via.URL+"/v1/groups/"+group, &d)
	return d
}

func TestGroupMembershipAcrossAgents(t *testing.T) {
	a, b := groupAgents(t)
	agents := []*agenttest.Agent{a, b}
	createTopic(t, a, "events", 7, "")
	topics := []string{"events"}
	const long, short = int64(60_000), int64(2_000)
	m1 := joinGroup(t, a, "g", agent.JoinGroupRequest{Topics: topics, SessionTimeoutMs: i64p(long)})
	m2 := joinGroup(t, b, "g", agent.JoinGroupRequest{Topics: topics, SessionTimeoutMs: i64p(long)})
	m3 := joinGroup(t, a, "g", agent.JoinGroupRequest{Topics: topics, SessionTimeoutMs: i64p(short)})
	if m3.gen != 3 || len(m3.asgn) != 2 {
		t.Fatalf("third join: generation %d, %d partitions", m3.gen, len(m3.asgn))
	}
	settle(t, "g", topics, long, agents, m1, m2)
	m3.rejoin(t, b, "g", topics, short) // nothing to do, but keep the session fresh
	checkCover(t, "events", 7, m1, m2, m3)
	if len(m1.asgn) != 3 || len(m2.asgn) != 2 || len(m3.asgn) != 2 {
		t.Fatalf("range split %d/%d/%d, want 3/2/2", len(m1.asgn), len(m2.asgn), len(m3.asgn))
	}
	d := describeGroup(t, b, "g")
	if d.State != "stable" || d.Generation != 3 || len(d.Members) != 3 {
		t.Fatalf("describe %+v", d)
	}
	for _, dm := range d.Members {
		for _, m := range []*member{m1, m2, m3} {
			if m.id == dm.MemberID && len(dm.Assignments) != len(m.asgn) {
				t.Fatalf("describe says %s has %v, join said %v", m.id, dm.Assignments, m.asgn)
			}
		}
	}

	// m3 stops heartbeating. Once its session passes, the others are told
	// to rejoin (through either agent) and share its partitions.
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for round := 0; ; round++ {
		hb := heartbeat(t, agents[round%2], "g", m1)
		if hb.Rejoin {
			if hb.Generation != 4 {
				t.Fatalf("expiry moved to generation %d, want 4", hb.Generation)
			}
			break
		}
		heartbeat(t, agents[(round+1)%2], "g", m2)
		if time.Now().After(deadline) {
			t.Fatal("m3 was never expired")
		}
		<-tick.C
	}
	if hb := heartbeat(t, b, "g", m2); !hb.Rejoin {
		t.Fatalf("m2 not told to rejoin: %+v", hb)
	}
	settle(t, "g", topics, long, agents, m1, m2)
	checkCover(t, "events", 7, m1, m2)
	status, hdr, body := call(t, "POST", b.URL+"/v1/groups/g/members/"+m3.id+"/heartbeat", "application/json", jsonBody(t, agent.HeartbeatRequest{Generation: &m3.gen}))
	wantProblem(t, status, hdr, body, http.StatusNotFound, problem.CodeMemberNotFound)
	if d := describeGroup(t, a, "g"); len(d.Members) != 2 || d.Generation != 4 || d.State != "stable" {
		t.Fatalf("describe after expiry %+v", d)
	}

	// Leaving rebalances the rest; an empty group can be deleted.
	status, _, body = call(t, "DELETE", a.URL+"/v1/groups/g", "", nil)
	wantProblem(t, status, hdr, body, http.StatusConflict, problem.CodeGroupNotEmpty)
	for _, m := range []*member{m1, m2} {
		if status, _, body := call(t, "DELETE", b.URL+"/v1/groups/g/members/"+m.id, "", nil); status != http.StatusNoContent {
			t.Fatalf("leave: %d %s", status, body)
		}
	}
	var list struct {
		Groups []agent.GroupSummaryJSON `json:"groups"`
	}
	getJSON(t, a.URL+"/v1/groups", &list)
	if len(list.Groups) != 1 || list.Groups[0] != (agent.GroupSummaryJSON{Name: "g", State: "empty", Generation: 6, Members: 0}) {
		t.Fatalf("list %+v", list)
	}
	if status, _, body := call(t, "DELETE", b.URL+"/v1/groups/g", "", nil); status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", status, body)
	}
	status, hdr, body = call(t, "GET", a.URL+"/v1/groups/g", "", nil)
	wantProblem(t, status, hdr, body, http.StatusNotFound, problem.CodeGroupNotFound)
}

func TestGroupErrors(t *testing.T) {
	a, b := groupAgents(t)
	createTopic(t, a, "t", 2, "")
	produceJSON(t, a, "t", agent.ProduceRequest{Records: []recordjson.Record{{Partition: i32p(0), Value: json.RawMessage(`1`)}}})
	m1 := joinGroup(t, a, "g", agent.JoinGroupRequest{Topics: []string{"t"}})
	m2 := joinGroup(t, b, "g", agent.JoinGroupRequest{Topics: []string{"t"}})
	m1.rejoin(t, a, "g", []string{"t"}, 45_000)
	// m1 has partition 0, m2 partition 1, both at generation 2.
	if len(m1.asgn) != 1 || m1.asgn[0].Partition != 0 || m1.gen != 2 || m2.gen != 2 {
		t.Fatalf("assignments %+v %+v", m1, m2)
	}
	commit := func(memberID string, gen *int64, topic string, part int32, off int64) (int, http.Header, []byte) {
		return call(t, "POST", b.URL+"/v1/groups/g/offsets", "application/json", jsonBody(t, agent.CommitOffsetsRequest{
			MemberID: memberID, Generation: gen, Offsets: []agent.OffsetCommitJSON{{Topic: topic, Partition: &part, Offset: &off}}}))
	}
	for _, tc := range []struct {
		name         string
		method, path string
		body         string
		status       int
		code         problem.Code
	}{
		{"bad group name", "POST", "/v1/groups/bad%20name/members", `{"topics":["t"]}`, 400, problem.CodeInvalidGroupName},
		{"long group name", "GET", "/v1/groups/" + strings.Repeat("x", 250), ``, 400, problem.CodeInvalidGroupName},
		{"malformed join", "POST", "/v1/groups/g/members", `{"topics":`, 400, problem.CodeInvalidJSON},
		{"unknown field", "POST", "/v1/groups/g/members", `{"topics":["t"],"nope":1}`, 400, problem.CodeInvalidJSON},
		{"no topics", "POST", "/v1/groups/g/members", `{"topics":[]}`, 400, problem.CodeInvalidParameter},
		{"bad reset", "POST", "/v1/groups/g/members", `{"topics":["t"],"auto_offset_reset":"none"}`, 400, problem.CodeInvalidParameter},
		{"session too short", "POST", "/v1/groups/g/members", `{"topics":["t"],"session_timeout_ms":5}`, 400, problem.CodeInvalidParameter},
		{"session negative", "POST", "/v1/groups/g/members", `{"topics":["t"],"session_timeout_ms":-5}`, 400, problem.CodeInvalidParameter},
		{"missing topic", "POST", "/v1/groups/g/members", `{"topics":["missing"]}`, 404, problem.CodeTopicNotFound},
		{"unknown member rejoin", "POST", "/v1/groups/g/members", `{"topics":["t"],"member_id":"m-ghost"}`, 404, problem.CodeMemberNotFound},
		{"heartbeat without generation", "POST", "/v1/groups/g/members/" + m1.id + "/heartbeat", `{}`, 400, problem.CodeInvalidParameter},
		{"heartbeat unknown member", "POST", "/v1/groups/g/members/m-ghost/heartbeat", `{"generation":2}`, 404, problem.CodeMemberNotFound},
		{"heartbeat unknown group", "POST", "/v1/groups/nope/members/m-ghost/heartbeat", `{"generation":2}`, 404, problem.CodeMemberNotFound},
		{"leave unknown member", "DELETE", "/v1/groups/g/members/m-ghost", ``, 404, problem.CodeMemberNotFound},
		{"describe unknown group", "GET", "/v1/groups/nope", ``, 404, problem.CodeGroupNotFound},
		{"offsets unknown group", "GET", "/v1/groups/nope/offsets", ``, 404, problem.CodeGroupNotFound},
		{"commit without generation", "POST", "/v1/groups/g/offsets", `{"member_id":"` + m1.id + `","offsets":[{"topic":"t","partition":0,"offset":1}]}`, 400, problem.CodeInvalidParameter},
		{"commit without offset", "POST", "/v1/groups/g/offsets", `{"member_id":"` + m1.id + `","generation":2,"offsets":[{"topic":"t","partition":0}]}`, 400, problem.CodeInvalidParameter},
		{"commit nothing", "POST", "/v1/groups/g/offsets", `{"member_id":"` + m1.id + `","generation":2,"offsets":[]}`, 400, problem.CodeInvalidParameter},
		{"commit bad topic", "POST", "/v1/groups/g/offsets", `{"offsets":[{"topic":"a b","partition":0,"offset":0}]}`, 400, problem.CodeInvalidTopicName},
		{"fetch bad wait", "GET", "/v1/groups/g/members/" + m1.id + "/records?wait_ms=-1", ``, 400, problem.CodeInvalidParameter},
		{"fetch bad auto_commit", "GET", "/v1/groups/g/members/" + m1.id + "/records?auto_commit=maybe", ``, 400, problem.CodeInvalidParameter},
		{"fetch unknown member", "GET", "/v1/groups/g/members/m-ghost/records", ``, 404, problem.CodeMemberNotFound},
		{"fetch other generation", "GET", "/v1/groups/g/members/" + m1.id + "/records?generation=1", ``, 409, problem.CodeStaleGeneration},
		{"join wrong media type", "POST", "/v1/groups/g/members", `topics=t`, 415, problem.CodeUnsupportedMediaType},
		// Group inputs (issue 21): generations that never were, metadata
		// past Kafka's offset.metadata.max.bytes.
		{"heartbeat negative generation", "POST", "/v1/groups/g/members/" + m1.id + "/heartbeat", `{"generation":-1}`, 400, problem.CodeInvalidParameter},
		{"heartbeat generation ahead", "POST", "/v1/groups/g/members/" + m1.id + "/heartbeat", `{"generation":3}`, 400, problem.CodeInvalidParameter},
		{"heartbeat absurd generation", "POST", "/v1/groups/g/members/" + m1.id + "/heartbeat", `{"generation":9223372036854775807}`, 400, problem.CodeInvalidParameter},
		{"commit negative generation", "POST", "/v1/groups/g/offsets", `{"member_id":"` + m1.id + `","generation":-2,"offsets":[{"topic":"t","partition":0,"offset":1}]}`, 400, problem.CodeInvalidParameter},
		{"commit generation ahead", "POST", "/v1/groups/g/offsets", `{"member_id":"` + m1.id + `","generation":99,"offsets":[{"topic":"t","partition":0,"offset":1}]}`, 400, problem.CodeInvalidParameter},
		{"fetch generation ahead", "GET", "/v1/groups/g/members/" + m1.id + "/records?generation=99", ``, 400, problem.CodeInvalidParameter},
		{"metadata too long", "POST", "/v1/groups/g/offsets", `{"member_id":"` + m1.id + `","generation":2,"offsets":[{"topic":"t","partition":0,"offset":1,"metadata":"` + strings.Repeat("x", 4097) + `"}]}`, 400, problem.CodeInvalidParameter},
	} {
		ct := "application/json"
		if tc.code == problem.CodeUnsupportedMediaType {
			ct = "text/plain"
		}
		var body []byte
		if tc.body != "" {
			body = []byte(tc.body)
		}
		status, hdr, got := call(t, tc.method, a.URL+tc.path, ct, body)
		if status != tc.status {
			t.Errorf("%s: %d %s, want %d %s", tc.name, status, got, tc.status, tc.code)
			continue
		}
		wantProblem(t, status, hdr, got, tc.status, tc.code)
	}

	gen1, gen2 := int64(1), int64(2)
	status, hdr, body := commit(m1.id, &gen1, "t", 0, 1)
	wantProblem(t, status, hdr, body, http.StatusConflict, problem.CodeStaleGeneration)
	status, hdr, body = commit(m1.id, &gen2, "t", 1, 0)
	wantProblem(t, status, hdr, body, http.StatusConflict, problem.CodeNotAssigned)
	status, hdr, body = commit("m-ghost", &gen2, "t", 0, 1)
	wantProblem(t, status, hdr, body, http.StatusNotFound, problem.CodeMemberNotFound)
	status, hdr, body = commit(m1.id, &gen2, "t", 0, 2) // the high watermark is 1
	wantProblem(t, status, hdr, body, http.StatusBadRequest, problem.CodeInvalidOffset)
	status, hdr, body = commit(m1.id, &gen2, "t", 0, -1)
	wantProblem(t, status, hdr, body, http.StatusBadRequest, problem.CodeInvalidOffset)
	status, hdr, body = commit("", nil, "t", 0, 0)
	wantProblem(t, status, hdr, body, http.StatusConflict, problem.CodeGroupNotEmpty)
	status, hdr, body = commit("", nil, "t", 5, 0)
	wantProblem(t, status, hdr, body, http.StatusConflict, problem.CodeGroupNotEmpty)
	if status, _, body := commit(m1.id, &gen2, "t", 0, 1); status != http.StatusNoContent {
		t.Fatalf("valid commit: %d %s", status, body)
	}
	status, hdr, body = commit("", nil, "t", 0, 0)
	wantProblem(t, status, hdr, body, http.StatusConflict, problem.CodeGroupNotEmpty)
	status, hdr, body = call(t, "POST", a.URL+"/v1/groups/other/offsets", "application/json", []byte(`{"offsets":[{"topic":"t","partition":9,"offset":0}]}`))
	wantProblem(t, status, hdr, body, http.StatusNotFound, problem.CodePartitionNotFound)
	status, hdr, body = call(t, "POST", a.URL+"/v1/groups/other/offsets", "application/json", []byte(`{"offsets":[{"topic":"nope","partition":0,"offset":0}]}`))
	wantProblem(t, status, hdr, body, http.StatusNotFound, problem.CodeTopicNotFound)

	// A third member makes m1's fetches stale.
	joinGroup(t, a, "g", agent.JoinGroupRequest{Topics: []string{"t"}})
	status, hdr, body = call(t, "GET", b.URL+"/v1/groups/g/members/"+m1.id+"/records", "", nil)
	wantProblem(t, status, hdr, body, http.StatusConflict, problem.CodeStaleGeneration)
}

// fetchGroup does one group fetch.
func fetchGroup(t *testing.T, via *agenttest.Agent, group string, m *member, query string) groupFetchResponse {
	t.Helper()
	var out groupFetchResponse
	getJSON(t, via.URL+"/v1/groups/"+group+"/members/"+m.id+"/records?"+query, &out)
	return out
}

// consumed collects what a group read, failing on any record read twice.
type consumed struct {
	mu   sync.Mutex
	seen map[string]string // topic/partition/offset -> value
}

func (c *consumed) add(t *testing.T, rs []groupRecord) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range rs {
		k := fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset)
		if _, dup := c.seen[k]; dup {
			t.Fatalf("record %s read twice", k)
		}
		c.seen[k] = string(r.Value)
	}
}

func (c *consumed) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// commitPositions commits what a fetch returned.
func commitPositions(t *testing.T, via *agenttest.Agent, group string, m *member, rs []groupRecord) {
	t.Helper()
	next := map[int32]int64{}
	for _, r := range rs {
		next[r.Partition] = max(next[r.Partition], r.Offset+1)
	}
	if len(next) == 0 {
		return
	}
	req := agent.CommitOffsetsRequest{MemberID: m.id, Generation: &m.gen}
	for p, off := range next {
		req.Offsets = append(req.Offsets, agent.OffsetCommitJSON{Topic: rs[0].Topic, Partition: &p, Offset: &off})
	}
	postJSON(t, via.URL+"/v1/groups/"+group+"/offsets", req, nil)
}

func produceN(t *testing.T, a *agenttest.Agent, topic string, from, n int) {
	t.Helper()
	req := agent.ProduceRequest{}
	for i := from; i < from+n; i++ {
		req.Records = append(req.Records, recordjson.Record{Key: json.RawMessage(fmt.Sprintf(`"k%d"`, i)), Value: json.RawMessage(fmt.Sprint(i))})
	}
	produceJSON(t, a, topic, req)
}

// A group that stops after committing what it read, then restarts with
// new members, reads every record exactly once across the restart.
func TestGroupRestartReadsEachRecordOnce(t *testing.T) {
	a, b := groupAgents(t)
	agents := []*agenttest.Agent{a, b}
	createTopic(t, a, "orders", 4, "")
	produceN(t, a, "orders", 0, 200)
	topics := []string{"orders"}
	const session = int64(30_000)
	got := &consumed{seen: map[string]string{}}

	earliest := agent.JoinGroupRequest{Topics: topics, SessionTimeoutMs: i64p(session), AutoOffsetReset: "earliest"}
	m1 := joinGroup(t, a, "g", earliest)
	m2 := joinGroup(t, b, "g", earliest)
	settle(t, "g", topics, session, agents, m1, m2)
	checkCover(t, "orders", 4, m1, m2)
	// Phase 1: read about half, committing after each fetch, then leave.
	for i := 0; got.count() < 100; i++ {
		m := []*member{m1, m2}[i%2]
		via := agents[(i/2)%2]
		res := fetchGroup(t, via, "g", m, "max_records=13")
		if res.Generation != m.gen {
			t.Fatalf("fetch generation %d, member at %d", res.Generation, m.gen)
		}
		got.add(t, res.Records)
		commitPositions(t, via, "g", m, res.Records)
		if i > 100 {
			t.Fatal("phase 1 does not progress")
		}
	}
	for _, m := range []*member{m1, m2} {
		if status, _, body := call(t, "DELETE", a.URL+"/v1/groups/g/members/"+m.id, "", nil); status != http.StatusNoContent {
			t.Fatalf("leave: %d %s", status, body)
		}
	}
	phase1 := got.count()
	produceN(t, b, "orders", 200, 50)

	// Phase 2: new members start at the committed offsets; auto-commit.
	m3 := joinGroup(t, b, "g", earliest)
	m4 := joinGroup(t, a, "g", earliest)
	settle(t, "g", topics, session, agents, m3, m4)
	committedStart := 0
	for _, m := range []*member{m3, m4} {
		for _, as := range m.asgn {
			if as.CommittedOffset != nil {
				committedStart++
				if as.Offset != *as.CommittedOffset {
					t.Fatalf("assignment starts at %d, committed %d", as.Offset, *as.CommittedOffset)
				}
			}
		}
	}
	if committedStart == 0 {
		t.Fatal("no partition restarted from a committed offset")
	}
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; got.count() < 250; i++ {
		m := []*member{m3, m4}[i%2]
		res := fetchGroup(t, agents[i%2], "g", m, "max_records=11&auto_commit=true")
		got.add(t, res.Records)
		if time.Now().After(deadline) {
			t.Fatalf("phase 2 read %d of 250", got.count())
		}
	}
	if phase1 < 100 || phase1 >= 250 {
		t.Fatalf("phase 1 read %d", phase1)
	}
	// The last auto-commit happens on the next fetch, which returns nothing.
	for _, m := range []*member{m3, m4} {
		if res := fetchGroup(t, a, "g", m, "auto_commit=true"); len(res.Records) != 0 {
			t.Fatalf("extra records %+v", res.Records)
		}
		fetchGroup(t, b, "g", m, "auto_commit=true")
	}
	values := map[string]bool{}
	for _, v := range got.seen {
		values[v] = true
	}
	for i := range 250 {
		if !values[fmt.Sprint(i)] {
			t.Fatalf("value %d never read", i)
		}
	}
	var offs agent.GroupOffsetsResponse
	getJSON(t, b.URL+"/v1/groups/g/offsets", &offs)
	total := int64(0)
	for _, o := range offs.Offsets {
		if o.Lag != 0 || o.CommittedOffset == nil || *o.CommittedOffset != o.HighWatermark {
			t.Fatalf("offsets after consuming everything: %+v", o)
		}
		total += o.HighWatermark
	}
	if len(offs.Offsets) != 4 || total != 250 {
		t.Fatalf("offsets %+v", offs)
	}
}

func TestGroupLagAndMetrics(t *testing.T) {
	a, b := groupAgents(t)
	createTopic(t, a, "t", 2, "")
	req := agent.ProduceRequest{}
	for i := range 15 {
		p := int32(0)
		if i >= 10 {
			p = 1
		}
		req.Records = append(req.Records, recordjson.Record{Partition: &p, Value: json.RawMessage(fmt.Sprint(i))})
	}
	produceJSON(t, a, "t", req)
	postJSON(t, b.URL+"/v1/groups/g/offsets", agent.CommitOffsetsRequest{Offsets: []agent.OffsetCommitJSON{
		{Topic: "t", Partition: i32p(0), Offset: i64p(3), Metadata: "batch-7"}}}, nil)
	createTopic(t, a, "u", 1, "")
	produceJSON(t, a, "u", agent.ProduceRequest{Records: []recordjson.Record{{Value: json.RawMessage(`1`)}, {Value: json.RawMessage(`2`)}}})
	var offs agent.GroupOffsetsResponse
	getJSON(t, a.URL+"/v1/groups/g/offsets", &offs)
	// Every partition of the topics with commits.
	if len(offs.Offsets) != 2 || offs.Group != "g" {
		t.Fatalf("offsets %+v", offs)
	}
	o := offs.Offsets[0]
	if o.Topic != "t" || o.Partition != 0 || *o.CommittedOffset != 3 || o.HighWatermark != 10 || o.Lag != 7 || o.Metadata != "batch-7" || o.CommittedAt == nil {
		t.Fatalf("offset %+v", o)
	}
	// Nothing committed: the lag counts from the log start offset.
	if o := offs.Offsets[1]; o.Partition != 1 || o.CommittedOffset != nil || o.Lag != 5 || o.HighWatermark != 5 || o.LogStartOffset != 0 {
		t.Fatalf("offset %+v", o)
	}
	// Subscribed topics appear too.
	joinGroup(t, b, "g", agent.JoinGroupRequest{Topics: []string{"u"}})
	getJSON(t, a.URL+"/v1/groups/g/offsets", &offs)
	if len(offs.Offsets) != 3 || offs.Offsets[2].Topic != "u" || offs.Offsets[2].CommittedOffset != nil || offs.Offsets[2].Lag != 2 {
		t.Fatalf("offsets with a subscription: %+v", offs.Offsets)
	}

	// /metrics of either agent: lag of committed partitions only.
	for _, ag := range []*agenttest.Agent{a, b} {
		status, _, body := call(t, "GET", ag.URL+"/metrics", "", nil)
		if status != http.StatusOK {
			t.Fatalf("metrics: %d", status)
		}
		var lines []string
		sc := bufio.NewScanner(bytes.NewReader(body))
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "silt_group_lag_records{") {
				lines = append(lines, sc.Text())
			}
		}
		if want := `[silt_group_lag_records{group="g",partition="0",topic="t"} 7]`; fmt.Sprint(lines) != want {
			t.Fatalf("lag series %v, want %s", lines, want)
		}
	}
}

func TestGroupFetchLongPoll(t *testing.T) {
	a, b := groupAgents(t)
	createTopic(t, a, "t", 3, "")
	produceN(t, a, "t", 0, 5) // before the join: latest skips them
	m := joinGroup(t, a, "g", agent.JoinGroupRequest{Topics: []string{"t"}})
	for _, as := range m.asgn {
		if as.CommittedOffset != nil {
			t.Fatalf("committed %+v", as)
		}
	}
	if res := fetchGroup(t, b, "g", m, ""); len(res.Records) != 0 {
		t.Fatalf("latest returned old records %+v", res.Records)
	}
	waits := func() float64 {
		mfs, err := b.Metrics().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "silt_fetch_waits_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	before := waits()
	done := make(chan groupFetchResponse, 1)
	start := time.Now()
	go func() {
		var out groupFetchResponse
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", b.URL+"/v1/groups/g/members/"+m.id+"/records?wait_ms=25000", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
		}
		if err != nil {
			t.Error(err)
		}
		done <- out
	}()
	// Once all three partitions wait, produce one record through the other agent.
	waitUntil(t, func() bool { return waits() >= before+3 })
	produceJSON(t, a, "t", agent.ProduceRequest{Records: []recordjson.Record{{Partition: i32p(2), Value: json.RawMessage(`"late"`)}}})
	res := <-done
	if len(res.Records) != 1 || string(res.Records[0].Value) != `"late"` || res.Records[0].Partition != 2 || res.Records[0].Topic != "t" {
		t.Fatalf("long-poll returned %+v", res)
	}
	if elapsed := time.Since(start); elapsed > 20*time.Second {
		t.Fatalf("long-poll took %v: woken by the timeout, not the commit", elapsed)
	}
	sort.Slice(res.Positions, func(i, j int) bool { return res.Positions[i].Partition < res.Positions[j].Partition })
	if len(res.Positions) != 3 || res.Positions[2].Offset != res.Records[0].Offset+1 {
		t.Fatalf("positions %+v", res.Positions)
	}
	// A bounded wait with nothing new returns empty.
	if res := fetchGroup(t, a, "g", m, "wait_ms=100"); len(res.Records) != 0 {
		t.Fatalf("empty long-poll returned %+v", res.Records)
	}
	// Limits hold across partitions: produce 30, read them 7 at a time.
	produceN(t, a, "t", 100, 30)
	seen := map[string]bool{}
	for i := 0; len(seen) < 30; i++ {
		res := fetchGroup(t, b, "g", m, "max_records=7&encoding=base64")
		if len(res.Records) > 7 {
			t.Fatalf("%d records, max 7", len(res.Records))
		}
		for _, r := range res.Records {
			if r.ValueB64 == nil {
				t.Fatalf("encoding=base64 not honoured: %+v", r)
			}
			k := fmt.Sprintf("%d/%d", r.Partition, r.Offset)
			if seen[k] {
				t.Fatalf("record %s twice", k)
			}
			seen[k] = true
		}
		if i > 30 {
			t.Fatalf("read %d of 30", len(seen))
		}
	}
}

// Commit metadata up to Kafka's 4 KiB is kept whole.
func TestGroupCommitMetadataLimit(t *testing.T) {
	a, _ := groupAgents(t)
	createTopic(t, a, "t", 1, "")
	meta := strings.Repeat("é", 2048) // 4096 bytes
	postJSON(t, a.URL+"/v1/groups/g/offsets", map[string]any{"offsets": []map[string]any{{"topic": "t", "partition": 0, "offset": 0, "metadata": meta}}}, nil)
	var offs agent.GroupOffsetsResponse
	getJSON(t, a.URL+"/v1/groups/g/offsets", &offs)
	if len(offs.Offsets) != 1 || offs.Offsets[0].Metadata != meta {
		t.Fatalf("offsets %+v", offs)
	}
}

// A full group is retriable, with Retry-After; sessions are bounded.
func TestGroupFullIsRetriable(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) { c.Groups.MaxMembers = 1 }})
	createTopic(t, a, "t", 1, "")
	joinGroup(t, a, "g", agent.JoinGroupRequest{Topics: []string{"t"}})
	status, hdr, body := call(t, "POST", a.URL+"/v1/groups/g/members", "application/json", []byte(`{"topics":["t"]}`))
	p := wantProblem(t, status, hdr, body, http.StatusConflict, problem.CodeGroupFull)
	if !p.Retriable || p.RetryAfter < 1 || hdr.Get("Retry-After") == "" {
		t.Fatalf("group_full without a retry hint: %s (Retry-After %q)", body, hdr.Get("Retry-After"))
	}
	status, hdr, body = call(t, "POST", a.URL+"/v1/groups/h/members", "application/json", []byte(`{"topics":["t"],"session_timeout_ms":300001}`))
	wantProblem(t, status, hdr, body, http.StatusBadRequest, problem.CodeInvalidParameter)
}
