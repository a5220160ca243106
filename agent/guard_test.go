package agent

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"

	"silt/auth"
)

// fakeAuthn accepts one token.
type fakeAuthn struct{ p *auth.Principal }

func (f fakeAuthn) Authenticate(_ context.Context, token string) (*auth.Principal, error) {
	if token == "good" {
		return f.p, nil
	}
	return nil, auth.ErrInvalidToken
}

func (f fakeAuthn) AuthenticateName(context.Context, string) (*auth.Principal, error) {
	return nil, auth.ErrUnknownName
}

func (f fakeAuthn) Watch(string, func(*auth.Principal)) func() { return func() {} }

func (f fakeAuthn) Invalidate(string) {}

func guardedServer(t *testing.T, pprof bool) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Pprof = pprof
	s, err := New(cfg, Deps{Groups: struct{ GroupCoordinator }{}, LagHistory: struct{ LagHistory }{},
		Auth: AuthDeps{Authenticator: fakeAuthn{&auth.Principal{KeyID: "k", Name: "everything", ACLs: []auth.ACL{
			{ResourceType: auth.ResourceTopic, PatternType: auth.PatternLiteral, Name: "*", Operations: auth.Operations},
		}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func serve(s *Server, method, path, token string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(method, path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	s.Handler().ServeHTTP(rec, req)
	return rec
}

// A route added without a rule is refused, whatever the key; unknown
// paths need a key before they are told they do not exist.
func TestRouteWithoutRuleIsRefused(t *testing.T) {
	s := guardedServer(t, false)
	s.echo.GET("/v1/unruled", func(c echo.Context) error { return c.String(http.StatusOK, "leak") })
	if rec := serve(s, "GET", "/v1/unruled", "good"); rec.Code != http.StatusForbidden {
		t.Fatalf("a route without a rule: %d %s", rec.Code, rec.Body)
	}
	if rec := serve(s, "GET", "/v1/nowhere", ""); rec.Code != http.StatusUnauthorized {
		t.Fatalf("an unknown path without a key: %d", rec.Code)
	}
	if rec := serve(s, "GET", "/v1/nowhere", "good"); rec.Code != http.StatusNotFound {
		t.Fatalf("an unknown path with a key: %d", rec.Code)
	}
	if rec := serve(s, "PUT", "/v1/topics", "good"); rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("a wrong method with a key: %d", rec.Code)
	}
	// Under required mode without an authenticator nothing but the open
	// routes answers.
	bare, err := New(DefaultConfig(), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if rec := serve(bare, "GET", "/v1/topics", "good"); rec.Code != http.StatusUnauthorized {
		t.Fatalf("no authenticator: %d", rec.Code)
	}
	if rec := serve(bare, "GET", "/healthz", ""); rec.Code != http.StatusOK {
		t.Fatalf("healthz: %d", rec.Code)
	}
}

// Every rule names a route that exists (with every optional route on),
// and pprof needs an admin key.
func TestEveryRuleHasARoute(t *testing.T) {
	s := guardedServer(t, true)
	routes := map[string]bool{}
	for _, r := range s.Routes() {
		routes[r.Method+" "+r.Path] = true
	}
	for route := range accessRules {
		if !routes[route] {
			t.Errorf("rule %s has no route", route)
		}
	}
	if rec := serve(s, "GET", "/debug/pprof/", "good"); rec.Code != http.StatusForbidden {
		t.Fatalf("pprof with a non-admin key: %d", rec.Code)
	}
}
