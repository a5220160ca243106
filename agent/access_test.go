package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"silt/agent"
	"silt/auth"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/problem"
)

// secureAgent starts an agent with --auth=required and a bootstrap admin
// key, which it returns.
func secureAgent(t *testing.T, opts agenttest.Options) (*agenttest.Agent, string) {
	t.Helper()
	admin, _, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	edit := opts.Configure
	opts.Configure = func(c *agentd.Config) {
		c.HTTP.Auth = agent.AuthRequired
		c.BootstrapAdminKey = admin
		if edit != nil {
			edit(c)
		}
	}
	return agenttest.Start(t, opts), admin
}

// as does a request with a key ("" for none).
func as(t *testing.T, token, method, url string, body any) (int, http.Header, []byte) {
	t.Helper()
	var b []byte
	ctype := ""
	switch v := body.(type) {
	case nil:
	case string:
		b, ctype = []byte(v), "application/json"
	default:
		b, ctype = jsonBody(t, v), "application/json"
	}
	if token == "" {
		return call(t, method, url, ctype, b)
	}
	return call(t, method, url, ctype, b, "Authorization", "Bearer "+token)
}

// mustAs is as, failing unless the status is want.
func mustAs(t *testing.T, want int, token, method, url string, body any) []byte {
	t.Helper()
	status, _, b := as(t, token, method, url, body)
	if status != want {
		t.Fatalf("%s %s: %d %s, want %d", method, url, status, b, want)
	}
	return b
}

// newKey creates a key through the API and returns its token and id.
func newKey(t *testing.T, a *agenttest.Agent, admin, name string, allow ...string) (string, string) {
	t.Helper()
	req := map[string]any{"name": name, "allow": allow}
	if len(allow) == 0 {
		req["admin"] = true
	}
	var resp agent.CreateKeyResponse
	if err := json.Unmarshal(mustAs(t, http.StatusCreated, admin, "POST", a.URL+"/v1/keys", req), &resp); err != nil {
		t.Fatal(err)
	}
	return resp.Token, resp.Key.ID
}

var keySeq atomic.Int64

// uniq is a fresh name.
func uniq(prefix string) string {
	return fmt.Sprintf("%s%d-%d", prefix, time.Now().UnixNano()%1e6, keySeq.Add(1))
}

// accessCase is how to exercise one route: the request its last attempt
// (with the needed ACL) makes, and that ACL.
type accessCase struct {
	// open routes answer everyone; authOnly routes any key (no 403 case).
	open, authOnly bool
	// admin routes need an admin key; grant lists the needed ACL entries
	// otherwise ({T}: the case's topic, {G}: its group).
	admin bool
	grant []string
	// without, when set, is the key without the needed ACL (default: every
	// operation on other resources).
	without []string
	// prepare creates what the request needs (with the admin key) and
	// returns the request's path and body.
	prepare func(t *testing.T, e *accessEnv) (path string, body any)
	want    int
	stream  bool // read only the head
}

// accessEnv is one route's world: a fresh topic with a record, a group.
type accessEnv struct {
	a            *agenttest.Agent
	admin        string
	topic, group string
}

func (e *accessEnv) url(path string) string { return e.a.URL + path }

// join makes the admin a member of the group and returns its id.
func (e *accessEnv) join(t *testing.T) string {
	t.Helper()
	var jr agent.JoinGroupResponse
	b := mustAs(t, http.StatusOK, e.admin, "POST", e.url("/v1/groups/"+e.group+"/members"), map[string]any{"topics": []string{e.topic}})
	if err := json.Unmarshal(b, &jr); err != nil {
		t.Fatal(err)
	}
	return jr.MemberID
}

// commitOffsets gives the group committed offsets, without members.
func (e *accessEnv) commitOffsets(t *testing.T) {
	t.Helper()
	mustAs(t, http.StatusNoContent, e.admin, "POST", e.url("/v1/groups/"+e.group+"/offsets"),
		map[string]any{"offsets": []map[string]any{{"topic": e.topic, "partition": 0, "offset": 0}}})
}

func fixed(path string, body any) func(*testing.T, *accessEnv) (string, any) {
	return func(_ *testing.T, e *accessEnv) (string, any) {
		return strings.NewReplacer("{T}", e.topic, "{G}", e.group).Replace(path), body
	}
}

