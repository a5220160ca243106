package tlsreload_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"silt/internal/testcerts"
	"silt/internal/tlsreload"
)

func serve(t *testing.T, r *tlsreload.Reloader) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		name := "-"
		if req.TLS != nil && len(req.TLS.VerifiedChains) > 0 {
			name = req.TLS.VerifiedChains[0][0].Subject.CommonName
		}
		_, _ = io.WriteString(w, req.Proto+" "+name)
	})}
	go func() { _ = srv.Serve(tls.NewListener(ln, r.ServerConfig())) }()
	t.Cleanup(func() { srv.Close() })
	return "https://" + ln.Addr().String()
}

func get(t *testing.T, url string, roots *x509.CertPool, certs ...tls.Certificate) (string, *x509.Certificate, error) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp.TLS.PeerCertificates[0], err
}

// The certificate is reloaded when its files change; HTTP/2 is offered; a
// client certificate of the client CA is verified and one of another CA
// refused, and clients without one still connect.
func TestReloadAndMutualTLS(t *testing.T) {
	ca := testcerts.NewCA(t, "test")
	srvPair := ca.Server(t, "server")
	clientCA := testcerts.NewCA(t, "clients")
	client := clientCA.Client(t, "client", "orders-app")
	stranger := testcerts.NewCA(t, "strangers").Client(t, "stranger", "orders-app")

	cfg := tlsreload.DefaultConfig()
	cfg.CertFile, cfg.KeyFile, cfg.ClientCAFile = srvPair.CertFile, srvPair.KeyFile, clientCA.File
	r, err := tlsreload.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, r)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)

	body, peer, err := get(t, url, roots)
	if err != nil || body != "HTTP/2.0 -" || peer.SerialNumber.Cmp(srvPair.Cert.SerialNumber) != 0 {
		t.Fatalf("without a client certificate: %q %v", body, err)
	}
	if body, _, err := get(t, url, roots, client.TLS(t)); err != nil || body != "HTTP/2.0 orders-app" {
		t.Fatalf("with a client certificate: %q %v", body, err)
	}
	// Go's client sends no certificate the server's CAs did not sign...
	if body, _, err := get(t, url, roots, stranger.TLS(t)); err != nil || body != "HTTP/2.0 -" {
		t.Fatalf("with a certificate of another CA: %q %v", body, err)
	}
	// ...and the server refuses one that is sent anyway.
	forced := stranger.TLS(t)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &forced, nil }}}
	if _, err := (&http.Client{Transport: tr}).Get(url); err == nil {
		t.Fatal("a client certificate of another CA was accepted")
	}
	tls11 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS11}}
	if _, err := (&http.Client{Transport: tls11}).Get(url); err == nil {
		t.Fatal("TLS 1.1 was accepted")
	}

	// Rotate: new files under the same names.
	next := ca.Server(t, "next")
	for from, to := range map[string]string{next.CertFile: srvPair.CertFile, next.KeyFile: srvPair.KeyFile} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to+".tmp", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(to+".tmp", to); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Check(); err != nil {
		t.Fatal(err)
	}
	if _, peer, err := get(t, url, roots); err != nil || peer.SerialNumber.Cmp(next.Cert.SerialNumber) != 0 {
		t.Fatalf("after rotation: %v (serial %v, want %v)", err, peer.SerialNumber, next.Cert.SerialNumber)
	}

	// A broken file keeps the last good certificate.
	if err := os.WriteFile(srvPair.KeyFile, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Check(); err == nil {
		t.Fatal("a broken key was loaded")
	}
	if _, peer, err := get(t, url, roots); err != nil || peer.SerialNumber.Cmp(next.Cert.SerialNumber) != 0 {
		t.Fatalf("after a failed reload: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, bad := range []tlsreload.Config{
		{CertFile: "a", Interval: time.Second},
		{KeyFile: "b", Interval: time.Second},
		{ClientCAFile: "c", Interval: time.Second},
		{CertFile: "a", KeyFile: "b"},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, err := tlsreload.New(tlsreload.Config{CertFile: "/nonexistent", KeyFile: "/nonexistent", Interval: time.Second}, nil, nil); err == nil || errors.Is(err, nil) {
		t.Fatal("missing files were accepted")
	}
}
