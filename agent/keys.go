package agent

import (
	"errors"
	"net/http"
	"regexp"
	"time"

	"github.com/labstack/echo/v4"

	"silt/auth"
	"silt/metadata"
	"silt/problem"
)

// CreateKeyRequest is the body of POST /v1/keys. ACL entries come as
// objects (ACLs), in the command line's form (Allow:
// "produce:topic:orders"), or both.
type CreateKeyRequest struct {
	Name      string     `json:"name"`
	Admin     bool       `json:"admin,omitempty"`
	ACLs      []auth.ACL `json:"acls,omitempty"`
	Allow     []string   `json:"allow,omitempty"`
	Quota     auth.Quota `json:"quota,omitzero"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// Replace revokes the live key of the same name first.
	Replace bool `json:"replace,omitempty"`
}

// CreateKeyResponse carries the new key's token, shown this once.
type CreateKeyResponse struct {
	Key   auth.Key `json:"key"`
	Token string   `json:"token"`
}

// SetACLsRequest is the body of PUT /v1/keys/{key}/acls: the key's new
// entries, replacing all of its old ones.
type SetACLsRequest struct {
	ACLs  []auth.ACL `json:"acls"`
	Allow []string   `json:"allow,omitempty"`
}

// WhoAmIResponse is the body of GET /v1/whoami.
type WhoAmIResponse struct {
	Auth      string     `json:"auth"`
	KeyID     string     `json:"key_id,omitempty"`
	Name      string     `json:"name"`
	Admin     bool       `json:"admin"`
	ACLs      []auth.ACL `json:"acls"`
	Quota     auth.Quota `json:"quota"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

func (s *Server) securityRoutes(g *echo.Group) {
	g.GET("/whoami", s.whoami)
	g.POST("/keys", s.createKey)
	g.GET("/keys", s.listKeys)
	g.GET("/keys/:key", s.getKey)
	g.DELETE("/keys/:key", s.revokeKey)
	g.PUT("/keys/:key/acls", s.setKeyACLs)
	g.GET("/audit", s.listAudit)
}

func (s *Server) whoami(c echo.Context) error {
	p := principalOf(c)
	out := WhoAmIResponse{Auth: s.cfg.Auth, KeyID: p.KeyID, Name: p.Name, Admin: p.Admin, ACLs: append([]auth.ACL{}, p.ACLs...), Quota: p.Quota}
	if !p.ExpiresAt.IsZero() {
		out.ExpiresAt = &p.ExpiresAt
	}
	return c.JSON(http.StatusOK, out)
}

// keyError maps key management errors to problems.
func keyError(err error) error {
	switch {
	case errors.Is(err, auth.ErrInvalidKey):
		return badRequest(problem.CodeInvalidKey, "%v", err)
	case errors.Is(err, metadata.ErrKeyNotFound):
		return notFound(problem.CodeKeyNotFound, "no such key")
	case errors.Is(err, metadata.ErrKeyExists):
		return newProblem(http.StatusConflict, problem.CodeKeyExists, "a live key has that name; revoke it first or pass replace")
	}
	return err
}

func (s *Server) keys() (KeyManager, error) {
	if s.deps.Auth.Keys == nil {
		return nil, newProblem(http.StatusServiceUnavailable, problem.CodeUnavailable, "key management is not configured on this agent")
	}
	return s.deps.Auth.Keys, nil
}

// aclsOf merges entries given as objects and in the command line's form.
func aclsOf(acls []auth.ACL, allow []string) ([]auth.ACL, error) {
	out := append([]auth.ACL{}, acls...)
	for _, a := range allow {
		acl, err := auth.ParseACL(a)
		if err != nil {
			return nil, badRequest(problem.CodeInvalidKey, "%v", err)
		}
		out = append(out, acl)
	}
	return out, nil
}

var keyIDRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

func keyParam(c echo.Context) (string, error) {
	id := c.Param("key")
	if !keyIDRE.MatchString(id) {
		return "", badRequest(problem.CodeInvalidParameter, "key id %q must be 16 hexadecimal digits", id)
	}
	return id, nil
}

func (s *Server) createKey(c echo.Context) error {
	km, err := s.keys()
	if err != nil {
		return err
	}
	var req CreateKeyRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	acls, err := aclsOf(req.ACLs, req.Allow)
	if err != nil {
		return err
	}
	spec := auth.KeySpec{Name: req.Name, Admin: req.Admin, ACLs: acls, Quota: req.Quota, ExpiresAt: req.ExpiresAt}
	if err := spec.Validate(); err != nil {
		return keyError(err)
	}
	ctx := c.Request().Context()
	if req.Replace {
		list, err := km.List(ctx)
		if err != nil {
			return err
		}
		for _, k := range list {
			if k.Name == req.Name && k.RevokedAt == nil {
				if _, err := km.Revoke(ctx, k.ID); err != nil {
					return keyError(err)
				}
				s.invalidate(k.ID)
			}
		}
	}
	k, token, err := km.Create(ctx, spec)
	if err != nil {
		return keyError(err)
	}
	setAudit(c, k.ID, map[string]any{"name": k.Name, "admin": k.Admin, "acls": k.ACLs, "quota": k.Quota, "expires_at": k.ExpiresAt, "replace": req.Replace})
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusCreated, CreateKeyResponse{Key: k, Token: token})
}

