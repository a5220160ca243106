package kafka_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"silt/agent"
	"silt/auth"
	"silt/client"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	kc "silt/internal/kafkaclients"
	"silt/internal/testcerts"
)

// secure is an agent requiring keys, with TLS (and client certificates
// from clientCA) on both listeners.
type secure struct {
	*agenttest.Agent
	admin  string
	caFile string
	tls    *tls.Config
	http   *client.Client
	certCA *testcerts.CA
}

func setupSecure(t *testing.T) *secure {
	t.Helper()
	ca := testcerts.NewCA(t, "kafka")
	srv := ca.Server(t, "agent")
	clients := testcerts.NewCA(t, "clients")
	admin, _, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	a := setup(t, func(c *agentd.Config) {
		groupConfig(c)
		c.HTTP.Auth = agent.AuthRequired
		c.BootstrapAdminKey = admin
		c.TLS.CertFile, c.TLS.KeyFile, c.TLS.ClientCAFile = srv.CertFile, srv.KeyFile, clients.File
	})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	tlsCfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	hc, err := client.New(a.URL, client.WithTLSConfig(tlsCfg), client.WithToken(admin))
	if err != nil {
		t.Fatal(err)
	}
	return &secure{Agent: a, admin: admin, caFile: ca.File, tls: tlsCfg, http: hc, certCA: clients}
}

// as is a franz-go client authenticating with key over TLS ("" for no
// SASL), closed at cleanup.
func (s *secure) as(t *testing.T, key string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	base := []kgo.Opt{kgo.DialTLSConfig(s.tls.Clone()), kgo.RetryTimeout(3 * time.Second)}
	if key != "" {
		id, _ := auth.ParseToken(key)
		if id == "" {
			id = "0123456789abcdef"
		}
		base = append(base, kgo.SASL(plain.Auth{User: id, Pass: key}.AsMechanism()))
	}
	return newClient(t, s.Agent, append(base, opts...)...)
}

