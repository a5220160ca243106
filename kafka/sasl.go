package kafka

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"silt/auth"
)

// Authentication. With keys required (Config.RequireAuth), a connection
// first authenticates: with SASL (SaslHandshake, then SaslAuthenticate
// requests, or raw tokens after a version 0 handshake, as kafka-python
// sends them), or by a verified TLS client certificate that names a key.
// Until then only ApiVersions and the SASL requests are answered; anything
// else closes the connection, as Kafka does. Once authenticated, every
// request checks the key again (from the authenticator's cache, which
// NOTIFY invalidates): a revoked or expired key closes the connection, and
// a revocation closes its idle and waiting connections at once.

// Authenticator checks keys; auth.Authenticator implements it.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (*auth.Principal, error)
	AuthenticateName(ctx context.Context, name string) (*auth.Principal, error)
	Principal(ctx context.Context, keyID string) (*auth.Principal, error)
	Watch(keyID string, fn func(*auth.Principal)) (stop func())
	StartSCRAM(mechanism string) (*auth.SCRAMExchange, error)
}

// Auditor records admin mutations; auth.Auditor implements it.
type Auditor interface {
	Record(ctx context.Context, e auth.Event) error
}

// SASL mechanisms.
const (
	mechPlain = "PLAIN"
)

// mechanisms are the SASL mechanisms offered.
var mechanisms = []string{mechPlain, auth.SCRAMSHA256, auth.SCRAMSHA512}

// Pre-authentication bounds: a connection must authenticate within
// Config.AuthTimeout, with requests of at most maxPreAuthBytes (Kafka's
// sasl.server.max.receive.size is 512 KiB).
const (
	maxPreAuthBytes     = 128 << 10
	tlsHandshakeTimeout = 10 * time.Second
)

// saslState is the SASL exchange of a connection not yet authenticated;
// only its reader touches it.
type saslState struct {
	mechanism string // chosen by SaslHandshake
	raw       bool   // a version 0 handshake: tokens come unframed
	scram     *auth.SCRAMExchange
}

// errTransient marks an authentication that could not be checked (the
// metadata store failed): the connection closes without an answer, and
// the client tries again.
var errTransient = errors.New("the key could not be checked")

// preAuth answers a request of a connection that has not authenticated,
// in the reader. It reports whether to go on reading.
func (c *conn) preAuth(cl *call) bool {
	defer cl.release()
	switch {
	case cl.key == keyApiVersions:
		if !cl.served {
			return c.answer(cl, unsupportedResponse(cl), false)
		}
		return c.answer(cl, apiVersionsResponse(cl.version, errNone), false)
	case !cl.served && (cl.key == keySaslHandshake || cl.key == keySaslAuthenticate):
		return c.answer(cl, unsupportedResponse(cl), false)
	case cl.key == keySaslHandshake:
		req := cl.req.(*kmsg.SASLHandshakeRequest)
		resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
		resp.SupportedMechanisms = mechanisms
		switch {
		case c.sasl.mechanism != "":
			resp.ErrorCode = errIllegalSASLState
			return c.answer(cl, resp, true)
		case !supportedMechanism(req.Mechanism):
			resp.ErrorCode = errUnsupportedSASLMechanism
			c.s.logger.Debug("kafka SASL mechanism refused", "remote", c.remote(), "mechanism", req.Mechanism)
			return c.answer(cl, resp, true)
		}
		c.sasl.mechanism, c.sasl.raw = req.Mechanism, req.Version == 0
		return c.answer(cl, resp, false)
	case cl.key == keySaslAuthenticate:
		req := cl.req.(*kmsg.SASLAuthenticateRequest)
		resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		if c.sasl.mechanism == "" || c.sasl.raw {
			resp.ErrorCode = errIllegalSASLState
			resp.ErrorMessage = strPtr("SaslAuthenticate before a version 1 SaslHandshake")
			return c.answer(cl, resp, true)
		}
		out, err := c.saslStep(req.SASLAuthBytes)
		switch {
		case errors.Is(err, errTransient):
			c.s.logger.Warn("kafka authentication not checked; closing the connection", "remote", c.remote(), "err", err)
			c.abort()
			return false
		case err != nil:
			resp.ErrorCode = errSASLAuthenticationFailed
			resp.ErrorMessage = strPtr(err.Error())
			return c.answer(cl, resp, true)
		}
		resp.SASLAuthBytes = out
		return c.answer(cl, resp, false)
	}
	c.s.logger.Info("kafka request before authentication; closing the connection", "remote", c.remote(),
		"api", kmsg.NameForKey(cl.key), "client_id", cl.clientID)
	c.s.metrics.unauthenticated.Inc()
	c.abort()
	return false
}

