package agent

import (
	"encoding/json"
	"strings"

	"github.com/labstack/echo/v4"

	"silt/auth"
)

// The one table of access decisions: every route the server registers has
// a rule here, keyed "METHOD path" with echo's path pattern. The guard
// middleware (guard.go) applies it before any handler runs; a registered
// route without a rule is refused (and TestEveryRouteHasAnAccessRule, which
// tries every route of the router, fails).

// accessKind is how much a route asks of the caller.
type accessKind int

const (
	// accessACL: an authenticated key whose ACLs allow every need.
	accessACL accessKind = iota
	// accessOpen: anyone (health, readiness, metrics).
	accessOpen
	// accessAuthenticated: any valid key (whoami, the API description,
	// lists that show only what the key may describe).
	accessAuthenticated
	// accessAdmin: admin keys only.
	accessAdmin
)

// need is one permission a request needs: an operation on a resource
// named by a path parameter, by a field of the JSON body, or the cluster.
type need struct {
	op    auth.Operation
	rt    auth.ResourceType
	param string // the path parameter that names the resource
	// body names the resources from the request's JSON body.
	body func(b bodyFields) []string
	// any: the operation on any resource of the type will do.
	any bool
}

// quotaKind says which byte quota a route's traffic counts against.
type quotaKind int

const (
	quotaNone    quotaKind = iota
	quotaProduce           // the request body
	quotaFetch             // the response body
)

// rule is a route's access decision and what the guard does around it.
type rule struct {
	kind  accessKind
	needs []need
	// long marks requests that may last (long-polls, streams): they end
	// when the key is revoked or loses a need.
	long  bool
	quota quotaKind
	// audit is the action recorded after a 2xx answer; auditIf, when set,
	// decides from the body whether this request is one.
	audit   string
	auditIf func(b bodyFields) bool
	// auditType and auditName name the resource audited: the first need's,
	// unless the handler names it (setAudit).
	auditType auth.ResourceType
}

// bodyFields is a JSON object body's top-level fields; nil when the body
// is not a JSON object (the handler then refuses it).
type bodyFields map[string]json.RawMessage

func (b bodyFields) str(name string) string {
	var s string
	if raw, ok := b[name]; ok && json.Unmarshal(raw, &s) == nil {
		return s
	}
	return ""
}

func (b bodyFields) strs(name string) []string {
	var s []string
	if raw, ok := b[name]; ok && json.Unmarshal(raw, &s) == nil {
		return s
	}
	return nil
}

// offsetTopics is the topics of a commit body's offsets.
func (b bodyFields) offsetTopics() []string {
	var offs []struct {
		Topic string `json:"topic"`
	}
	raw, ok := b["offsets"]
	if !ok || json.Unmarshal(raw, &offs) != nil {
		return nil
	}
	out := make([]string, 0, len(offs))
	for _, o := range offs {
		out = append(out, o.Topic)
	}
	return out
}

func onParam(op auth.Operation, rt auth.ResourceType, param string) need {
	return need{op: op, rt: rt, param: param}
}

func onCluster(op auth.Operation) need { return need{op: op, rt: auth.ResourceCluster} }

const (
	topic   = auth.ResourceTopic
	group   = auth.ResourceGroup
	cluster = auth.ResourceCluster
)

var (
	open          = rule{kind: accessOpen}
	authenticated = rule{kind: accessAuthenticated}
	adminOnly     = rule{kind: accessAdmin}
)