// SASL PLAIN over TLS maps onto API keys; every Kafka API is checked
// against the key's ACLs; a revoked key's connections close.
func TestSASLPlainOverTLS(t *testing.T) {
	s := setupSecure(t)
	ctx := ctxT(t, time.Minute)
	adm := kadm.NewClient(s.as(t, s.admin))
	createTopic(t, adm, "app-orders", 2, nil)
	createTopic(t, adm, "payroll", 1, nil)
	created, err := s.http.CreateKey(ctx, client.NewKey{Name: "orders-app",
		Allow: []string{"produce,consume:topic:app-*", "consume:group:app-*"}})
	if err != nil {
		t.Fatal(err)
	}
	app := s.as(t, created.Token)
	if err := app.ProduceSync(ctx, &kgo.Record{Topic: "app-orders", Value: []byte("ok")}).FirstErr(); err != nil {
		t.Fatalf("produce to its topic: %v", err)
	}
	if err := app.ProduceSync(ctx, &kgo.Record{Topic: "payroll", Value: []byte("no")}).FirstErr(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("produce elsewhere: %v", err)
	}
	appAdm := kadm.NewClient(app)
	// Metadata lists only what the key may describe.
	topics, err := appAdm.ListTopics(ctx)
	if err != nil || len(topics) != 1 || !topics.Has("app-orders") {
		t.Fatalf("list topics: %v %v", err, topics.Names())
	}
	res, err := appAdm.CreateTopics(ctx, 1, -1, nil, "app-new")
	if err != nil || !errors.Is(res["app-new"].Err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("create: %v %+v", err, res)
	}
	if _, err := appAdm.FetchOffsets(ctx, "payroll-readers"); !errors.Is(err, kerr.GroupAuthorizationFailed) {
		t.Fatalf("another group's offsets: %v", err)
	}
	// librdkafka (kcat) and kafka-python (whose SASL tokens go unframed
	// after a version 0 handshake) authenticate the same way.
	b := kc.Broker{Addr: s.KafkaAddr, CAFile: s.caFile}.WithKey(created.Token)
	var md struct {
		Topics []struct {
			Topic string `json:"topic"`
		} `json:"topics"`
	}
	if err := json.Unmarshal(kc.Run(t, nil, "kcat", append(b.KcatArgs(), "-L", "-J")...), &md); err != nil ||
		len(md.Topics) != 1 || md.Topics[0].Topic != "app-orders" {
		t.Fatalf("kcat -L as the app: %v %+v", err, md)
	}
	sent := kc.Records(5, "sasl", true)
	if acked := kc.KafkaPythonProduce(t, b, "app-orders", "none", sent); len(acked) != len(sent) {
		t.Fatalf("kafka-python acknowledged %d of %d", len(acked), len(sent))
	}
	// Its own group works: join, sync, commit.
	member := startMember(t, "app", s.Agent, "app-group", "app-orders", kgo.DialTLSConfig(s.tls.Clone()),
		kgo.SASL(plain.Auth{User: created.Key.ID, Pass: created.Token}.AsMechanism()))
	waitFor(t, "the app's member reading its record", 30*time.Second, func() bool { return member.keys()[""] == 1 })
	// The audit log has the admin's topic creations, made over Kafka.
	entries, err := s.http.Audit(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	creates := 0
	for _, e := range entries {
		if e.Action == auth.ActionTopicCreate {
			creates++
		}
	}
	if creates != 2 {
		t.Fatalf("audit: %d topic creations, want 2: %+v", creates, entries)
	}

	// A wrong password, a user name that is not the key's id.
	other, _, _ := auth.NewToken()
	if _, err := kadm.NewClient(s.as(t, other)).ListTopics(ctx); !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Fatalf("unknown key: %v", err)
	}
	mismatched := newClient(t, s.Agent, kgo.DialTLSConfig(s.tls.Clone()), kgo.RetryTimeout(3*time.Second),
		kgo.SASL(plain.Auth{User: "0123456789abcdef", Pass: created.Token}.AsMechanism()))
	if _, err := kadm.NewClient(mismatched).ListTopics(ctx); !errors.Is(err, kerr.SaslAuthenticationFailed) ||
		!strings.Contains(err.Error(), "user name") {
		t.Fatalf("user name not the key's id: %v", err)
	}

	// Revoked: the app's connections close, and reconnecting fails.
	if _, err := s.http.RevokeKey(ctx, created.Key.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the revoked key refused", 30*time.Second, func() bool {
		_, err := appAdm.ListTopics(ctx)
		return errors.Is(err, kerr.SaslAuthenticationFailed)
	})
	again := s.as(t, created.Token, kgo.RecordDeliveryTimeout(3*time.Second))
	if err := again.ProduceSync(ctx, &kgo.Record{Topic: "app-orders", Value: []byte("after")}).FirstErr(); err == nil {
		t.Fatal("a revoked key produced")
	}
}

