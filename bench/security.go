package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"silt/agent"
	"silt/auth"
	"silt/client"
	"silt/internal/agentd"
)

// How a run reaches its agent.
const (
	SecurityNone    = "none"     // anonymous, plain HTTP
	SecurityAuth    = "auth"     // keys required, plain HTTP
	SecurityAuthTLS = "auth+tls" // keys required, HTTPS
)

// ParseSecurity reads a comma-separated list of security modes.
func ParseSecurity(s string) ([]string, error) {
	var out []string
	for _, m := range strings.Split(s, ",") {
		switch m = strings.TrimSpace(m); m {
		case SecurityNone, SecurityAuth, SecurityAuthTLS:
			out = append(out, m)
		case "":
		default:
			return nil, fmt.Errorf("security %q: want none, auth or auth+tls", m)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("security %q: name at least one mode", s)
	}
	return out, nil
}

// securityState is a LocalAgent's keys and certificate, kept across
// restarts.
type securityState struct {
	mode     string
	admin    string // bootstrap admin key
	token    string // the bench's own key: not an admin, limited to bench-* topics
	dir      string // the certificate's files
	certFile string
	keyFile  string
	tls      *tls.Config
}

func newSecurityState(mode string) (*securityState, error) {
	if mode == "" {
		mode = SecurityNone
	}
	s := &securityState{mode: mode}
	if mode == SecurityNone {
		return s, nil
	}
	var err error
	if s.admin, _, err = auth.NewToken(); err != nil {
		return nil, err
	}
	if mode == SecurityAuthTLS {
		if err := s.makeCert(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// makeCert writes a self-signed certificate for 127.0.0.1.
func (s *securityState) makeCert() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "silt bench"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if s.dir, err = os.MkdirTemp("", "silt-bench-tls-"); err != nil {
		return err
	}
	s.certFile, s.keyFile = filepath.Join(s.dir, "cert.pem"), filepath.Join(s.dir, "key.pem")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(s.certFile, certPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(s.keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	s.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return nil
}

// configure sets the agent's authentication and TLS.
func (s *securityState) configure(cfg *agentd.Config) {
	if s.mode == SecurityNone {
		return
	}
	cfg.HTTP.Auth = agent.AuthRequired
	cfg.BootstrapAdminKey = s.admin
	if s.mode == SecurityAuthTLS {
		cfg.TLS.CertFile, cfg.TLS.KeyFile = s.certFile, s.keyFile
	}
}

// target points t at the running agent and gives it the bench's key,
// made the first time with the admin key.
func (s *securityState) target(ctx context.Context, t *Target) error {
	t.Security = s.mode
	if s.mode == SecurityNone {
		return nil
	}
	if s.tls != nil {
		t.URL = "https://" + strings.TrimPrefix(t.URL, "http://")
		t.TLS = s.tls
	}
	if s.token == "" {
		opts := []client.Option{client.WithToken(s.admin)}
		if s.tls != nil {
			opts = append(opts, client.WithTLSConfig(s.tls))
		}
		admin, err := client.New(t.URL, opts...)
		if err != nil {
			return err
		}
		var b [4]byte
		_, _ = rand.Read(b[:])
		k, err := admin.CreateKey(ctx, client.NewKey{Name: "bench-" + hex.EncodeToString(b[:]),
			Allow: []string{"create,produce,consume,describe:topic:bench-*"}})
		if err != nil {
			return fmt.Errorf("bench key: %w", err)
		}
		s.token = k.Token
	}
	t.Token = s.token
	return nil
}

// remove deletes the certificate's files.
func (s *securityState) remove() {
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}
