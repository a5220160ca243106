package auth

import (
	"context"
	"crypto/x509"
	"errors"
)

// NameAuthenticator finds the live key that a client certificate's name
// stands for (Authenticator.AuthenticateName).
type NameAuthenticator interface {
	AuthenticateName(ctx context.Context, name string) (*Principal, error)
}

// CertPrincipal maps a verified client certificate to a key, for the HTTP
// API and the Kafka listener alike: its common name, then its DNS, email
// and URI names, the first that names a live key. It fails with
// ErrUnknownName when none does.
func CertPrincipal(ctx context.Context, authn NameAuthenticator, cert *x509.Certificate) (*Principal, error) {
	names := append([]string{cert.Subject.CommonName}, cert.DNSNames...)
	names = append(names, cert.EmailAddresses...)
	for _, u := range cert.URIs {
		names = append(names, u.String())
	}
	err := ErrUnknownName
	for _, n := range names {
		if n == "" {
			continue
		}
		var p *Principal
		if p, err = authn.AuthenticateName(ctx, n); err == nil || !errors.Is(err, ErrUnknownName) {
			return p, err
		}
	}
	return nil, err
}