// Before authenticating, a connection gets ApiVersions and the SASL
// requests only; anything else closes it. Handshake errors are Kafka's.
func TestUnauthenticatedConnection(t *testing.T) {
	s := setupSecure(t)
	dial := func() *rawConn {
		nc, err := tls.Dial("tcp", s.KafkaAddr, s.tls)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		return &rawConn{t: t, nc: nc}
	}
	c := dial()
	if r := c.do(kmsg.NewPtrApiVersionsRequest(), 3).(*kmsg.ApiVersionsResponse); r.ErrorCode != 0 {
		t.Fatalf("ApiVersions: %d", r.ErrorCode)
	}
	corr := c.send(kmsg.NewPtrMetadataRequest())
	if err := c.receive(corr, kmsg.NewPtrMetadataResponse()); !errors.Is(err, io.EOF) {
		t.Fatalf("Metadata before SASL: %v, want the connection closed", err)
	}
	// An unknown mechanism.
	c = dial()
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Mechanism = "GSSAPI"
	if r := c.do(hs, 1).(*kmsg.SASLHandshakeResponse); r.ErrorCode != kerr.UnsupportedSaslMechanism.Code || len(r.SupportedMechanisms) == 0 {
		t.Fatalf("GSSAPI: %+v", r)
	}
	// PLAIN with a bad token: the answer says why, then the connection
	// closes.
	c = dial()
	hs.Mechanism = "PLAIN"
	if r := c.do(hs, 1).(*kmsg.SASLHandshakeResponse); r.ErrorCode != 0 {
		t.Fatalf("PLAIN: %+v", r)
	}
	au := kmsg.NewPtrSASLAuthenticateRequest()
	au.SASLAuthBytes = []byte("\x00user\x00not-a-key")
	if r := c.do(au, 2).(*kmsg.SASLAuthenticateResponse); r.ErrorCode != kerr.SaslAuthenticationFailed.Code || r.ErrorMessage == nil {
		t.Fatalf("bad PLAIN: %+v", r)
	}
	corr = c.send(kmsg.NewPtrApiVersionsRequest())
	if err := c.receive(corr, kmsg.NewPtrApiVersionsResponse()); !errors.Is(err, io.EOF) {
		t.Fatalf("after a failed authentication: %v, want the connection closed", err)
	}
	// A client certificate naming a key authenticates without SASL.
	if _, err := s.http.CreateKey(ctxT(t, 10*time.Second), client.NewKey{Name: "cert-app", Allow: []string{"describe:topic:*"}}); err != nil {
		t.Fatal(err)
	}
	pair := s.certCA.Client(t, "cert-app", "cert-app")
	cfg := s.tls.Clone()
	cfg.Certificates = []tls.Certificate{pair.TLS(t)}
	certCl := newClient(t, s.Agent, kgo.DialTLSConfig(cfg), kgo.RetryTimeout(3*time.Second))
	if _, err := kadm.NewClient(certCl).ListTopics(context.Background()); err != nil {
		t.Fatalf("client certificate: %v", err)
	}
}

// SCRAM-SHA-256 and -512: the key's id and the key prove themselves
// without the key crossing the wire, with franz-go, kcat and kafka-python
// (unframed tokens); a wrong key fails.
func TestSASLSCRAM(t *testing.T) {
	s := setupSecure(t)
	ctx := ctxT(t, time.Minute)
	createTopic(t, kadm.NewClient(s.as(t, s.admin)), "scram-t", 1, nil)
	created, err := s.http.CreateKey(ctx, client.NewKey{Name: "scram-app", Allow: []string{"produce,consume:topic:scram-*"}})
	if err != nil {
		t.Fatal(err)
	}
	id := created.Key.ID
	for _, m := range []sasl.Mechanism{
		scram.Auth{User: id, Pass: created.Token}.AsSha256Mechanism(),
		scram.Auth{User: id, Pass: created.Token}.AsSha512Mechanism(),
	} {
		cl := newClient(t, s.Agent, kgo.DialTLSConfig(s.tls.Clone()), kgo.RetryTimeout(3*time.Second), kgo.SASL(m))
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "scram-t", Value: []byte(m.Name())}).FirstErr(); err != nil {
			t.Fatalf("%s: %v", m.Name(), err)
		}
	}
	other, _, _ := auth.NewToken()
	bad := newClient(t, s.Agent, kgo.DialTLSConfig(s.tls.Clone()), kgo.RetryTimeout(3*time.Second),
		kgo.SASL(scram.Auth{User: id, Pass: other}.AsSha256Mechanism()))
	if _, err := kadm.NewClient(bad).ListTopics(ctx); !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Fatalf("wrong key: %v", err)
	}
	b := kc.Broker{Addr: s.KafkaAddr, CAFile: s.caFile, Mechanism: auth.SCRAMSHA512}.WithKey(created.Token)
	kc.Run(t, []byte("from kcat\n"), "kcat", append(b.KcatArgs(), "-P", "-t", "scram-t")...)
	b.Mechanism = auth.SCRAMSHA256
	sent := kc.Records(3, "scram", true)
	if acked := kc.KafkaPythonProduce(t, b, "scram-t", "none", sent); len(acked) != len(sent) {
		t.Fatalf("kafka-python acknowledged %d of %d", len(acked), len(sent))
	}
	b.Password = other
	if _, err := kc.TryRun(t, nil, "kcat", append(b.KcatArgs(), "-L")...); err == nil || !strings.Contains(err.Error(), "SASL authentication error") {
		t.Fatalf("kcat with a wrong key: %v", err)
	}
}
