package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"silt/agent"
	"silt/auth"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/problem"
)

// A key cannot tell a topic it may not see from one that does not exist:
// 403 comes before 404.
func TestForbiddenBeforeNotFound(t *testing.T) {
	a, admin := secureAgent(t, agenttest.Options{})
	tok, _ := newKey(t, a, admin, uniq("probe"), "describe,consume:topic:mine-*")
	status, hdr, b := as(t, tok, "GET", a.URL+"/v1/topics/secret-none", nil)
	wantProblem(t, status, hdr, b, http.StatusForbidden, problem.CodeForbidden)
	status, hdr, b = as(t, tok, "GET", a.URL+"/v1/topics/mine-none/partitions/0/records", nil)
	wantProblem(t, status, hdr, b, http.StatusNotFound, problem.CodeTopicNotFound)
	status, hdr, b = as(t, tok, "GET", a.URL+"/v1/topics/mine-none", nil)
	wantProblem(t, status, hdr, b, http.StatusNotFound, problem.CodeTopicNotFound)
	// An escaped name is authorized as the handler will read it.
	status, hdr, b = as(t, tok, "GET", a.URL+"/v1/topics/%73ecret-none", nil)
	wantProblem(t, status, hdr, b, http.StatusForbidden, problem.CodeForbidden)
	if status, _, b := as(t, tok, "GET", a.URL+"/v1/topics/%6Dine-none/partitions/0/records", nil); status == http.StatusForbidden || status == http.StatusUnauthorized {
		t.Fatalf("an escaped name the key may read: %d %s", status, b)
	}
	// A body naming a topic the key may not create: 403, not 409.
	mustAs(t, http.StatusCreated, admin, "POST", a.URL+"/v1/topics", map[string]any{"name": "secret-exists"})
	status, hdr, b = as(t, tok, "POST", a.URL+"/v1/topics", map[string]any{"name": "secret-exists"})
	wantProblem(t, status, hdr, b, http.StatusForbidden, problem.CodeForbidden)
	// A malformed body tells nothing to a key that may create nothing.
	status, hdr, b = as(t, tok, "POST", a.URL+"/v1/topics", "{not json")
	wantProblem(t, status, hdr, b, http.StatusForbidden, problem.CodeForbidden)
}

// Lists show only what the key may describe.
func TestListsShowOnlyDescribable(t *testing.T) {
	a, admin := secureAgent(t, agenttest.Options{})
	for _, name := range []string{"app-a", "app-b", "other"} {
		mustAs(t, http.StatusCreated, admin, "POST", a.URL+"/v1/topics", map[string]any{"name": name})
		mustAs(t, http.StatusNoContent, admin, "POST", a.URL+"/v1/groups/"+name+"-g/offsets",
			map[string]any{"offsets": []map[string]any{{"topic": name, "partition": 0, "offset": 0}}})
	}
	tok, _ := newKey(t, a, admin, uniq("lister"), "produce:topic:app-*", "describe:group:other-g")
	var topics struct {
		Topics []agent.TopicJSON `json:"topics"`
	}
	if err := json.Unmarshal(mustAs(t, 200, tok, "GET", a.URL+"/v1/topics", nil), &topics); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tp := range topics.Topics {
		names = append(names, tp.Name)
	}
	if strings.Join(names, ",") != "app-a,app-b" {
		t.Fatalf("topics %v", names)
	}
	var groups struct {
		Groups []agent.GroupSummaryJSON `json:"groups"`
	}
	if err := json.Unmarshal(mustAs(t, 200, tok, "GET", a.URL+"/v1/groups", nil), &groups); err != nil {
		t.Fatal(err)
	}
	if len(groups.Groups) != 1 || groups.Groups[0].Name != "other-g" {
		t.Fatalf("groups %+v", groups.Groups)
	}
}

