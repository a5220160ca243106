package auth

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"silt/metadata"
)

// SCRAM (RFC 5802, RFC 7677) lets a client prove it holds a key without
// sending it: the server keeps, per mechanism, a salt, an iteration count
// and two keys derived from the secret (never the secret), made when the
// key is made. Kafka clients use it as SASL SCRAM-SHA-256 or -512, with
// the key's id as the user name and the key as the password.
//
// The key is a 256-bit random secret, not a password: the salted hash
// guards nothing a dictionary could find, so the iteration count is the
// smallest clients accept (4096, RFC 7677's and Kafka's minimum) and the
// exchange costs the server two HMACs.

// SCRAM mechanism names.
const (
	SCRAMSHA256 = "SCRAM-SHA-256"
	SCRAMSHA512 = "SCRAM-SHA-512"
)

// SCRAMMechanisms are the SCRAM mechanisms keys have credentials for.
var SCRAMMechanisms = []string{SCRAMSHA256, SCRAMSHA512}

const (
	scramIterations = 4096
	scramSaltBytes  = 16
	scramNonceBytes = 18 // base64: 24 characters
	// maxSCRAMMessage bounds a client message (a few hundred bytes).
	maxSCRAMMessage = 4096
)

func scramHash(mechanism string) func() hash.Hash {
	switch mechanism {
	case SCRAMSHA256:
		return sha256.New
	case SCRAMSHA512:
		return sha512.New
	}
	return nil
}

// scramCredential derives a mechanism's credential from a password.
func scramCredential(mechanism, password string, salt []byte, iterations int) (metadata.SCRAMCredential, error) {
	h := scramHash(mechanism)
	if h == nil {
		return metadata.SCRAMCredential{}, fmt.Errorf("auth: unknown SCRAM mechanism %q", mechanism)
	}
	salted, err := pbkdf2.Key(h, password, salt, iterations, h().Size())
	if err != nil {
		return metadata.SCRAMCredential{}, fmt.Errorf("auth: SCRAM salted password: %w", err)
	}
	clientKey := hmacSum(h, salted, []byte("Client Key"))
	stored := h()
	stored.Write(clientKey)
	return metadata.SCRAMCredential{Salt: salt, Iterations: iterations, StoredKey: stored.Sum(nil),
		ServerKey: hmacSum(h, salted, []byte("Server Key"))}, nil
}

// scramCredentials derives a key's credentials for every mechanism.
func scramCredentials(token string) (map[string]metadata.SCRAMCredential, error) {
	out := map[string]metadata.SCRAMCredential{}
	for _, m := range SCRAMMechanisms {
		salt := make([]byte, scramSaltBytes)
		if _, err := rand.Read(salt); err != nil {
			return nil, fmt.Errorf("auth: SCRAM salt: %w", err)
		}
		c, err := scramCredential(m, token, salt, scramIterations)
		if err != nil {
			return nil, err
		}
		out[m] = c
	}
	return out, nil
}

func hmacSum(h func() hash.Hash, key, msg []byte) []byte {
	m := hmac.New(h, key)
	m.Write(msg)
	return m.Sum(nil)
}

// ErrNoSCRAM: the key has no SCRAM credentials (it was made before they
// were kept).
var ErrNoSCRAM = fmt.Errorf("%w: the API key has no SCRAM credentials (it was made before Silt kept them): authenticate with PLAIN, or make a new key", ErrUnauthenticated)

// SCRAMExchange is the server side of one SCRAM authentication: the
// client's first message, the server's, the client's final one and the
// server's. Not safe for concurrent use.
type SCRAMExchange struct {
	a         *Authenticator
	mechanism string
	h         func() hash.Hash
	nonce     func() (string, error)

	step            int
	keyID           string
	cred            metadata.SCRAMCredential
	gs2Header       string
	clientFirstBare string
	serverFirst     string
	fullNonce       string
}

