package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"silt/auth"
	"silt/problem"
)

// Authentication modes.
const (
	// AuthRequired: every route but /healthz, /readyz and /metrics needs
	// a valid key (or a client certificate naming one).
	AuthRequired = "required"
	// AuthNone: anonymous; every request may do everything.
	AuthNone = "none"
)

// Authenticator turns keys and client-certificate names into principals;
// auth.Authenticator implements it.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (*auth.Principal, error)
	AuthenticateName(ctx context.Context, name string) (*auth.Principal, error)
	Watch(keyID string, fn func(*auth.Principal)) (stop func())
	// Invalidate drops a key from the cache at once (other agents hear of
	// the change by NOTIFY).
	Invalidate(keyID string)
}

// KeyManager manages keys; auth.Keys implements it.
type KeyManager interface {
	Create(ctx context.Context, spec auth.KeySpec) (auth.Key, string, error)
	List(ctx context.Context) ([]auth.Key, error)
	Get(ctx context.Context, id string) (auth.Key, error)
	Revoke(ctx context.Context, id string) (auth.Key, error)
	SetACLs(ctx context.Context, id string, acls []auth.ACL) (auth.Key, error)
}

// Auditor records and lists admin mutations; auth.Auditor implements it.
type Auditor interface {
	Record(ctx context.Context, e auth.Event) error
	List(ctx context.Context, before int64, limit int) ([]auth.AuditEntry, error)
}

// ProducerKeys binds idempotent producer ids to keys; metadata.Store
// implements it.
type ProducerKeys interface {
	ProducerKey(ctx context.Context, producerID int64) (keyID string, found bool, err error)
	BindProducer(ctx context.Context, producerID int64, keyID string) error
}

// AuthDeps are the collaborators of authentication and authorization.
// Without an Authenticator, under AuthRequired, every route but the open
// ones is refused.
type AuthDeps struct {
	Authenticator Authenticator
	Keys          KeyManager
	Audit         Auditor
	Quotas        *auth.Quotas
	Producers     ProducerKeys
}

// Echo context keys.
const (
	ctxPrincipal     = "silt.principal"
	ctxAuditResource = "silt.audit.resource"
	ctxAuditDetails  = "silt.audit.details"
)

var (
	errKeyWithdrawn    = errors.New("the API key was revoked or has expired")
	errAccessWithdrawn = errors.New("the API key no longer allows this")
)

// guardState is what the guard keeps per server.
type guardState struct {
	once       sync.Once
	registered map[string]bool // "METHOD path" of every registered route
}

// guard authenticates, authorizes (accessRules), applies quotas and
// audits, around every handler: handlers never check permissions. Order:
// 401 before 403 before anything a handler answers (so a key cannot probe
// for what it may not see), and quotas (429) after authorization.
func (s *Server) guard(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r, known := ruleFor(c)
		if known && r.kind == accessOpen {
			return next(c)
		}
		p, err := s.principal(c)
		if err != nil {
			return err
		}
		req := c.Request()
		if !known {
			if s.isRegistered(req.Method + " " + c.Path()) {
				s.logger.Error("route without an access rule refused; add it to agent/access.go", "method", req.Method, "route", c.Path())
				return newProblem(http.StatusForbidden, problem.CodeForbidden, "this route has no access rule")
			}
			return next(c) // no such route: 404 or 405
		}
		var body bodyFields
		if r.readsBody() {
			body = peekJSON(c)
		}
		resolved := resolveNeeds(c, r, body)
		if err := authorize(p, r, resolved); err != nil {
			return err
		}
		if err := s.admit(p, r); err != nil {
			return err
		}
		ctx := auth.WithPrincipal(req.Context(), p)
		var cancel context.CancelCauseFunc
		if r.long && p.KeyID != "" && s.deps.Auth.Authenticator != nil {
			ctx, cancel = context.WithCancelCause(ctx)
			defer cancel(nil)
			stop := s.deps.Auth.Authenticator.Watch(p.KeyID, func(np *auth.Principal) {
				switch {
				case np == nil:
					cancel(errKeyWithdrawn)
				case authorize(np, r, resolved) != nil:
					cancel(errAccessWithdrawn)
				}
			})
			defer stop()
			// Expiry ends the request at its moment, as a revocation would
			// (the watch would see it too, at its next re-check).
			if !p.ExpiresAt.IsZero() {
				expire := time.AfterFunc(time.Until(p.ExpiresAt), func() { cancel(errKeyWithdrawn) })
				defer expire.Stop()
			}
		}
		c.SetRequest(req.WithContext(ctx))
		c.Set(ctxPrincipal, p)
		charge := s.meter(c, p, r)

		err = next(c)

		charge()
		if cancel != nil {
			if cause := context.Cause(ctx); errors.Is(cause, errKeyWithdrawn) || errors.Is(cause, errAccessWithdrawn) {
				return s.withdrawn(c, cause)
			}
		}
		if err == nil && r.audit != "" && c.Response().Status/100 == 2 && (r.auditIf == nil || r.auditIf(body)) {
			s.audit(c, p, r, resolved, body)
		}
		return err
	}
}