// accessRules is the table. Kafka is the reference: producing is Write
// (produce) on the topic, fetching Read (consume), listing offsets
// Describe; a group is Read (consume) to join, heartbeat, leave, fetch and
// commit, with Read on the topics subscribed or committed; creating a
// topic is Create on it or on the cluster.
var accessRules = map[string]rule{
	"GET /healthz": open,
	"GET /readyz":  open,
	"GET /metrics": open,

	"GET /debug/pprof/*":       adminOnly,
	"GET /debug/pprof/profile": adminOnly,
	"GET /debug/pprof/trace":   adminOnly,
	"GET /debug/pprof/symbol":  adminOnly,

	"GET /v1/openapi.json": authenticated,
	"GET /v1/whoami":       authenticated,
	"GET /v1/cluster":      {needs: []need{onCluster(auth.OpDescribe)}},
	"GET /v1/stats":        {needs: []need{onCluster(auth.OpDescribe)}},

	// The web console's static files: the page asks for a key and sends
	// it on its /v1 calls.
	"GET /ui":   open,
	"GET /ui/*": open,

	// Topics.
	"POST /v1/topics": {needs: []need{{op: auth.OpCreate, rt: topic, body: func(b bodyFields) []string { return []string{b.str("name")} }}},
		audit: auth.ActionTopicCreate},
	"GET /v1/topics":           authenticated, // filtered: what the key may describe
	"GET /v1/topics/:topic":    {needs: []need{onParam(auth.OpDescribe, topic, "topic")}},
	"PATCH /v1/topics/:topic":  {needs: []need{onParam(auth.OpAlter, topic, "topic")}, audit: auth.ActionTopicAlter},
	"DELETE /v1/topics/:topic": {needs: []need{onParam(auth.OpDelete, topic, "topic")}, audit: auth.ActionTopicDelete},
	// An idempotent producer id is for producing: the key must be allowed
	// to produce to some topic (Kafka: IdempotentWrite, or Write on any
	// topic). The id is bound to the key.
	"POST /v1/producers": {needs: []need{{op: auth.OpProduce, rt: topic, any: true}}},

	// Records.
	"POST /v1/topics/:topic/records":                       {needs: []need{onParam(auth.OpProduce, topic, "topic")}, quota: quotaProduce},
	"POST /v1/topics/:topic/partitions/:partition/records": {needs: []need{onParam(auth.OpProduce, topic, "topic")}, quota: quotaProduce},
	"GET /v1/topics/:topic/partitions/:partition/records":  {needs: []need{onParam(auth.OpConsume, topic, "topic")}, long: true, quota: quotaFetch},
	"GET /v1/topics/:topic/partitions/:partition/stream":   {needs: []need{onParam(auth.OpConsume, topic, "topic")}, long: true, quota: quotaFetch},
	"GET /v1/topics/:topic/partitions/:partition/offsets":  {needs: []need{onParam(auth.OpDescribe, topic, "topic")}},

	// Consumer groups.
	"GET /v1/groups":           authenticated, // filtered: what the key may describe
	"GET /v1/groups/:group":    {needs: []need{onParam(auth.OpDescribe, group, "group")}},
	"DELETE /v1/groups/:group": {needs: []need{onParam(auth.OpDelete, group, "group")}, audit: auth.ActionGroupDelete},
	"POST /v1/groups/:group/members": {needs: []need{onParam(auth.OpConsume, group, "group"),
		{op: auth.OpConsume, rt: topic, body: func(b bodyFields) []string { return b.strs("topics") }}}},
	"POST /v1/groups/:group/members/:member/heartbeat": {needs: []need{onParam(auth.OpConsume, group, "group")}},
	"DELETE /v1/groups/:group/members/:member":         {needs: []need{onParam(auth.OpConsume, group, "group")}},
	// The member's topics were checked when it joined.
	"GET /v1/groups/:group/members/:member/records": {needs: []need{onParam(auth.OpConsume, group, "group")}, long: true, quota: quotaFetch},
	// A commit without a member id, on a group without members, sets the
	// group's offsets: an offset reset, audited.
	"POST /v1/groups/:group/offsets": {needs: []need{onParam(auth.OpConsume, group, "group"),
		{op: auth.OpConsume, rt: topic, body: func(b bodyFields) []string { return b.offsetTopics() }}},
		audit: auth.ActionOffsetReset, auditIf: func(b bodyFields) bool { return b.str("member_id") == "" }},
	"GET /v1/groups/:group/offsets":     {needs: []need{onParam(auth.OpDescribe, group, "group")}},
	"GET /v1/groups/:group/lag-history": {needs: []need{onParam(auth.OpDescribe, group, "group")}},

	// Keys and the audit log.
	"POST /v1/keys":          {kind: accessAdmin, audit: auth.ActionKeyCreate, auditType: auth.AuditKey},
	"GET /v1/keys":           adminOnly,
	"GET /v1/keys/:key":      adminOnly,
	"DELETE /v1/keys/:key":   {kind: accessAdmin, audit: auth.ActionKeyRevoke, auditType: auth.AuditKey},
	"PUT /v1/keys/:key/acls": {kind: accessAdmin, audit: auth.ActionACLChange, auditType: auth.AuditKey},
	"GET /v1/audit":          adminOnly,
}

// accessIndex is accessRules by method, then path: looked up on every
// request without building a key.
var accessIndex = func() map[string]map[string]rule {
	out := map[string]map[string]rule{}
	for route, r := range accessRules {
		method, path, _ := strings.Cut(route, " ")
		if out[method] == nil {
			out[method] = map[string]rule{}
		}
		out[method][path] = r
	}
	return out
}()

// ruleFor returns the rule of the route c matched.
func ruleFor(c echo.Context) (rule, bool) {
	r, ok := accessIndex[c.Request().Method][c.Path()]
	return r, ok
}