// invalidate drops a changed key from this agent's cache at once.
func (s *Server) invalidate(id string) {
	if a := s.deps.Auth.Authenticator; a != nil {
		a.Invalidate(id)
	}
}

func (s *Server) listKeys(c echo.Context) error {
	km, err := s.keys()
	if err != nil {
		return err
	}
	list, err := km.List(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, struct {
		Keys []auth.Key `json:"keys"`
	}{Keys: append([]auth.Key{}, list...)})
}

func (s *Server) getKey(c echo.Context) error {
	km, err := s.keys()
	if err != nil {
		return err
	}
	id, err := keyParam(c)
	if err != nil {
		return err
	}
	k, err := km.Get(c.Request().Context(), id)
	if err != nil {
		return keyError(err)
	}
	return c.JSON(http.StatusOK, k)
}

func (s *Server) revokeKey(c echo.Context) error {
	km, err := s.keys()
	if err != nil {
		return err
	}
	id, err := keyParam(c)
	if err != nil {
		return err
	}
	k, err := km.Revoke(c.Request().Context(), id)
	if err != nil {
		return keyError(err)
	}
	s.invalidate(k.ID)
	setAudit(c, k.ID, map[string]any{"name": k.Name})
	return c.JSON(http.StatusOK, k)
}

func (s *Server) setKeyACLs(c echo.Context) error {
	km, err := s.keys()
	if err != nil {
		return err
	}
	id, err := keyParam(c)
	if err != nil {
		return err
	}
	var req SetACLsRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	acls, err := aclsOf(req.ACLs, req.Allow)
	if err != nil {
		return err
	}
	k, err := km.SetACLs(c.Request().Context(), id, acls)
	if err != nil {
		return keyError(err)
	}
	s.invalidate(k.ID)
	setAudit(c, k.ID, map[string]any{"name": k.Name, "acls": k.ACLs})
	return c.JSON(http.StatusOK, k)
}

func (s *Server) listAudit(c echo.Context) error {
	if s.deps.Auth.Audit == nil {
		return newProblem(http.StatusServiceUnavailable, problem.CodeUnavailable, "the audit log is not configured on this agent")
	}
	before, err := intParam(c, "before", 0, 0, 1<<62)
	if err != nil {
		return err
	}
	limit, err := intParam(c, "limit", 100, 1, 1000)
	if err != nil {
		return err
	}
	entries, err := s.deps.Auth.Audit.List(c.Request().Context(), before, int(limit))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, struct {
		Entries []auth.AuditEntry `json:"entries"`
	}{Entries: append([]auth.AuditEntry{}, entries...)})
}