func (s *Server) isRegistered(route string) bool {
	s.guardState.once.Do(func() {
		s.guardState.registered = map[string]bool{}
		for _, rt := range s.echo.Routes() {
			s.guardState.registered[rt.Method+" "+rt.Path] = true
		}
	})
	return s.guardState.registered[route]
}

func (r rule) readsBody() bool {
	if r.audit != "" {
		return true
	}
	for _, n := range r.needs {
		if n.body != nil {
			return true
		}
	}
	return false
}

// resolvedNeed is a need with its resources named.
type resolvedNeed struct {
	op    auth.Operation
	rt    auth.ResourceType
	names []string
	any   bool // any resource of the type will do
}

func resolveNeeds(c echo.Context, r rule, body bodyFields) []resolvedNeed {
	out := make([]resolvedNeed, 0, len(r.needs))
	for _, n := range r.needs {
		rn := resolvedNeed{op: n.op, rt: n.rt, any: n.any}
		switch {
		case n.param != "":
			rn.names = []string{decodedParam(c, n.param)}
		case n.body != nil:
			rn.names = n.body(body)
			// A body that names nothing (or is not JSON) is the
			// handler's to refuse; the key must still hold the operation
			// somewhere, so that it learns nothing it may not.
			rn.any = len(rn.names) == 0
		case n.rt == auth.ResourceCluster:
			rn.names = []string{""}
		}
		out = append(out, rn)
	}
	return out
}

// decodedParam is a path parameter as handlers see it: echo leaves it
// percent-encoded when the request escaped more than it had to (%6F for
// o), and handlers decode it, so the name authorized is the name acted
// on. A value that does not decode is authorized as it is (the handler
// refuses it).
func decodedParam(c echo.Context, name string) string {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" || !strings.Contains(v, "%") {
		return v
	}
	if d, err := url.PathUnescape(v); err == nil {
		return d
	}
	return v
}

// authorize checks p against a rule's needs.
func authorize(p *auth.Principal, r rule, needs []resolvedNeed) error {
	switch r.kind {
	case accessOpen, accessAuthenticated:
		return nil
	case accessAdmin:
		return forbidden(auth.AuthorizeAdmin(p))
	}
	for _, n := range needs {
		if n.any {
			if !p.AllowsAny(n.op, n.rt) {
				return forbidden(&auth.DeniedError{Key: p.Name, Operation: n.op, ResourceType: n.rt})
			}
			continue
		}
		for _, name := range n.names {
			if err := auth.Authorize(p, n.op, n.rt, name); err != nil {
				return forbidden(err)
			}
		}
	}
	return nil
}

func forbidden(err error) error {
	if err == nil {
		return nil
	}
	return newProblem(http.StatusForbidden, problem.CodeForbidden, "%v", err)
}

// principal authenticates the request: a bearer token, else a verified
// client certificate naming a key.
func (s *Server) principal(c echo.Context) (*auth.Principal, error) {
	if s.cfg.Auth == AuthNone {
		return auth.Anonymous, nil
	}
	authn := s.deps.Auth.Authenticator
	req := c.Request()
	var p *auth.Principal
	var err error
	switch hdr := req.Header.Get(echo.HeaderAuthorization); {
	case authn == nil:
		err = auth.ErrNoKey
	case hdr != "":
		scheme, token, _ := strings.Cut(hdr, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			err = auth.ErrMalformedKey
			break
		}
		p, err = authn.Authenticate(req.Context(), strings.TrimSpace(token))
	case req.TLS != nil && len(req.TLS.VerifiedChains) > 0 && len(req.TLS.VerifiedChains[0]) > 0:
		p, err = certPrincipal(req.Context(), authn, req.TLS.VerifiedChains[0][0])
	default:
		err = auth.ErrNoKey
	}
	if err == nil {
		return p, nil
	}
	if !errors.Is(err, auth.ErrUnauthenticated) {
		return nil, newProblem(http.StatusServiceUnavailable, problem.CodeUnavailable, "could not check the API key: %v", err)
	}
	challenge := `Bearer realm="silt"`
	if !errors.Is(err, auth.ErrNoKey) {
		challenge += `, error="invalid_token"`
	}
	c.Response().Header().Set(echo.HeaderWWWAuthenticate, challenge)
	detail := strings.TrimPrefix(err.Error(), auth.ErrUnauthenticated.Error()+": ")
	return nil, newProblem(http.StatusUnauthorized, problem.CodeUnauthenticated, "%s", detail)
}