// accessCases has one case per route of the router.
var accessCases = map[string]accessCase{
	"GET /healthz": {open: true, want: 200, prepare: fixed("/healthz", nil)},
	"GET /readyz":  {open: true, want: 200, prepare: fixed("/readyz", nil)},
	"GET /metrics": {open: true, want: 200, prepare: fixed("/metrics", nil)},

	"GET /v1/openapi.json": {authOnly: true, want: 200, prepare: fixed("/v1/openapi.json", nil)},
	"GET /v1/whoami":       {authOnly: true, want: 200, prepare: fixed("/v1/whoami", nil)},
	"GET /v1/topics":       {authOnly: true, want: 200, prepare: fixed("/v1/topics", nil)},
	"GET /v1/groups":       {authOnly: true, want: 200, prepare: fixed("/v1/groups", nil)},
	"GET /v1/cluster":      {grant: []string{"describe:cluster"}, want: 200, prepare: fixed("/v1/cluster", nil)},
	"GET /v1/stats":        {grant: []string{"describe:cluster"}, want: 200, prepare: fixed("/v1/stats", nil)},
	"GET /ui":              {open: true, want: 200, prepare: fixed("/ui", nil)}, // redirected to /ui/
	"GET /ui/*":            {open: true, want: 200, prepare: fixed("/ui/app.js", nil)},

	"POST /v1/topics": {grant: []string{"create:topic:{T}-new"}, want: 201, prepare: func(_ *testing.T, e *accessEnv) (string, any) {
		return "/v1/topics", map[string]any{"name": e.topic + "-new"}
	}},
	"GET /v1/topics/:topic":    {grant: []string{"describe:topic:{T}"}, want: 200, prepare: fixed("/v1/topics/{T}", nil)},
	"PATCH /v1/topics/:topic":  {grant: []string{"alter:topic:{T}"}, want: 200, prepare: fixed("/v1/topics/{T}", map[string]any{"config": map[string]any{"retention.ms": 60000}})},
	"DELETE /v1/topics/:topic": {grant: []string{"delete:topic:{T}"}, want: 204, prepare: fixed("/v1/topics/{T}", nil)},
	"POST /v1/producers": {grant: []string{"produce:topic:{T}"}, want: 201, prepare: fixed("/v1/producers", nil),
		without: []string{"consume,describe,create,alter,delete:topic:*"}},

	"POST /v1/topics/:topic/records": {grant: []string{"produce:topic:{T}"}, want: 200,
		prepare: fixed("/v1/topics/{T}/records", map[string]any{"records": []map[string]any{{"value": "x"}}})},
	"POST /v1/topics/:topic/partitions/:partition/records": {grant: []string{"produce:topic:{T}"}, want: 200,
		prepare: fixed("/v1/topics/{T}/partitions/0/records", map[string]any{"records": []map[string]any{{"value": "x"}}})},
	"GET /v1/topics/:topic/partitions/:partition/records": {grant: []string{"consume:topic:{T}"}, want: 200,
		prepare: fixed("/v1/topics/{T}/partitions/0/records?offset=0", nil)},
	"GET /v1/topics/:topic/partitions/:partition/stream": {grant: []string{"consume:topic:{T}"}, want: 200, stream: true,
		prepare: fixed("/v1/topics/{T}/partitions/0/stream?offset=earliest", nil)},
	"GET /v1/topics/:topic/partitions/:partition/offsets": {grant: []string{"describe:topic:{T}"}, want: 200,
		prepare: fixed("/v1/topics/{T}/partitions/0/offsets", nil)},

	"GET /v1/groups/:group": {grant: []string{"describe:group:{G}"}, want: 200, prepare: func(t *testing.T, e *accessEnv) (string, any) {
		e.commitOffsets(t)
		return "/v1/groups/" + e.group, nil
	}},
	"DELETE /v1/groups/:group": {grant: []string{"delete:group:{G}"}, want: 204, prepare: func(t *testing.T, e *accessEnv) (string, any) {
		e.commitOffsets(t)
		return "/v1/groups/" + e.group, nil
	}},
	"POST /v1/groups/:group/members": {grant: []string{"consume:group:{G}", "consume:topic:{T}"}, want: 200,
		prepare: fixed("/v1/groups/{G}/members", map[string]any{"topics": []string{"{T}"}})},
	"POST /v1/groups/:group/members/:member/heartbeat": {grant: []string{"consume:group:{G}"}, want: 200, prepare: func(t *testing.T, e *accessEnv) (string, any) {
		return "/v1/groups/" + e.group + "/members/" + e.join(t) + "/heartbeat", map[string]any{"generation": 1}
	}},
	"DELETE /v1/groups/:group/members/:member": {grant: []string{"consume:group:{G}"}, want: 204, prepare: func(t *testing.T, e *accessEnv) (string, any) {
		return "/v1/groups/" + e.group + "/members/" + e.join(t), nil
	}},
	"GET /v1/groups/:group/members/:member/records": {grant: []string{"consume:group:{G}"}, want: 200, prepare: func(t *testing.T, e *accessEnv) (string, any) {
		return "/v1/groups/" + e.group + "/members/" + e.join(t) + "/records", nil
	}},
	"POST /v1/groups/:group/offsets": {grant: []string{"consume:group:{G}", "consume:topic:{T}"}, want: 204,
		prepare: fixed("/v1/groups/{G}/offsets", map[string]any{"offsets": []map[string]any{{"topic": "{T}", "partition": 0, "offset": 1}}})},
	"GET /v1/groups/:group/offsets": {grant: []string{"describe:group:{G}"}, want: 200, prepare: func(t *testing.T, e *accessEnv) (string, any) {
		e.commitOffsets(t)
		return "/v1/groups/" + e.group + "/offsets", nil
	}},

	"GET /v1/groups/:group/lag-history": {grant: []string{"describe:group:{G}"}, want: 200, prepare: fixed("/v1/groups/{G}/lag-history", nil)},

	"POST /v1/keys": {admin: true, want: 201, prepare: func(_ *testing.T, e *accessEnv) (string, any) {
		return "/v1/keys", map[string]any{"name": e.topic + "-key", "allow": []string{"describe:topic:x"}}
	}},
	"GET /v1/keys": {admin: true, want: 200, prepare: fixed("/v1/keys", nil)},
	"GET /v1/keys/:key": {admin: true, want: 200, prepare: func(t *testing.T, e *accessEnv) (string, any) {
		_, id := newKey(t, e.a, e.admin, uniq("k"), "describe:topic:x")
		return "/v1/keys/" + id, nil
	}},
	"DELETE /v1/keys/:key": {admin: true, want: 200, prepare: func(t *testing.T, e *accessEnv) (string, any) {
		_, id := newKey(t, e.a, e.admin, uniq("k"), "describe:topic:x")
		return "/v1/keys/" + id, nil
	}},
	"PUT /v1/keys/:key/acls": {admin: true, want: 200, prepare: func(t *testing.T, e *accessEnv) (string, any) {
		_, id := newKey(t, e.a, e.admin, uniq("k"), "describe:topic:x")
		return "/v1/keys/" + id + "/acls", map[string]any{"allow": []string{"consume:topic:y"}}
	}},
	"GET /v1/audit": {admin: true, want: 200, prepare: fixed("/v1/audit", nil)},
}