// rawToken answers a SASL token sent unframed after a version 0
// handshake: the answer goes back unframed too (an empty one for PLAIN's
// success); a failure closes the connection, as Kafka does.
func (c *conn) rawToken(body []byte) bool {
	out, err := c.saslStep(body)
	if err != nil {
		c.s.logger.Info("kafka authentication failed; closing the connection", "remote", c.remote(), "err", err)
		c.abort()
		return false
	}
	cl := &call{c: c, raw: true, rawResp: out, done: make(chan struct{}), started: time.Now(), key: keySaslAuthenticate}
	return c.answer(cl, nil, false)
}

// answer queues an answer made in the reader, in order with the others;
// with closeAfter the connection closes once it is written. It reports
// whether to go on reading.
func (c *conn) answer(cl *call, resp kmsg.Response, closeAfter bool) bool {
	cl.closeAfter = closeAfter
	select {
	case c.calls <- cl:
	case <-c.ctx.Done():
		return false
	}
	cl.reply(resp)
	return !closeAfter
}

func supportedMechanism(m string) bool {
	for _, s := range mechanisms {
		if s == m {
			return true
		}
	}
	return false
}

// saslStep runs one step of the chosen mechanism; on the last one the
// connection is authenticated.
func (c *conn) saslStep(token []byte) ([]byte, error) {
	switch mech := c.sasl.mechanism; mech {
	case mechPlain:
		p, err := c.plain(token)
		if err != nil {
			c.s.metrics.authentications.WithLabelValues(mechPlain, authResult(err)).Inc()
			return nil, err
		}
		c.authenticated(p, mechPlain)
		return []byte{}, nil
	case auth.SCRAMSHA256, auth.SCRAMSHA512:
		if c.sasl.scram == nil {
			x, err := c.s.deps.Auth.StartSCRAM(mech)
			if err != nil {
				return nil, err
			}
			c.sasl.scram = x
		}
		ctx, cancel := context.WithTimeout(c.ctx, authCheckTimeout)
		defer cancel()
		out, p, err := c.sasl.scram.Step(ctx, token)
		if err = authError(err); err != nil {
			c.s.metrics.authentications.WithLabelValues(mech, authResult(err)).Inc()
			return nil, err
		}
		if p != nil {
			c.authenticated(p, mech)
		}
		return out, nil
	}
	return nil, fmt.Errorf("no SASL mechanism was chosen")
}

func authResult(err error) string {
	if errors.Is(err, errTransient) {
		return "error"
	}
	return "failure"
}

// plain checks a PLAIN token (RFC 4616): authzid NUL authcid NUL password,
// where the password is an API key and the user name its id.
func (c *conn) plain(token []byte) (*auth.Principal, error) {
	parts := bytes.Split(token, []byte{0})
	if len(parts) != 3 {
		return nil, errors.New("malformed PLAIN credentials")
	}
	authzid, user, password := string(parts[0]), string(parts[1]), string(parts[2])
	id, ok := auth.ParseToken(password)
	switch {
	case !ok:
		return nil, errors.New("the password must be a Silt API key (silt_<id>_<secret>)")
	case user != id:
		return nil, errors.New("the user name must be the API key's id (the 16 hex digits after silt_)")
	case authzid != "" && authzid != user:
		return nil, errors.New("the authorization id, when given, must be the user name")
	}
	ctx, cancel := context.WithTimeout(c.ctx, authCheckTimeout)
	defer cancel()
	p, err := c.s.deps.Auth.Authenticate(ctx, password)
	return p, authError(err)
}

