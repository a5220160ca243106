package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"silt/auth"
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
