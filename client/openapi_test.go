package client_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
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
	}
	paths := doc["paths"].(map[string]any)
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
			checkOperation(t, doc, path, m, item[m].(map[string]any))
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
	for _, mt := range []string{"application/json", "application/x-ndjson", "application/vnd.silt.records.v1"} {
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

// codeConstants returns the string values of the constants of type Code
// declared in a Go file.
func codeConstants(t *testing.T, file string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || vs.Type == nil || len(vs.Values) != 1 {
			return true
		}
		if id, ok := vs.Type.(*ast.Ident); ok && id.Name == "Code" {
			if lit, ok := vs.Values[0].(*ast.BasicLit); ok {
				s, _ := strconv.Unquote(lit.Value)
				out = append(out, s)
			}
		}
		return true
	})
	slices.Sort(out)
	return out
}

func TestErrorCodesAgree(t *testing.T) {
	agentCodes := codeConstants(t, filepath.Join("..", "agent", "problem.go"))
	clientCodes := codeConstants(t, "errors.go")
	if len(agentCodes) < 20 {
		t.Fatalf("found only %d codes in agent/problem.go", len(agentCodes))
	}
	if !slices.Equal(agentCodes, clientCodes) {
		t.Errorf("client codes %v\nagent codes %v", clientCodes, agentCodes)
	}
	enum, _ := lookup(loadOpenAPI(t), "#/components/schemas/Problem/properties/code/enum")
	var doc []string
	for _, c := range enum.([]any) {
		doc = append(doc, c.(string))
	}
	slices.Sort(doc)
	if !slices.Equal(agentCodes, doc) {
		t.Errorf("openapi codes %v\nagent codes %v", doc, agentCodes)
	}
}