// authCheckTimeout bounds checking credentials against the metadata store.
const authCheckTimeout = 10 * time.Second

// authError words an authentication failure for the client, and marks
// failures to check as transient.
func authError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, auth.ErrUnauthenticated):
		return errors.New(strings.TrimPrefix(err.Error(), auth.ErrUnauthenticated.Error()+": "))
	}
	return fmt.Errorf("%w: %v", errTransient, err)
}

// authenticated makes p the connection's principal and watches its key:
// a revocation closes the connection.
func (c *conn) authenticated(p *auth.Principal, how string) {
	c.principal.Store(p)
	c.s.metrics.authentications.WithLabelValues(how, "success").Inc()
	c.s.logger.Debug("kafka connection authenticated", "remote", c.remote(), "mechanism", how, "key_id", p.KeyID, "key_name", p.Name)
	stop := c.s.deps.Auth.Watch(p.KeyID, func(np *auth.Principal) {
		if np == nil {
			c.s.logger.Info("kafka connection closed: its API key was revoked or expired", "remote", c.remote(), "key_id", p.KeyID)
			c.abort()
			return
		}
		c.principal.Store(np)
	})
	c.mu.Lock()
	c.unwatch = stop
	c.mu.Unlock()
}

// who is the principal a request runs as: anonymous without keys, else
// the connection's key as it is now (an error once it is revoked or
// expired).
func (c *conn) who(ctx context.Context) (*auth.Principal, error) {
	if !c.s.cfg.RequireAuth {
		return auth.Anonymous, nil
	}
	p := c.principal.Load()
	if p == nil {
		return nil, auth.ErrNoKey
	}
	np, err := c.s.deps.Auth.Principal(ctx, p.KeyID)
	if err != nil {
		return nil, err
	}
	if np != p {
		c.principal.Store(np)
	}
	return np, nil
}

// handshake completes a TLS handshake, within a bound, and authenticates
// a connection whose verified client certificate names a key. It reports
// whether to go on.
func (c *conn) handshake() bool {
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		return true
	}
	ctx, cancel := context.WithTimeout(c.ctx, tlsHandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		c.s.logger.Debug("kafka TLS handshake failed", "remote", c.remote(), "err", err)
		return false
	}
	chains := tc.ConnectionState().VerifiedChains
	if !c.s.cfg.RequireAuth || len(chains) == 0 || len(chains[0]) == 0 {
		return true
	}
	p, err := certPrincipal(ctx, c.s.deps.Auth, chains[0][0])
	switch {
	case err == nil:
		c.authenticated(p, "mTLS")
	case errors.Is(err, auth.ErrUnauthenticated):
		// SASL may still authenticate the connection.
		c.s.logger.Debug("kafka client certificate names no live key", "remote", c.remote())
	default:
		c.s.logger.Warn("kafka client certificate not checked; closing the connection", "remote", c.remote(), "err", err)
		return false
	}
	return true
}

// certPrincipal maps a verified client certificate to a key, as the HTTP
// API does: its common name, then its DNS, email and URI names, the first
// that names a live key.
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

// allowed reports whether the request's principal may do op on the
// resource.
func allowed(ctx context.Context, op auth.Operation, rt auth.ResourceType, name string) bool {
	return auth.FromContext(ctx).Allows(op, rt, name)
}

// audit records an admin mutation that succeeded.
func (s *Server) audit(ctx context.Context, cl *call, action string, rt auth.ResourceType, name string, details any) {
	p := auth.FromContext(ctx)
	if p == nil {
		return
	}
	ev := auth.Event{Principal: p, Action: action, ResourceType: rt, ResourceName: name, Source: cl.c.remote()}
	if details != nil {
		if b, err := jsonDetails(details); err == nil {
			ev.Details = b
		}
	}
	if s.deps.Audit == nil {
		s.logger.Info("audit", "action", action, "resource_type", rt, "resource", name, "key_id", p.KeyID, "key_name", p.Name, "source", ev.Source)
		return
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), authCheckTimeout)
	defer cancel()
	if err := s.deps.Audit.Record(actx, ev); err != nil {
		s.logger.Debug("audit row not stored", "err", err) // Record logged it
	}
}