// The matrix the issue asks for, generated from the router's own route
// list: every route, with no key, a malformed key, a revoked key, a key
// without the needed ACL and a key with it, answers 401, 401, 401, 403 and
// 2xx. A route without a case here (or without a rule in access.go)
// fails.
func TestEveryRouteHasAnAccessRule(t *testing.T) {
	a, admin := secureAgent(t, agenttest.Options{})
	routes := a.HTTP().Routes()
	if len(routes) < 30 {
		t.Fatalf("only %d routes", len(routes))
	}
	// A key with every operation, but on other resources (and, for admin
	// routes, on every resource): never the needed ACL.
	others, _ := newKey(t, a, admin, uniq("others"), "produce,consume,describe,create,alter,delete:topic:zz-other-*",
		"consume,describe,delete:group:zz-other-*")
	everything, _ := newKey(t, a, admin, uniq("everything"), "produce,consume,describe,create,alter,delete:topic:*",
		"consume,describe,delete:group:*", "create,describe,alter:cluster")
	for _, r := range routes {
		route := r.Method + " " + r.Path
		t.Run(strings.ReplaceAll(route, "/", "_"), func(t *testing.T) {
			c, ok := accessCases[route]
			if !ok {
				t.Fatalf("route %s has no case in TestEveryRouteHasAnAccessRule: add one, and its rule to agent/access.go", route)
			}
			e := &accessEnv{a: a, admin: admin, topic: uniq("t"), group: uniq("g")}
			mustAs(t, http.StatusCreated, admin, "POST", a.URL+"/v1/topics", map[string]any{"name": e.topic, "partitions": 1})
			mustAs(t, http.StatusOK, admin, "POST", a.URL+"/v1/topics/"+e.topic+"/records", map[string]any{"records": []map[string]any{{"value": "hello"}}})
			path, body := c.prepare(t, e)
			if b, ok := body.(map[string]any); ok {
				raw := strings.NewReplacer("{T}", e.topic, "{G}", e.group).Replace(string(jsonBody(t, b)))
				body = raw
			}
			expand := func(s string) string { return strings.NewReplacer("{T}", e.topic, "{G}", e.group).Replace(s) }
			try := func(token string) (int, http.Header, []byte) {
				t.Helper()
				if c.stream {
					return streamHead(t, token, a.URL+path)
				}
				return as(t, token, r.Method, a.URL+path, body)
			}
			if c.open {
				for _, tok := range []string{"", "silt_bogus", everything} {
					if status, _, b := try(tok); status != c.want {
						t.Fatalf("open route with key %.12q: %d %s", tok, status, b)
					}
				}
				return
			}
			var with, revoked string
			if c.admin {
				with, _ = newKey(t, a, admin, uniq("with"))
				revoked, _ = newKey(t, a, admin, uniq("revoked"))
			} else {
				grant := make([]string, len(c.grant))
				for i, g := range c.grant {
					grant[i] = expand(g)
				}
				if c.authOnly {
					grant = []string{"describe:topic:zz-nothing"}
				}
				with, _ = newKey(t, a, admin, uniq("with"), grant...)
				revoked, _ = newKey(t, a, admin, uniq("revoked"), grant...)
			}
			id, _ := auth.ParseToken(revoked)
			mustAs(t, http.StatusOK, admin, "DELETE", a.URL+"/v1/keys/"+id, nil)

			for name, tok := range map[string]string{"no key": "", "a malformed key": "silt_bogus", "a revoked key": revoked} {
				status, hdr, b := try(tok)
				if status != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
					t.Fatalf("%s: %d %s (WWW-Authenticate %q), want 401", name, status, b, hdr.Get("WWW-Authenticate"))
				}
				wantProblem(t, status, hdr, b, http.StatusUnauthorized, problem.CodeUnauthenticated)
			}
			if !c.authOnly {
				without := others
				switch {
				case c.admin:
					without = everything
				case c.without != nil:
					without, _ = newKey(t, a, admin, uniq("without"), c.without...)
				}
				status, hdr, b := try(without)
				p := wantProblem(t, status, hdr, b, http.StatusForbidden, problem.CodeForbidden)
				if !c.admin && !strings.Contains(p.Detail, "may not") {
					t.Fatalf("the 403 does not name the operation and resource: %q", p.Detail)
				}
			}
			if status, _, b := try(with); status != c.want {
				t.Fatalf("with the needed ACL %v: %d %s, want %d", c.grant, status, b, c.want)
			}
		})
	}
	// Every rule has a route: the table holds no dead entries (pprof
	// routes exist only with --pprof).
	seen := map[string]bool{}
	for _, r := range routes {
		seen[r.Method+" "+r.Path] = true
	}
	for route := range accessCases {
		if !seen[route] {
			t.Errorf("case %s has no route", route)
		}
	}
}

// streamHead opens an event stream and returns once its head arrived.
func streamHead(t *testing.T, token, url string) (int, http.Header, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b := make([]byte, 4096)
		n, _ := resp.Body.Read(b)
		return resp.StatusCode, resp.Header, b[:n]
	}
	return resp.StatusCode, resp.Header, nil
}
