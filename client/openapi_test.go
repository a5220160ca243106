package client_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"silt/client"
)

// The agent serves agent/openapi.json; it must describe the API the
// client speaks.

func loadOpenAPI(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "agent", "openapi.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("agent/openapi.json is not valid JSON: %v", err)
	}
	return doc
}

// lookup follows a JSON pointer such as #/components/schemas/Problem.
func lookup(doc map[string]any, pointer string) (any, bool) {
	var cur any = doc
	for _, part := range strings.Split(strings.TrimPrefix(pointer, "#/"), "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// walk calls fn for every object in v, with its JSON pointer.
func walk(v any, at string, fn func(at string, m map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		fn(at, v)
		for k, c := range v {
			walk(c, at+"/"+k, fn)
		}
	case []any:
		for i, c := range v {
			walk(c, at+"/"+strconv.Itoa(i), fn)
		}
	}
}

func TestOpenAPIDocument(t *testing.T) {
	doc := loadOpenAPI(t)
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.0.") {
		t.Fatalf("openapi version %q", v)
	}
	walk(doc, "#", func(at string, m map[string]any) {
		if ref, ok := m["$ref"].(string); ok {
			if _, found := lookup(doc, ref); !strings.HasPrefix(ref, "#/") || !found {
				t.Errorf("%s: $ref %q does not resolve", at, ref)
			}
		}
	})

	want := map[string][]string{
		"/healthz":                   {"get"},
		"/readyz":                    {"get"},
		"/metrics":                   {"get"},
		"/v1/openapi.json":           {"get"},
		"/v1/topics":                 {"get", "post"},
		"/v1/topics/{topic}":         {"delete", "get", "patch"},
		"/v1/producers":              {"post"},
		"/v1/topics/{topic}/records": {"post"},
		"/v1/topics/{topic}/partitions/{partition}/records": {"get", "post"},
		"/v1/topics/{topic}/partitions/{partition}/stream":  {"get"},
		"/v1/topics/{topic}/partitions/{partition}/offsets": {"get"},
		"/v1/cluster":                         {"get"},
		"/v1/stats":                           {"get"},
		"/v1/groups":                          {"get"},
		"/v1/groups/{group}":                  {"delete", "get"},
		"/v1/groups/{group}/members":          {"post"},
		"/v1/groups/{group}/members/{member}": {"delete"},
		"/v1/groups/{group}/members/{member}/heartbeat": {"post"},
		"/v1/groups/{group}/members/{member}/records":   {"get"},
		"/v1/groups/{group}/offsets":                    {"get", "post"},
		"/v1/groups/{group}/lag-history":                {"get"},
		"/v1/whoami":                                    {"get"},
		"/v1/keys":                                      {"get", "post"},
		"/v1/keys/{key}":                                {"delete", "get"},
		"/v1/keys/{key}/acls":                           {"put"},
		"/v1/audit":                                     {"get"},
	}
	paths := doc["paths"].(map[string]any)
	opIDs := map[string]string{}
	if len(paths) != len(want) {
		t.Errorf("%d paths, want %d", len(paths), len(want))
	}
	for path, methods := range want {
		item, ok := paths[path].(map[string]any)
		if !ok {
			t.Errorf("path %s is missing", path)
			continue
		}
		var got []string
		for k := range item {
			if k != "parameters" {
				got = append(got, k)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, methods) {
			t.Errorf("%s: methods %v, want %v", path, got, methods)
		}
		for _, m := range methods {
			op := item[m].(map[string]any)
			checkOperation(t, doc, path, m, op)
			checkPathParams(t, doc, path, m, item, op)
			if id, _ := op["operationId"].(string); id != "" {
				if prev, dup := opIDs[id]; dup {
					t.Errorf("operationId %s is used by %s and %s %s", id, prev, m, path)
				}
				opIDs[id] = m + " " + path
			}
		}
	}

	// The three produce bodies, the fetch formats, SSE and the 416 body.
	for _, p := range []string{"/v1/topics/{topic}/records", "/v1/topics/{topic}/partitions/{partition}/records"} {
		content := paths[p].(map[string]any)["post"].(map[string]any)["requestBody"].(map[string]any)["content"].(map[string]any)
		for _, mt := range []string{"application/json", "application/x-ndjson", "application/vnd.silt.records.v1"} {
			if _, ok := content[mt]; !ok {
				t.Errorf("POST %s lacks the %s body", p, mt)
			}
		}
	}
	fetch := paths["/v1/topics/{topic}/partitions/{partition}/records"].(map[string]any)["get"].(map[string]any)["responses"].(map[string]any)
	for _, mt := range []string{"application/json", "application/x-ndjson", "application/vnd.silt.records.v1", "application/vnd.silt.batches.v1"} {
		if _, ok := fetch["200"].(map[string]any)["content"].(map[string]any)[mt]; !ok {
			t.Errorf("fetch lacks the %s response", mt)
		}
	}
	stream := paths["/v1/topics/{topic}/partitions/{partition}/stream"].(map[string]any)["get"].(map[string]any)["responses"].(map[string]any)
	if _, ok := stream["200"].(map[string]any)["content"].(map[string]any)["text/event-stream"]; !ok {
		t.Error("stream lacks text/event-stream")
	}
	for _, r := range []map[string]any{fetch, stream} {
		if ref, _ := r["416"].(map[string]any)["$ref"].(string); ref != "#/components/responses/OffsetOutOfRange" {
			t.Errorf("416 is %v", r["416"])
		}
	}
	oor, _ := lookup(doc, "#/components/schemas/OffsetOutOfRangeProblem")
	if b, _ := json.Marshal(oor); !strings.Contains(string(b), "log_start_offset") || !strings.Contains(string(b), "high_watermark") {
		t.Errorf("the 416 problem lacks the offsets: %s", b)
	}
}

// checkOperation: an id, a 2xx answer, and problem+json for every error.
func checkOperation(t *testing.T, doc map[string]any, path, method string, op map[string]any) {
	t.Helper()
	if id, _ := op["operationId"].(string); id == "" {
		t.Errorf("%s %s has no operationId", method, path)
	}
	responses := op["responses"].(map[string]any)
	ok := false
	for status, r := range responses {
		if strings.HasPrefix(status, "2") {
			ok = true
			continue
		}
		resp := r.(map[string]any)
		if ref, isRef := resp["$ref"].(string); isRef {
			v, _ := lookup(doc, ref)
			resp = v.(map[string]any)
		}
		content, _ := resp["content"].(map[string]any)
		if _, has := content["application/problem+json"]; !has || len(content) != 1 {
			t.Errorf("%s %s: %s is not application/problem+json", method, path, status)
		}
		if status == "429" || status == "503" {
			if _, has := resp["headers"].(map[string]any)["Retry-After"]; !has {
				t.Errorf("%s %s: %s lacks Retry-After", method, path, status)
			}
		}
	}
	if !ok {
		t.Errorf("%s %s has no 2xx response", method, path)
	}
}

// checkPathParams: every {name} of the path is declared as a required
// path parameter, at the path or the operation.
func checkPathParams(t *testing.T, doc map[string]any, path, method string, item, op map[string]any) {
	t.Helper()
	declared := map[string]bool{}
	for _, list := range []any{item["parameters"], op["parameters"]} {
		params, _ := list.([]any)
		for _, p := range params {
			pm := resolve(doc, p)
			if pm["in"] == "path" {
				if req, _ := pm["required"].(bool); !req {
					t.Errorf("%s %s: path parameter %v is not required", method, path, pm["name"])
				}
				declared[pm["name"].(string)] = true
			}
		}
	}
	for rest := path; strings.Contains(rest, "{"); {
		i, j := strings.Index(rest, "{"), strings.Index(rest, "}")
		if name := rest[i+1 : j]; !declared[name] {
			t.Errorf("%s %s: path parameter {%s} is not declared", method, path, name)
		}
		rest = rest[j+1:]
	}
}

// resolve follows a $ref, if v is one.
func resolve(doc map[string]any, v any) map[string]any {
	m, _ := v.(map[string]any)
	if ref, ok := m["$ref"].(string); ok {
		r, _ := lookup(doc, ref)
		m, _ = r.(map[string]any)
	}
	return m
}

// listedCodes returns the codes a response description lists after
// "Codes:".
func listedCodes(desc string) []string {
	_, list, ok := strings.Cut(desc, "Codes:")
	if !ok {
		return nil
	}
	var out []string
	for {
		_, rest, ok := strings.Cut(list, "`")
		if !ok {
			return out
		}
		code, rest, ok := strings.Cut(rest, "`")
		if !ok {
			return out
		}
		out = append(out, code)
		list = rest
	}
}

// operationCodes returns, per status, the codes an operation's error
// responses list.
func operationCodes(doc map[string]any, op map[string]any) map[string][]string {
	out := map[string][]string{}
	for status, r := range op["responses"].(map[string]any) {
		desc, _ := resolve(doc, r)["description"].(string)
		out[status] = listedCodes(desc)
	}
	return out
}

// Every code of the enum is documented on some response (or, for the
// router's codes, in the API description), and every listed code exists.
func TestOpenAPICodesDocumented(t *testing.T) {
	doc := loadOpenAPI(t)
	enum, _ := lookup(doc, "#/components/schemas/Problem/properties/code/enum")
	known := map[string]bool{}
	for _, c := range enum.([]any) {
		known[c.(string)] = true
	}
	used := map[string]bool{}
	for path, item := range doc["paths"].(map[string]any) {
		for method, op := range item.(map[string]any) {
			if method == "parameters" {
				continue
			}
			for status, codes := range operationCodes(doc, op.(map[string]any)) {
				if !strings.HasPrefix(status, "2") && len(codes) == 0 {
					t.Errorf("%s %s: %s lists no codes", method, path, status)
				}
				for _, c := range codes {
					if !known[c] {
						t.Errorf("%s %s: %s lists unknown code %q", method, path, status, c)
					}
					used[c] = true
				}
			}
		}
	}
	info, _ := lookup(doc, "#/info/description")
	for c := range known {
		if !used[c] && !strings.Contains(info.(string), "`"+c+"`") {
			t.Errorf("code %s is documented nowhere", c)
		}
	}
}

// The consumer group and cluster routes answer with the codes of
// the agent's error mapping (agent/errors.go).
func TestOpenAPIGroupRoutes(t *testing.T) {
	doc := loadOpenAPI(t)
	body := map[string][]string{"413": {"request_too_large"}, "415": {"unsupported_media_type"}}
	common := map[string][]string{"503": {"unavailable", "shutting_down"}, "500": {"internal"},
		"401": {"unauthenticated"}, "403": {"forbidden"}, "429": {"quota_exceeded"}}
	want := map[string]map[string][]string{
		"get /v1/cluster": {"400": {"invalid_parameter"}},
		"get /v1/groups":  {"400": {"invalid_parameter"}},
		"get /v1/groups/{group}": {
			"400": {"invalid_group_name"}, "404": {"group_not_found"},
		},
		"delete /v1/groups/{group}": {
			"400": {"invalid_group_name"}, "404": {"group_not_found"}, "409": {"group_not_empty"},
		},
		"post /v1/groups/{group}/members": {
			"400": {"invalid_json", "invalid_group_name", "invalid_parameter"},
			"404": {"topic_not_found", "member_not_found"},
			"409": {"group_full", "inconsistent_group_protocol"},
			"413": nil, "415": nil,
		},
		"delete /v1/groups/{group}/members/{member}": {
			"400": {"invalid_group_name", "invalid_parameter"}, "404": {"member_not_found"},
		},
		"post /v1/groups/{group}/members/{member}/heartbeat": {
			"400": {"invalid_json", "invalid_parameter", "invalid_group_name"},
			"404": {"member_not_found"},
			"413": nil, "415": nil,
		},
		"get /v1/groups/{group}/members/{member}/records": {
			"400": {"invalid_parameter", "invalid_group_name"},
			"404": {"member_not_found", "partition_not_found"},
			"409": {"stale_generation", "inconsistent_group_protocol"},
			"429": {"backpressure"},
		},
		"post /v1/groups/{group}/offsets": {
			"400": {"invalid_json", "invalid_group_name", "invalid_topic_name", "invalid_parameter", "invalid_offset"},
			"404": {"member_not_found", "topic_not_found", "partition_not_found"},
			"409": {"stale_generation", "not_assigned", "group_not_empty", "topic_id_mismatch", "inconsistent_group_protocol"},
			"413": nil, "415": nil,
		},
		"get /v1/groups/{group}/offsets": {
			"400": {"invalid_group_name"}, "404": {"group_not_found"},
		},
	}
	for key, statuses := range want {
		method, path, _ := strings.Cut(key, " ")
		if key == "get /v1/groups" {
			// Any key may list; the list shows what it may describe.
			statuses = map[string][]string{"400": {"invalid_parameter"}, "403": {}}
		}
		op, ok := lookup(doc, "#/paths/"+strings.ReplaceAll(path, "/", "~1")+"/"+method)
		if !ok {
			t.Errorf("%s is not documented", key)
			continue
		}
		expect := map[string][]string{}
		for status, codes := range common {
			expect[status] = codes
		}
		for status, codes := range statuses {
			if codes == nil {
				codes = body[status]
			}
			if len(codes) == 0 && status == "403" {
				delete(expect, status)
				continue
			}
			expect[status] = codes
		}
		got := operationCodes(doc, op.(map[string]any))
		for status := range got {
			if _, ok := expect[status]; !ok && !strings.HasPrefix(status, "2") {
				t.Errorf("%s: unexpected %s response", key, status)
			}
		}
		for status, codes := range expect {
			g, ok := got[status]
			if !ok {
				t.Errorf("%s: no %s response", key, status)
				continue
			}
			slices.Sort(g)
			w := slices.Sorted(slices.Values(codes))
			if !slices.Equal(g, w) {
				t.Errorf("%s: %s codes %v, want %v", key, status, g, w)
			}
		}
	}
}

// The JSON fields of the client's group and cluster types are in the
// document's schemas.
func TestOpenAPIClientFields(t *testing.T) {
	doc := loadOpenAPI(t)
	props := func(name string) map[string]bool {
		out := map[string]bool{}
		s := resolve(doc, map[string]any{"$ref": "#/components/schemas/" + name})
		parts := []any{s}
		if all, ok := s["allOf"].([]any); ok {
			parts = all
		}
		for _, p := range parts {
			pm, _ := resolve(doc, p)["properties"].(map[string]any)
			for k := range pm {
				out[k] = true
			}
		}
		if len(out) == 0 {
			t.Errorf("schema %s has no properties", name)
		}
		return out
	}
	for schema, v := range map[string]any{
		"Assignment":        client.GroupAssignment{},
		"HeartbeatResponse": client.HeartbeatResult{},
		"OffsetCommit":      client.OffsetCommit{},
		"GroupOffset":       client.GroupOffset{},
		"GroupSummary":      client.GroupSummary{},
		"GroupPartition":    client.TopicPartition{},
	} {
		have := props(schema)
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			if name != "" && name != "-" && !have[name] {
				t.Errorf("client %s field %s is not in schema %s", rt.Name(), name, schema)
			}
		}
	}
	for schema, fields := range map[string][]string{
		"JoinGroupRequest":     {"topics", "session_timeout_ms", "member_id", "auto_offset_reset"},
		"JoinGroupResponse":    {"member_id", "generation", "assignments", "heartbeat_interval_ms", "session_timeout_ms"},
		"HeartbeatRequest":     {"generation"},
		"CommitOffsetsRequest": {"member_id", "generation", "offsets"},
		"GroupOffsets":         {"group", "offsets"},
		"GroupList":            {"groups"},
		"Group":                {"name", "state", "generation", "members"},
		"GroupMember":          {"member_id", "generation", "topics", "session_timeout_ms", "auto_offset_reset", "assignments", "joined_at", "last_heartbeat"},
		"GroupFetchResponse":   {"generation", "records", "positions"},
		"GroupRecord":          {"topic", "topic_id", "partition", "offset", "timestamp", "key", "key_b64", "value", "value_b64", "headers"},
		"Cluster":              {"agents"},
		"Agent":                {"id", "address", "version", "started_at", "heartbeat_at", "partitions"},
		"OwnedPartition":       {"topic", "partition", "epoch"},
	} {
		have := props(schema)
		for _, f := range fields {
			if !have[f] {
				t.Errorf("schema %s lacks %s", schema, f)
			}
		}
	}
}
