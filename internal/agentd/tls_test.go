package agentd_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"silt/agent"
	"silt/auth"
	"silt/client"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/internal/testcerts"
)

// An agent with --tls-cert, --tls-key and --tls-client-ca serves HTTPS
// over HTTP/2; a client certificate whose CN names a live key
// authenticates as it, without a token; --metrics-listen moves /metrics.
func TestTLSMutualAndMetricsListener(t *testing.T) {
	ca := testcerts.NewCA(t, "agents")
	srv := ca.Server(t, "agent")
	clients := testcerts.NewCA(t, "clients")
	admin, _, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	a := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) {
		c.HTTP.Auth = agent.AuthRequired
		c.BootstrapAdminKey = admin
		c.TLS.CertFile, c.TLS.KeyFile, c.TLS.ClientCAFile = srv.CertFile, srv.KeyFile, clients.File
		c.MetricsListen = "127.0.0.1:0"
	}})
	if !strings.HasPrefix(a.URL, "https://") {
		t.Fatalf("URL %s", a.URL)
	}
	ctx := context.Background()
	tlsCfg, err := client.TLSConfig(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	adminCl, err := client.New(a.URL, client.WithTLSConfig(tlsCfg), client.WithToken(admin))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adminCl.CreateKey(ctx, client.NewKey{Name: "orders-app", Allow: []string{"produce:topic:orders"}}); err != nil {
		t.Fatal(err)
	}

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	get := func(path string, certs ...tls.Certificate) (int, string, string) {
		t.Helper()
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(a.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Proto, string(b)
	}
	status, proto, body := get("/v1/whoami", clients.Client(t, "app", "orders-app").TLS(t))
	var w agent.WhoAmIResponse
	if status != http.StatusOK || proto != "HTTP/2.0" || json.Unmarshal([]byte(body), &w) != nil || w.Name != "orders-app" {
		t.Fatalf("whoami with a client certificate: %d %s %s", status, proto, body)
	}
	if status, _, body := get("/v1/whoami", clients.Client(t, "nobody", "nobody").TLS(t)); status != http.StatusUnauthorized {
		t.Fatalf("a certificate naming no key: %d %s", status, body)
	}
	if status, _, _ := get("/v1/whoami"); status != http.StatusUnauthorized {
		t.Fatalf("neither certificate nor key: %d", status)
	}
	if status, _, _ := get("/healthz"); status != http.StatusOK {
		t.Fatalf("healthz over TLS: %d", status)
	}
	// /metrics lives on its own listener, and not on the API's.
	if status, _, _ := get("/metrics"); status != http.StatusUnauthorized {
		t.Fatalf("/metrics on the API listener without a key: %d", status)
	}
	resp, err := http.Get("http://" + a.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "silt_tls_certificate_not_after_seconds") || strings.Contains(string(b), admin) {
		t.Fatalf("metrics listener: %d", resp.StatusCode)
	}
}
