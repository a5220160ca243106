package agent

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

// openAPIPaths returns the document's operations as "METHOD /path".
func openAPIPaths(t *testing.T) map[string]bool {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	out := map[string]bool{}
	for path, item := range doc.Paths {
		for key := range item {
			switch key {
			case "get", "put", "post", "delete", "options", "head", "patch", "trace":
				out[strings.ToUpper(key)+" "+path] = true
			case "parameters", "summary", "description", "servers":
			default:
				t.Errorf("path %s: unexpected key %q", path, key)
			}
		}
	}
	return out
}

// serverRoutes returns the routes the server registers, as
// "METHOD /path" with echo's :param written {param}.
func serverRoutes(t *testing.T, s *Server) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, r := range s.echo.Routes() {
		if r.Method == echo.RouteNotFound {
			continue // catch-alls of group middleware, not API routes
		}
		if r.Path == "/ui" || strings.HasPrefix(r.Path, "/ui/") {
			continue // the web console's files, not the API (docs/console.md)
		}
		parts := strings.Split(r.Path, "/")
		for i, p := range parts {
			if name, ok := strings.CutPrefix(p, ":"); ok {
				parts[i] = "{" + name + "}"
			}
		}
		out[r.Method+" "+strings.Join(parts, "/")] = true
	}
	return out
}

// openAPIServer builds a server with every optional route group on (but
// pprof) and collaborators that are never called.
func openAPIServer(t *testing.T) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Pprof = false
	cfg.Auth = AuthNone
	s, err := New(cfg, Deps{Groups: struct{ GroupCoordinator }{}, LagHistory: struct{ LagHistory }{}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// routeDiff returns the routes missing from the document and the
// documented operations without a route.
func routeDiff(routes, documented map[string]bool) (undocumented, unrouted []string) {
	for r := range routes {
		if !documented[r] {
			undocumented = append(undocumented, r)
		}
	}
	for op := range documented {
		if !routes[op] {
			unrouted = append(unrouted, op)
		}
	}
	slices.Sort(undocumented)
	slices.Sort(unrouted)
	return undocumented, unrouted
}

// Every route is documented and every documented operation is routed.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	routes := serverRoutes(t, openAPIServer(t))
	if len(routes) < 20 {
		t.Fatalf("found only %d routes: %v", len(routes), slices.Sorted(maps.Keys(routes)))
	}
	for r := range routes {
		if strings.Contains(r, "*") {
			t.Errorf("route %s has a wildcard; the document cannot describe it", r)
		}
	}
	undocumented, unrouted := routeDiff(routes, openAPIPaths(t))
	for _, r := range undocumented {
		t.Errorf("route %s is not in openapi.json", r)
	}
	for _, op := range unrouted {
		t.Errorf("openapi.json documents %s, which is not routed", op)
	}
}

// The check above notices a route added without documentation.
func TestOpenAPIMatchesRoutesCatchesNewRoute(t *testing.T) {
	s := openAPIServer(t)
	s.echo.POST("/v1/groups/:group/undocumented", func(echo.Context) error { return nil })
	undocumented, unrouted := routeDiff(serverRoutes(t, s), openAPIPaths(t))
	if !slices.Equal(undocumented, []string{"POST /v1/groups/{group}/undocumented"}) || len(unrouted) != 0 {
		t.Fatalf("undocumented %v, unrouted %v", undocumented, unrouted)
	}
}

// The served document is openapi.json itself.
func TestOpenAPIServed(t *testing.T) {
	s := openAPIServer(t)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/openapi.json", nil))
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("status %d, content type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if !slices.Equal(rec.Body.Bytes(), openAPI) {
		t.Fatal("the served document is not openapi.json")
	}
}

// The document's list of stable codes is package problem's Code constants.
func TestOpenAPICodes(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "problem", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok || len(vs.Values) != len(vs.Names) {
				return true
			}
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Code" {
				return true
			}
			for _, v := range vs.Values {
				lit, ok := v.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Errorf("%s: a problem.Code constant that is not a string literal", file)
					continue
				}
				c, _ := strconv.Unquote(lit.Value)
				codes = append(codes, c)
			}
			return true
		})
	}
	var doc struct {
		Components struct {
			Schemas struct {
				Problem struct {
					Properties struct {
						Code struct {
							Enum []string `json:"enum"`
						} `json:"code"`
					} `json:"properties"`
				} `json:"Problem"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	enum := doc.Components.Schemas.Problem.Properties.Code.Enum
	slices.Sort(codes)
	slices.Sort(enum)
	if len(codes) < 30 {
		t.Fatalf("found only %d codes", len(codes))
	}
	if !slices.Equal(codes, enum) {
		t.Errorf("openapi.json codes %v\nCode constants %v", enum, codes)
	}
}
