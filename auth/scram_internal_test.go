package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"silt/metadata"
)

func b64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RFC 7677's SCRAM-SHA-256 example: the credential derived from the
// password checks the client's proof and signs the server's answer.
func TestSCRAMRFC7677(t *testing.T) {
	cred, err := scramCredential(SCRAMSHA256, "pencil", b64(t, "W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)
	if err != nil {
		t.Fatal(err)
	}
	const nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	authMessage := "n=user,r=rOprNGfwEbeRWgbNEkqO," + "r=" + nonce + ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096," + "c=biws,r=" + nonce
	sig, ok := scramVerify(sha256.New, cred, []byte(authMessage), b64(t, "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="))
	if !ok || base64.StdEncoding.EncodeToString(sig) != "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=" {
		t.Fatalf("ok %v, server signature %s", ok, base64.StdEncoding.EncodeToString(sig))
	}
	// Another proof fails.
	bad := b64(t, "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
	bad[0] ^= 1
	if _, ok := scramVerify(sha256.New, cred, []byte(authMessage), bad); ok {
		t.Fatal("a wrong proof passed")
	}
}

// scramStore is a store with one key.
type scramStore struct{ k metadata.Key }

func (s scramStore) GetKey(_ context.Context, id string) (metadata.Key, error) {
	if id != s.k.ID {
		return metadata.Key{}, metadata.ErrKeyNotFound
	}
	return s.k, nil
}
func (scramStore) GetKeyByName(context.Context, string) (metadata.Key, error) {
	return metadata.Key{}, metadata.ErrKeyNotFound
}
func (scramStore) TouchKeys(context.Context, []string) error { return nil }

// run plays a client mechanism against a server exchange.
func run(t *testing.T, a *Authenticator, mech string, m sasl.Mechanism) (*Principal, error) {
	t.Helper()
	ctx := context.Background()
	x, err := a.StartSCRAM(mech)
	if err != nil {
		t.Fatal(err)
	}
	sess, msg, err := m.Authenticate(ctx, "silt:9092")
	if err != nil {
		t.Fatal(err)
	}
	for {
		out, p, err := x.Step(ctx, msg)
		if err != nil {
			return nil, err
		}
		done, next, err := sess.Challenge(out)
		if err != nil {
			t.Fatalf("the client refused the server: %v", err)
		}
		if done {
			if p == nil {
				t.Fatal("the client is done before the server")
			}
			return p, nil
		}
		msg = next
	}
}

// franz-go's SCRAM client authenticates with a key made by Keys, with both
// mechanisms; a wrong key, another key's id and a key without
// credentials do not.
func TestSCRAMExchange(t *testing.T) {
	token, id, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	creds, err := scramCredentials(token)
	if err != nil {
		t.Fatal(err)
	}
	store := scramStore{metadata.Key{ID: id, Name: "app", SecretHash: HashToken(token), SCRAM: creds}}
	a, err := New(DefaultConfig(), Deps{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	for _, mech := range SCRAMMechanisms {
		client := scram.Auth{User: id, Pass: token}
		m := client.AsSha256Mechanism()
		if mech == SCRAMSHA512 {
			m = client.AsSha512Mechanism()
		}
		p, err := run(t, a, mech, m)
		if err != nil || p.KeyID != id || p.Name != "app" {
			t.Fatalf("%s: %v %+v", mech, err, p)
		}
	}
	other, _, _ := NewToken()
	if _, err := run(t, a, SCRAMSHA256, scram.Auth{User: id, Pass: other}.AsSha256Mechanism()); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("wrong key: %v", err)
	}
	if _, err := run(t, a, SCRAMSHA256, scram.Auth{User: "0123456789abcdef", Pass: token}.AsSha256Mechanism()); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("unknown id: %v", err)
	}
	if _, err := run(t, a, SCRAMSHA256, scram.Auth{User: "app", Pass: token}.AsSha256Mechanism()); err == nil || !strings.Contains(err.Error(), "16 hex digits") {
		t.Fatalf("a name for the user: %v", err)
	}
	old := scramStore{metadata.Key{ID: id, Name: "app", SecretHash: HashToken(token)}}
	a2, err := New(DefaultConfig(), Deps{Store: old})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, a2, SCRAMSHA256, scram.Auth{User: id, Pass: token}.AsSha256Mechanism()); !errors.Is(err, ErrNoSCRAM) {
		t.Fatalf("a key without credentials: %v", err)
	}
	// Malformed messages.
	x, _ := a.StartSCRAM(SCRAMSHA256)
	for _, msg := range []string{"", "p=tls-unique,,n=" + id + ",r=abc", "n,,r=abc,n=" + id, "n,,m=ext,n=" + id + ",r=a", "n,,n=" + id + ",r=a,tokenauth=true"} {
		x, _ = a.StartSCRAM(SCRAMSHA256)
		if _, _, err := x.Step(context.Background(), []byte(msg)); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("%q: %v", msg, err)
		}
	}
	_ = x
}