// certPrincipal maps a verified client certificate to a key: its common
// name, then its DNS, email and URI names, the first that names a live
// key.
func certPrincipal(ctx context.Context, authn Authenticator, cert *x509.Certificate) (*auth.Principal, error) {
	names := append([]string{cert.Subject.CommonName}, cert.DNSNames...)
	names = append(names, cert.EmailAddresses...)
	for _, u := range cert.URIs {
		names = append(names, u.String())
	}
	err := auth.ErrUnknownName
	for _, n := range names {
		if n == "" {
			continue
		}
		var p *auth.Principal
		if p, err = authn.AuthenticateName(ctx, n); err == nil || !errors.Is(err, auth.ErrUnknownName) {
			return p, err
		}
	}
	return nil, err
}

// withdrawn answers a long request whose key was revoked (401) or lost
// the ACL it needed (403) while it waited: as a problem, or as a last
// event of a stream already under way.
func (s *Server) withdrawn(c echo.Context, cause error) error {
	p := newProblem(http.StatusUnauthorized, problem.CodeUnauthenticated, "%v", cause)
	if errors.Is(cause, errAccessWithdrawn) {
		p = newProblem(http.StatusForbidden, problem.CodeForbidden, "%v", cause)
	} else {
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="silt", error="invalid_token"`)
	}
	w := c.Response()
	if !w.Committed {
		return p
	}
	if strings.HasPrefix(w.Header().Get(echo.HeaderContentType), "text/event-stream") {
		p.Instance = c.Request().URL.Path
		b, _ := json.Marshal(p)
		fmt.Fprintf(w, "event: error\ndata: %s\n\n", b)
		w.Flush()
	}
	return nil
}

// admit applies the key's request quota, and its byte quota when in
// debt.
func (s *Server) admit(p *auth.Principal, r rule) error {
	q := s.deps.Auth.Quotas
	if q == nil || p.KeyID == "" {
		return nil
	}
	if wait, ok := q.Admit(p); !ok {
		return quotaProblem(wait, "requests")
	}
	kind := byteQuota(r.quota)
	if r.quota == quotaNone {
		return nil
	}
	if wait, ok := q.Check(p, kind); !ok {
		return quotaProblem(wait, kind.String())
	}
	return nil
}

func byteQuota(k quotaKind) auth.QuotaKind {
	if k == quotaProduce {
		return auth.QuotaProduce
	}
	return auth.QuotaFetch
}

func quotaProblem(wait time.Duration, what string) error {
	p := newProblem(http.StatusTooManyRequests, problem.CodeQuotaExceeded, "the API key is over its %s quota on this agent; retry after %s", what, wait.Round(time.Millisecond))
	p.RetryAfter = max(1, int((wait+time.Second-1)/time.Second))
	return p
}

// meter counts a request's bytes against the key's byte quota: the body
// read (produce) or the response written (fetch; a stream pauses while the
// key is in debt). It returns the function to call when the handler is
// done: it charges what was read, or takes the fetch meter off, so that
// the guard's own last words (a stream's withdrawal event) are never held
// back by a quota.
func (s *Server) meter(c echo.Context, p *auth.Principal, r rule) func() {
	q := s.deps.Auth.Quotas
	if q == nil || r.quota == quotaNone || !q.Limited(p, byteQuota(r.quota)) {
		return func() {}
	}
	if r.quota == quotaProduce {
		req := c.Request()
		cb := &countingBody{ReadCloser: req.Body}
		req.Body = cb
		return func() { q.Charge(p, auth.QuotaProduce, cb.n.Load()) }
	}
	w := c.Response()
	qw := &quotaWriter{ResponseWriter: w.Writer, q: q, p: p, ctx: c.Request().Context(), stop: s.stopping}
	w.Writer = qw
	return func() { w.Writer = qw.ResponseWriter }
}

type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// quotaWriter charges written bytes to the key's fetch quota. An event
// stream is paced: it writes at most a slice of events at a time (about
// an eighth of a second of the key's rate, whole events only) and waits
// before each while the key is in debt, so that it runs at the quota
// rather than in bursts. The wait ends when the request's context does (a
// revoked key: nothing more is written) or the agent stops (the stream
// goes on to its end event).
type quotaWriter struct {
	http.ResponseWriter
	q    *auth.Quotas
	p    *auth.Principal
	ctx  context.Context
	stop <-chan struct{}
}

// minStreamSlice is the least a paced stream writes at once.
const minStreamSlice = 512

func (w *quotaWriter) Write(b []byte) (int, error) {
	if !strings.HasPrefix(w.Header().Get(echo.HeaderContentType), "text/event-stream") {
		n, err := w.ResponseWriter.Write(b)
		w.q.Charge(w.p, auth.QuotaFetch, int64(n))
		return n, err
	}
	limit := max(minStreamSlice, int(w.q.Rate(w.p, auth.QuotaFetch)/8))
	written := 0
	for len(b) > 0 {
		if err := w.q.Wait(w.ctx, w.p, auth.QuotaFetch, w.stop); err != nil {
			return written, err
		}
		n, err := w.ResponseWriter.Write(b[:eventsPrefix(b, limit)])
		written += n
		w.q.Charge(w.p, auth.QuotaFetch, int64(n))
		if err != nil {
			return written, err
		}
		b = b[n:]
		if len(b) > 0 {
			// The client sees this slice before the pause.
			if err := http.NewResponseController(w.ResponseWriter).Flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// eventsPrefix is the length of b's longest prefix of at most limit
// bytes that ends an event ("\n\n"); the first event whole when it is
// longer; all of b when it holds no end of event.
func eventsPrefix(b []byte, limit int) int {
	if len(b) <= limit {
		return len(b)
	}
	if i := bytes.LastIndex(b[:limit], []byte("\n\n")); i >= 0 {
		return i + 2
	}
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
		return i + 2
	}
	return len(b)
}

func (w *quotaWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

func (w *quotaWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// maxPeek bounds the JSON bodies the guard reads for resource names; the
// handlers' own limit is the same.
const maxPeek = maxJSONBody

// peekJSON reads a small JSON body's top-level fields and puts the body
// back for the handler.
func peekJSON(c echo.Context) bodyFields {
	req := c.Request()
	if req.Body == nil || req.Body == http.NoBody {
		return nil
	}
	buf, err := io.ReadAll(io.LimitReader(req.Body, maxPeek+1))
	req.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), req.Body), req.Body}
	if err != nil || len(buf) > maxPeek {
		return nil
	}
	var f bodyFields
	if json.Unmarshal(buf, &f) != nil {
		return nil
	}
	return f
}

// principalOf is the principal the guard authenticated (Anonymous without
// authentication).
func principalOf(c echo.Context) *auth.Principal {
	if p, ok := c.Get(ctxPrincipal).(*auth.Principal); ok {
		return p
	}
	return auth.Anonymous
}

// visible reports whether the caller may describe a resource: lists show
// only those.
func visible(c echo.Context, rt auth.ResourceType, name string) bool {
	return principalOf(c).Allows(auth.OpDescribe, rt, name)
}

// setAudit names the resource (and the details) a handler's audited
// mutation touched, when the route's parameters do not.
func setAudit(c echo.Context, resource string, details any) {
	c.Set(ctxAuditResource, resource)
	if details != nil {
		c.Set(ctxAuditDetails, details)
	}
}

// audit records an admin mutation that succeeded.
func (s *Server) audit(c echo.Context, p *auth.Principal, r rule, needs []resolvedNeed, body bodyFields) {
	ev := auth.Event{Principal: p, Action: r.audit, ResourceType: r.auditType, Source: c.Request().RemoteAddr,
		ForwardedFor: c.Request().Header.Get(echo.HeaderXForwardedFor)}
	if len(needs) > 0 {
		if ev.ResourceType == "" {
			ev.ResourceType = needs[0].rt
		}
		if len(needs[0].names) > 0 {
			ev.ResourceName = needs[0].names[0]
		}
	}
	if name, ok := c.Get(ctxAuditResource).(string); ok {
		ev.ResourceName = name
	}
	switch d := c.Get(ctxAuditDetails); {
	case d != nil:
		ev.Details, _ = json.Marshal(d)
	case body != nil:
		ev.Details, _ = json.Marshal(body)
	}
	if s.deps.Auth.Audit == nil {
		s.logger.Info("audit", "action", ev.Action, "resource_type", ev.ResourceType, "resource", ev.ResourceName,
			"key_id", p.KeyID, "key_name", p.Name, "source", ev.Source)
		return
	}
	if err := s.deps.Auth.Audit.Record(c.Request().Context(), ev); err != nil {
		s.logger.Debug("audit row not stored", "err", err) // Record logged it
	}
}

// Route is a registered route: its method and echo path pattern.
type Route struct{ Method, Path string }

// Routes lists the routes the server registered (the access test walks
// them).
func (s *Server) Routes() []Route {
	var out []Route
	for _, r := range s.echo.Routes() {
		if r.Method == echo.RouteNotFound {
			continue
		}
		out = append(out, Route{Method: r.Method, Path: r.Path})
	}
	return out
}
