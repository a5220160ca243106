package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"silt/agent"
	"silt/auth"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/metadata/metadatatest"
)

// lastLine is the last non-empty line of out.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	return lines[len(lines)-1]
}

// Offline, `silt keys create` prints a working key alone on its last line.
func TestKeysCreateOffline(t *testing.T) {
	ctx := context.Background()
	url := metadatatest.URL(t)
	var out, errb bytes.Buffer
	code := run(ctx, []string{"keys", "create", "--database-url", url, "--name", "orders-app",
		"--allow", "produce:topic:orders", "--allow", "consume:topic:logs-*", "--requests-per-sec", "50"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errb.String())
	}
	token := lastLine(out.String())
	if _, ok := auth.ParseToken(token); !ok {
		t.Fatalf("last line %q is not a key; output:\n%s", token, out.String())
	}
	store := metadatatest.Open(t, url, nil)
	authn, err := auth.New(auth.DefaultConfig(), auth.Deps{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	p, err := authn.Authenticate(ctx, token)
	if err != nil || p.Name != "orders-app" || p.Admin || !p.Allows(auth.OpProduce, auth.ResourceTopic, "orders") ||
		!p.Allows(auth.OpConsume, auth.ResourceTopic, "logs-x") || p.Allows(auth.OpConsume, auth.ResourceTopic, "orders") ||
		p.Quota.RequestsPerSec != 50 {
		t.Fatalf("%+v %v", p, err)
	}

	// --replace revokes the live key of that name; list shows both.
	out.Reset()
	if code := run(ctx, []string{"keys", "create", "--database-url", url, "--name", "orders-app", "--admin", "--replace"}, &out, &errb); code != 0 {
		t.Fatalf("replace: exit %d: %s", code, errb.String())
	}
	if _, err := authn.Authenticate(ctx, lastLine(out.String())); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run(ctx, []string{"keys", "list", "--database-url", url, "--output", "json"}, &out, &errb); code != 0 || strings.Count(out.String(), `"revoked_at"`) != 1 {
		t.Fatalf("list: exit %d: %s %s", code, out.String(), errb.String())
	}
	if strings.Contains(out.String(), token) {
		t.Fatal("the list shows a secret")
	}

	// Bad input fails without creating anything.
	for _, bad := range [][]string{
		{"keys", "create", "--database-url", url, "--name", "x"},
		{"keys", "create", "--database-url", url, "--name", "x", "--allow", "write:topic:x"},
		{"keys", "create", "--database-url", url, "--allow", "produce:topic:x"},
	} {
		if code := run(ctx, bad, &out, &errb); code == 0 {
			t.Errorf("%q succeeded", bad)
		}
	}
	out.Reset()
	if code := run(ctx, []string{"keys", "generate"}, &out, &errb); code != 0 {
		t.Fatal("generate failed")
	}
	if _, ok := auth.ParseToken(strings.TrimSpace(out.String())); !ok {
		t.Fatalf("generate printed %q", out.String())
	}
}

// Online, the same commands go through an agent with an admin --token.
func TestKeysOnline(t *testing.T) {
	ctx := context.Background()
	admin, _, _ := auth.NewToken()
	a := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) {
		c.HTTP.Auth = agent.AuthRequired
		c.BootstrapAdminKey = admin
	}})
	var out, errb bytes.Buffer
	if code := run(ctx, []string{"keys", "create", "--url", a.URL, "--token", admin, "--name", "cli-app", "--allow", "consume:topic:logs-*"}, &out, &errb); code != 0 {
		t.Fatalf("create: exit %d: %s", code, errb.String())
	}
	token := lastLine(out.String())
	id, ok := auth.ParseToken(token)
	if !ok {
		t.Fatalf("last line %q", token)
	}
	out.Reset()
	t.Setenv("SILT_TOKEN", token)
	if code := run(ctx, []string{"keys", "whoami", "--url", a.URL}, &out, &errb); code != 0 || !strings.Contains(out.String(), "cli-app") || !strings.Contains(out.String(), "consume:topic:logs-*") {
		t.Fatalf("whoami (SILT_TOKEN): exit %d: %s %s", code, out.String(), errb.String())
	}
	// The new key is not an admin: it may not list keys.
	errb.Reset()
	if code := run(ctx, []string{"keys", "list", "--url", a.URL}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "403") {
		t.Fatalf("list with a non-admin key: exit %d: %s", code, errb.String())
	}
	out.Reset()
	if code := run(ctx, []string{"keys", "list", "--url", a.URL, "--token", admin}, &out, &errb); code != 0 || !strings.Contains(out.String(), id) {
		t.Fatalf("list: exit %d: %s %s", code, out.String(), errb.String())
	}
	if code := run(ctx, []string{"keys", "revoke", id, "--url", a.URL, "--token", admin}, &out, &errb); code != 0 {
		t.Fatalf("revoke: exit %d: %s", code, errb.String())
	}
	errb.Reset()
	if code := run(ctx, []string{"topic", "list", "--url", a.URL}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "401") {
		t.Fatalf("a revoked key: exit %d: %s", code, errb.String())
	}
}

func TestDevListensOnLoopbackOnly(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:8080", "[::1]:0", "localhost:9"} {
		if err := checkDevListen("--listen", ok, agent.AuthNone); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{":8080", "0.0.0.0:8080", "10.0.0.1:80"} {
		if err := checkDevListen("--listen", bad, agent.AuthNone); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if err := checkDevListen("--listen", ":8080", agent.AuthRequired); err != nil {
		t.Errorf("with keys required any address will do: %v", err)
	}
	// The Kafka listener of silt dev is anonymous too: refused before
	// anything starts.
	var out, errb strings.Builder
	if code := run(t.Context(), []string{"dev", "--data-dir", t.TempDir(), "--kafka-listen", "0.0.0.0:9092"}, &out, &errb); code == 0 ||
		!strings.Contains(errb.String(), "--kafka-listen") || !strings.Contains(errb.String(), "loopback only") {
		t.Fatalf("silt dev --kafka-listen 0.0.0.0:9092: exit %d: %s", code, errb.String())
	}
}