// An idempotent producer id belongs to the key that asked for it.
func TestProducerIDBoundToKey(t *testing.T) {
	a, admin := secureAgent(t, agenttest.Options{})
	mustAs(t, http.StatusCreated, admin, "POST", a.URL+"/v1/topics", map[string]any{"name": "orders"})
	tokA, _ := newKey(t, a, admin, uniq("a"), "produce:topic:orders")
	tokB, _ := newKey(t, a, admin, uniq("b"), "produce:topic:orders")
	var pid struct {
		ID int64 `json:"producer_id"`
	}
	if err := json.Unmarshal(mustAs(t, http.StatusCreated, tokA, "POST", a.URL+"/v1/producers", nil), &pid); err != nil {
		t.Fatal(err)
	}
	req := func(seq int32) map[string]any {
		return map[string]any{"records": []map[string]any{{"value": "x", "partition": 0}}, "producer_id": pid.ID, "sequences": map[string]int32{"0": seq}}
	}
	status, hdr, b := as(t, tokB, "POST", a.URL+"/v1/topics/orders/records", req(0))
	wantProblem(t, status, hdr, b, http.StatusForbidden, problem.CodeForbidden)
	// NDJSON carries the id in the query: the same check.
	status, hdr, b = call(t, "POST", a.URL+"/v1/topics/orders/records?producer_id="+strconv.FormatInt(pid.ID, 10)+"&sequences=0:0",
		"application/x-ndjson", []byte(`{"value":"x","partition":0}`+"\n"), "Authorization", "Bearer "+tokB)
	wantProblem(t, status, hdr, b, http.StatusForbidden, problem.CodeForbidden)
	mustAs(t, http.StatusOK, tokA, "POST", a.URL+"/v1/topics/orders/records", req(0))
	// Nothing of B's refused attempts was written.
	var fr struct {
		Records []json.RawMessage `json:"records"`
	}
	if err := json.Unmarshal(mustAs(t, 200, admin, "GET", a.URL+"/v1/topics/orders/partitions/0/records", nil), &fr); err != nil || len(fr.Records) != 1 {
		t.Fatalf("records %d %v", len(fr.Records), err)
	}
}