// StartSCRAM begins a SCRAM exchange of mechanism (SCRAMSHA256 or
// SCRAMSHA512).
func (a *Authenticator) StartSCRAM(mechanism string) (*SCRAMExchange, error) {
	h := scramHash(mechanism)
	if h == nil {
		return nil, fmt.Errorf("auth: unknown SCRAM mechanism %q", mechanism)
	}
	return &SCRAMExchange{a: a, mechanism: mechanism, h: h, nonce: randomNonce}, nil
}

func randomNonce() (string, error) {
	b := make([]byte, scramNonceBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// errSCRAM is a malformed SCRAM message.
func errSCRAM(format string, args ...any) error {
	return fmt.Errorf("%w: SCRAM: "+format, append([]any{ErrUnauthenticated}, args...)...)
}

// Step answers the client's next message. After the client's final
// message it returns the server's final one and the key's principal; a
// failure to authenticate wraps ErrUnauthenticated, any other error
// means the key could not be checked.
func (x *SCRAMExchange) Step(ctx context.Context, msg []byte) (out []byte, p *Principal, err error) {
	out, p, err = x.step1(ctx, msg)
	if errors.Is(err, ErrUnauthenticated) {
		x.a.failures.WithLabelValues(reason(err)).Inc()
	}
	return out, p, err
}

func (x *SCRAMExchange) step1(ctx context.Context, msg []byte) (out []byte, p *Principal, err error) {
	if len(msg) > maxSCRAMMessage {
		return nil, nil, errSCRAM("a message of %d bytes", len(msg))
	}
	x.step++
	switch x.step {
	case 1:
		out, err := x.clientFirst(ctx, string(msg))
		return out, nil, err
	case 2:
		return x.clientFinal(ctx, string(msg))
	}
	return nil, nil, errSCRAM("the exchange is over")
}

// clientFirst reads "gs2-header client-first-message-bare" and answers
// the server's first message.
func (x *SCRAMExchange) clientFirst(ctx context.Context, msg string) ([]byte, error) {
	// gs2-header: channel binding flag, authzid, then the bare message.
	flag, rest, ok := strings.Cut(msg, ",")
	if !ok {
		return nil, errSCRAM("malformed first message")
	}
	switch flag {
	case "n", "y": // no channel binding (y: the client could, but thinks we cannot)
	default:
		return nil, errSCRAM("channel binding is not supported")
	}
	authzid, bare, ok := strings.Cut(rest, ",")
	if !ok {
		return nil, errSCRAM("malformed first message")
	}
	if strings.HasPrefix(bare, "m=") {
		return nil, errSCRAM("mandatory extensions are not supported")
	}
	attrs, err := scramAttrs(bare)
	if err != nil {
		return nil, err
	}
	if len(attrs) < 2 || attrs[0].k != 'n' || attrs[1].k != 'r' || attrs[1].v == "" {
		return nil, errSCRAM("the first message must start with n= and r=")
	}
	for _, at := range attrs[2:] {
		if strings.HasPrefix(at.raw, "tokenauth=") {
			return nil, errSCRAM("delegation tokens are not served")
		}
	}
	user, err := saslName(attrs[0].v)
	if err != nil {
		return nil, err
	}
	if authzid != "" {
		z, err := saslName(strings.TrimPrefix(authzid, "a="))
		if !strings.HasPrefix(authzid, "a=") || err != nil || z != user {
			return nil, errSCRAM("the authorization id, when given, must be the user name")
		}
	}
	if len(user) != 2*idBytes || !isLowerHex(user) {
		return nil, errSCRAM("the user name must be the API key's id (the 16 hex digits after silt_)")
	}
	cred, err := x.a.scramCredential(ctx, user, x.mechanism)
	if err != nil {
		return nil, err
	}
	snonce, err := x.nonce()
	if err != nil {
		return nil, fmt.Errorf("auth: SCRAM nonce: %w", err)
	}
	x.keyID, x.cred = user, cred
	x.gs2Header = flag + "," + authzid + ","
	x.clientFirstBare = bare
	x.fullNonce = attrs[1].v + snonce
	x.serverFirst = "r=" + x.fullNonce + ",s=" + base64.StdEncoding.EncodeToString(cred.Salt) + ",i=" + strconv.Itoa(cred.Iterations)
	return []byte(x.serverFirst), nil
}

// clientFinal checks "c=... ,r=... ,p=proof" and answers the server's
// final message.
func (x *SCRAMExchange) clientFinal(ctx context.Context, msg string) ([]byte, *Principal, error) {
	i := strings.LastIndex(msg, ",p=")
	if i < 0 {
		return nil, nil, errSCRAM("the final message has no proof")
	}
	withoutProof := msg[:i]
	proof, err := base64.StdEncoding.DecodeString(msg[i+len(",p="):])
	if err != nil || len(proof) != x.h().Size() {
		return nil, nil, errSCRAM("malformed proof")
	}
	attrs, err := scramAttrs(withoutProof)
	if err != nil {
		return nil, nil, err
	}
	if len(attrs) < 2 || attrs[0].k != 'c' || attrs[1].k != 'r' {
		return nil, nil, errSCRAM("the final message must start with c= and r=")
	}
	if cb, err := base64.StdEncoding.DecodeString(attrs[0].v); err != nil || string(cb) != x.gs2Header {
		return nil, nil, errSCRAM("the channel binding does not match the first message")
	}
	// The nonce must end with the server's (librdkafka 2.0 sends its
	// own nonce before it again; Kafka accepts that too). The proof
	// covers the message as sent either way.
	if !strings.HasSuffix(attrs[1].v, x.fullNonce) {
		return nil, nil, errSCRAM("the nonce does not match")
	}
	authMessage := []byte(x.clientFirstBare + "," + x.serverFirst + "," + withoutProof)
	serverSignature, ok := scramVerify(x.h, x.cred, authMessage, proof)
	if !ok {
		return nil, nil, ErrInvalidToken
	}
	p, err := x.a.Principal(ctx, x.keyID)
	if err != nil {
		return nil, nil, err
	}
	return []byte("v=" + base64.StdEncoding.EncodeToString(serverSignature)), p, nil
}

// scramVerify checks a client's proof of authMessage against a
// credential, and returns the server's signature.
func scramVerify(h func() hash.Hash, cred metadata.SCRAMCredential, authMessage, proof []byte) ([]byte, bool) {
	signature := hmacSum(h, cred.StoredKey, authMessage)
	if len(proof) != len(signature) {
		return nil, false
	}
	clientKey := make([]byte, len(proof))
	for j := range proof {
		clientKey[j] = proof[j] ^ signature[j]
	}
	sum := h()
	sum.Write(clientKey)
	if subtle.ConstantTimeCompare(sum.Sum(nil), cred.StoredKey) != 1 {
		return nil, false
	}
	return hmacSum(h, cred.ServerKey, authMessage), true
}

type scramAttr struct {
	k   byte
	v   string
	raw string
}

// scramAttrs splits "a=v,b=w" into attributes.
func scramAttrs(s string) ([]scramAttr, error) {
	var out []scramAttr
	for _, part := range strings.Split(s, ",") {
		if len(part) < 2 || part[1] != '=' {
			out = append(out, scramAttr{raw: part})
			continue
		}
		out = append(out, scramAttr{k: part[0], v: part[2:], raw: part})
	}
	if len(out) == 0 {
		return nil, errSCRAM("empty message")
	}
	return out, nil
}

// saslName decodes a SCRAM user name ("=2C" is ",", "=3D" is "=").
func saslName(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "=2C"):
			b.WriteByte(',')
		case strings.HasPrefix(s[i:], "=3D"):
			b.WriteByte('=')
		default:
			return "", errSCRAM("malformed user name")
		}
		i += 2
	}
	return b.String(), nil
}

// scramCredential returns a live key's credential for mechanism.
func (a *Authenticator) scramCredential(ctx context.Context, keyID, mechanism string) (metadata.SCRAMCredential, error) {
	e, err := a.entry(ctx, keyID)
	if err != nil {
		return metadata.SCRAMCredential{}, err
	}
	if _, err := a.use(e); err != nil {
		return metadata.SCRAMCredential{}, err
	}
	c, ok := e.scram[mechanism]
	if !ok {
		return metadata.SCRAMCredential{}, ErrNoSCRAM
	}
	return c, nil
}