// Revoking a key ends its open stream and long-poll at once; taking away
// the ACL a stream relies on ends it too.
func TestRevocationEndsStreamsAndLongPolls(t *testing.T) {
	a, admin := secureAgent(t, agenttest.Options{})
	mustAs(t, http.StatusCreated, admin, "POST", a.URL+"/v1/topics", map[string]any{"name": "logs"})
	tok, id := newKey(t, a, admin, uniq("reader"), "consume:topic:logs")

	stream := openKeyStream(t, tok, a.URL+"/v1/topics/logs/partitions/0/stream?offset=earliest")
	type result struct {
		status int
		body   []byte
		err    error
	}
	poll := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("GET", a.URL+"/v1/topics/logs/partitions/0/records?offset=0&wait_ms=30000", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			poll <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		poll <- result{resp.StatusCode, b, err}
	}()
	// Revoke once both are parked waiting for a commit.
	deadline := time.Now().Add(10 * time.Second)
	for fetchWaits(t, a) < 2 {
		select {
		case r := <-poll:
			t.Fatalf("the long-poll answered early: %d %s %v", r.status, r.body, r.err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the stream and the long-poll did not park")
		}
	}
	start := time.Now()
	mustAs(t, http.StatusOK, admin, "DELETE", a.URL+"/v1/keys/"+id, nil)
	select {
	case r := <-poll:
		if r.err != nil || r.status != http.StatusUnauthorized {
			t.Fatalf("long-poll after revocation: %d %s %v", r.status, r.body, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the long-poll did not end within 5s of the revocation")
	}
	ev, err := stream.waitEnd(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ev, `"unauthenticated"`) {
		t.Fatalf("the stream's last event: %q", ev)
	}
	t.Logf("ended %s after the revocation", time.Since(start).Round(time.Millisecond))
	status, _, _ := as(t, tok, "GET", a.URL+"/v1/topics/logs/partitions/0/records", nil)
	if status != http.StatusUnauthorized {
		t.Fatalf("after revocation: %d", status)
	}

	// Losing the ACL ends a stream with 403.
	tok2, id2 := newKey(t, a, admin, uniq("reader2"), "consume:topic:logs")
	stream2 := openKeyStream(t, tok2, a.URL+"/v1/topics/logs/partitions/0/stream?offset=earliest")
	mustAs(t, http.StatusOK, admin, "PUT", a.URL+"/v1/keys/"+id2+"/acls", map[string]any{"allow": []string{"consume:topic:other"}})
	ev, err = stream2.waitEnd(5 * time.Second)
	if err != nil || !strings.Contains(ev, `"forbidden"`) {
		t.Fatalf("after the ACL change: %q %v", ev, err)
	}
}

// An expired key is refused as a revoked one is: 401 with a Bearer
// challenge, and its open stream and long-poll end when it expires.
func TestExpiredKeyEndsStreamsAndLongPolls(t *testing.T) {
	a, admin := secureAgent(t, agenttest.Options{})
	mustAs(t, http.StatusCreated, admin, "POST", a.URL+"/v1/topics", map[string]any{"name": "exp"})
	// Long enough to open a stream and a long-poll on a loaded machine.
	expires := time.Now().Add(6 * time.Second)
	var created agent.CreateKeyResponse
	b := mustAs(t, http.StatusCreated, admin, "POST", a.URL+"/v1/keys", map[string]any{"name": uniq("brief"),
		"allow": []string{"consume:topic:exp"}, "expires_at": expires})
	if err := json.Unmarshal(b, &created); err != nil {
		t.Fatal(err)
	}
	tok := created.Token
	records := a.URL + "/v1/topics/exp/partitions/0/records"
	mustAs(t, http.StatusOK, tok, "GET", records, nil)

	parked := fetchWaits(t, a)
	stream := openKeyStream(t, tok, a.URL+"/v1/topics/exp/partitions/0/stream?offset=earliest")
	type result struct {
		status int
		hdr    http.Header
		body   []byte
		err    error
	}
	poll := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("GET", records+"?offset=0&wait_ms=30000", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			poll <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		poll <- result{resp.StatusCode, resp.Header, b, err}
	}()
	waitUntil(t, func() bool { return fetchWaits(t, a) >= parked+2 })
	if time.Now().After(expires) {
		t.Fatal("the key expired before its stream and long-poll were open")
	}

	// Both end at the expiry, as at a revocation: within 5 s of it.
	select {
	case r := <-poll:
		if r.err != nil {
			t.Fatal(r.err)
		}
		wantProblem(t, r.status, r.hdr, r.body, http.StatusUnauthorized, problem.CodeUnauthenticated)
		if !strings.HasPrefix(r.hdr.Get("WWW-Authenticate"), "Bearer ") {
			t.Fatalf("long-poll ended without a challenge: %q", r.hdr.Get("WWW-Authenticate"))
		}
	case <-time.After(time.Until(expires) + 5*time.Second):
		t.Fatal("the long-poll did not end within 5s of the key's expiry")
	}
	ev, err := stream.waitEnd(time.Until(expires) + 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ev, `"unauthenticated"`) {
		t.Fatalf("the stream's last event: %q", ev)
	}

	// Any request now: 401, the challenge naming an invalid token, and why.
	status, hdr, body := as(t, tok, "GET", records, nil)
	p := wantProblem(t, status, hdr, body, http.StatusUnauthorized, problem.CodeUnauthenticated)
	if ch := hdr.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "Bearer ") || !strings.Contains(ch, `error="invalid_token"`) {
		t.Fatalf("WWW-Authenticate %q", ch)
	}
	if !strings.Contains(p.Detail, "expired") {
		t.Fatalf("detail %q does not say the key expired", p.Detail)
	}
}

type sseStream struct {
	lines chan string
	done  chan error
}

// openKeyStream opens an SSE stream with a key and reads it in the background.
func openKeyStream(t *testing.T, token, url string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	s := &sseStream{lines: make(chan string, 1024), done: make(chan error, 1)}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		s.done <- sc.Err()
	}()
	return s
}

// waitEnd waits for the stream to end and returns its last data line.
func (s *sseStream) waitEnd(limit time.Duration) (string, error) {
	deadline := time.After(limit)
	last := ""
	for {
		select {
		case l := <-s.lines:
			if strings.HasPrefix(l, "data:") {
				last = l
			}
		case err := <-s.done:
			for {
				select {
				case l := <-s.lines:
					if strings.HasPrefix(l, "data:") {
						last = l
					}
				default:
					return last, err
				}
			}
		case <-deadline:
			return last, errors.New("the stream did not end in time")
		}
	}
}

// Over a quota, a key gets 429 with Retry-After; others are not slowed.
func TestQuotas(t *testing.T) {
	a, admin := secureAgent(t, agenttest.Options{})
	mustAs(t, http.StatusCreated, admin, "POST", a.URL+"/v1/topics", map[string]any{"name": "q"})
	var created agent.CreateKeyResponse
	b := mustAs(t, http.StatusCreated, admin, "POST", a.URL+"/v1/keys", map[string]any{"name": uniq("slow"),
		"allow": []string{"produce,consume:topic:q"}, "quota": map[string]any{"requests_per_sec": 2, "produce_bytes_per_sec": 1000}})
	if err := json.Unmarshal(b, &created); err != nil {
		t.Fatal(err)
	}
	tok := created.Token
	big := strings.Repeat("x", 5000)
	// The first request fits the burst and puts the key in debt.
	mustAs(t, http.StatusOK, tok, "POST", a.URL+"/v1/topics/q/records", map[string]any{"records": []map[string]any{{"value": big}}})
	status, hdr, body := as(t, tok, "POST", a.URL+"/v1/topics/q/records", map[string]any{"records": []map[string]any{{"value": "y"}}})
	p := wantProblem(t, status, hdr, body, http.StatusTooManyRequests, problem.CodeQuotaExceeded)
	if ra, _ := strconv.Atoi(hdr.Get("Retry-After")); ra < 2 || !strings.Contains(p.Detail, "produce") {
		t.Fatalf("Retry-After %q, detail %q", hdr.Get("Retry-After"), p.Detail)
	}
	// The request quota: 2/s with a burst of 2.
	limited := 0
	for range 5 {
		if status, _, _ := as(t, tok, "GET", a.URL+"/v1/topics/q/partitions/0/offsets", nil); status == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited == 0 {
		t.Fatal("5 requests at once passed a quota of 2/s")
	}
	// The admin has no quota.
	for range 5 {
		mustAs(t, http.StatusOK, admin, "GET", a.URL+"/v1/topics/q/partitions/0/offsets", nil)
	}
}

// Admin mutations are audited; only admins read the log.
func TestAuditLog(t *testing.T) {
	a, admin := secureAgent(t, agenttest.Options{})
	ops, opsID := newKey(t, a, admin, uniq("ops"), "create,alter,delete:topic:aud-*", "consume,delete:group:aud-*", "consume:topic:*")
	mustAs(t, http.StatusCreated, ops, "POST", a.URL+"/v1/topics", map[string]any{"name": "aud-t"})
	mustAs(t, http.StatusOK, ops, "PATCH", a.URL+"/v1/topics/aud-t", map[string]any{"partitions": 2})
	mustAs(t, http.StatusNoContent, ops, "POST", a.URL+"/v1/groups/aud-g/offsets", map[string]any{"offsets": []map[string]any{{"topic": "aud-t", "partition": 0, "offset": 0}}})
	mustAs(t, http.StatusNoContent, ops, "DELETE", a.URL+"/v1/groups/aud-g", nil)
	mustAs(t, http.StatusNoContent, ops, "DELETE", a.URL+"/v1/topics/aud-t", nil)
	mustAs(t, http.StatusOK, admin, "PUT", a.URL+"/v1/keys/"+opsID+"/acls", map[string]any{"allow": []string{"describe:topic:x"}})
	mustAs(t, http.StatusOK, admin, "DELETE", a.URL+"/v1/keys/"+opsID, nil)
	// Refused and failed mutations are not audited.
	as(t, ops, "DELETE", a.URL+"/v1/topics/aud-gone", nil)

	status, hdr, b := as(t, ops, "GET", a.URL+"/v1/audit", nil)
	if status != http.StatusUnauthorized {
		wantProblem(t, status, hdr, b, http.StatusForbidden, problem.CodeForbidden)
	}
	var log struct {
		Entries []auth.AuditEntry `json:"entries"`
	}
	if err := json.Unmarshal(mustAs(t, 200, admin, "GET", a.URL+"/v1/audit?limit=50", nil), &log); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := len(log.Entries) - 1; i >= 0; i-- {
		e := log.Entries[i]
		got = append(got, e.Action+" "+e.ResourceName)
		if e.Source == "" || e.AgentID == "" || e.KeyName == "" {
			t.Errorf("entry without who or where: %+v", e)
		}
		if strings.Contains(string(e.Details), "silt_") {
			t.Errorf("a secret in the audit log: %s", e.Details)
		}
	}
	// The keys created by newKey come first (by the admin).
	want := []string{"topic.create aud-t", "topic.alter aud-t", "group.offsets.reset aud-g", "group.delete aud-g",
		"topic.delete aud-t", "key.acls " + opsID, "key.revoke " + opsID}
	if len(got) < len(want) || strings.Join(got[len(got)-len(want):], "|") != strings.Join(want, "|") {
		t.Fatalf("audit log %q, want it to end with %q", got, want)
	}
	if !strings.HasPrefix(got[0], "key.create ") {
		t.Fatalf("the key creation is not audited: %q", got)
	}
}

// /v1/whoami names the key; /v1/cluster shows the mode.
func TestWhoAmIAndMode(t *testing.T) {
	a, admin := secureAgent(t, agenttest.Options{})
	name := uniq("me")
	tok, id := newKey(t, a, admin, name, "consume:topic:logs-*")
	var w agent.WhoAmIResponse
	if err := json.Unmarshal(mustAs(t, 200, tok, "GET", a.URL+"/v1/whoami", nil), &w); err != nil {
		t.Fatal(err)
	}
	if w.Name != name || w.KeyID != id || w.Admin || len(w.ACLs) != 1 || w.ACLs[0].String() != "consume:topic:logs-*" || w.Auth != "required" {
		t.Fatalf("whoami %+v", w)
	}
	var cl agent.ClusterJSON
	if err := json.Unmarshal(mustAs(t, 200, admin, "GET", a.URL+"/v1/cluster", nil), &cl); err != nil || cl.Auth != "required" {
		t.Fatalf("cluster %+v %v", cl, err)
	}
	anon := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) { c.HTTP.Auth = agent.AuthNone }})
	if err := json.Unmarshal(mustAs(t, 200, "", "GET", anon.URL+"/v1/cluster", nil), &cl); err != nil || cl.Auth != "none" {
		t.Fatalf("cluster %+v %v", cl, err)
	}
}

// fetchWaits is how many fetches parked waiting for a commit.
func fetchWaits(t *testing.T, a *agenttest.Agent) float64 {
	t.Helper()
	fams, err := a.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "silt_fetch_waits_total" {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
