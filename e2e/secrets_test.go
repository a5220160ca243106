package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"silt/client"
	"silt/problem"
)

// TestNoSecretsInLogs captures every log line of a full run — three agents
// at debug level behind HAProxy, on a database URL with a password; keys
// created, used, refused, forged and revoked; Postgres connections killed
// under them; an agent killed and restarted; the CLI — and finds no key
// secret and no database password in any of them, nor in /metrics,
// /v1/cluster, /readyz or the error bodies.
func TestNoSecretsInLogs(t *testing.T) {
	var pw [12]byte
	_, _ = rand.Read(pw[:])
	password := "pw" + hex.EncodeToString(pw[:])
	var dbURL string
	c := startLBClusterWith(t, lbOptions{agents: 3, env: []string{"SILT_LOG_LEVEL=debug"}, dbURL: func(u string) string {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		// The test Postgres trusts loopback: the password is not checked,
		// but every agent is given it.
		p.User = url.UserPassword(p.User.Username(), password)
		dbURL = p.String()
		return dbURL
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	secrets := map[string]string{"database password": password, "admin key": c.AdminKey, "admin key secret": secretOf(c.AdminKey)}
	var bodies bytes.Buffer // every response body and header of the run
	record := func(b []byte, h http.Header) {
		bodies.Write(b)
		for k, v := range h {
			bodies.WriteString(k + ": " + strings.Join(v, ",") + "\n")
		}
	}

	admin := lbClient(t, c, newAgentTally())
	if _, err := admin.CreateTopic(ctx, client.NewTopic{Name: "leak", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	created, err := admin.CreateKey(ctx, client.NewKey{Name: "leaky", Allow: []string{"produce,consume:topic:leak"}})
	if err != nil {
		t.Fatal(err)
	}
	secrets["app key"], secrets["app key secret"] = created.Token, secretOf(created.Token)
	app := lbClientAs(t, c, newAgentTally(), created.Token)
	if _, err := app.Produce(ctx, "leak", []client.Message{{Value: []byte(`"v"`)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Fetch(ctx, "leak", 0, 0, client.FetchOptions{}); err != nil {
		t.Fatal(err)
	}

	// The CLI, online: its stderr is a log too (stdout shows the new key
	// by design).
	var cliErr bytes.Buffer
	cli := exec.CommandContext(ctx, siltBinary(t), "keys", "create", "--url", c.LBURL, "--name", "cli-made", "--allow", "consume:topic:leak")
	cli.Env = append(os.Environ(), "SILT_TOKEN="+c.AdminKey)
	var cliOut bytes.Buffer
	cli.Stdout, cli.Stderr = &cliOut, &cliErr
	if err := cli.Run(); err != nil {
		t.Fatalf("silt keys create: %v %s", err, cliErr.String())
	}
	cliKey := strings.TrimSpace(cliOut.String()[strings.LastIndex(strings.TrimSpace(cliOut.String()), "\n")+1:])
	secrets["cli key"], secrets["cli key secret"] = cliKey, secretOf(cliKey)

	// Refusals: a forged secret for a real id, junk, a key without the
	// ACL, a bad scheme; then the key revoked and used again.
	forged := created.Token[:len(created.Token)-8] + "00000000"
	for _, h := range []string{"Bearer " + forged, "Bearer " + created.Token + "x", "Basic " + created.Token, "Bearer " + cliKey} {
		for _, path := range []string{"/v1/topics/leak/partitions/0/records", "/v1/keys", "/v1/nowhere"} {
			status, hdr, b := rawGet(t, c.LBURL+path, h)
			record(b, hdr)
			if status/100 == 2 && !strings.HasSuffix(h, cliKey) {
				t.Fatalf("%s with %q: %d", path, h[:10], status)
			}
		}
	}
	if _, err := admin.RevokeKey(ctx, created.Key.ID); err != nil {
		t.Fatal(err)
	}
	if err := waitUntil(ctx, 10*time.Second, func() bool {
		_, err := app.Fetch(ctx, "leak", 0, 0, client.FetchOptions{})
		return client.IsCode(err, problem.CodeUnauthenticated)
	}); err != nil {
		t.Fatal("the revoked key still works")
	}

	// Postgres drops every agent connection: reconnection logs carry the
	// drivers' errors.
	admConn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admConn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	admConn.Close(ctx)
	// A crash and a restart: start-up logs, lease moves.
	if err := c.KillAgent(ctx, "agent2"); err != nil {
		t.Fatal(err)
	}
	if err := c.StartAgent(ctx, "agent2"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Produce(ctx, "leak", []client.Message{{Value: []byte(`"after"`)}}); err != nil {
		t.Fatal(err)
	}
	// What agents show: metrics, cluster, readiness, audit.
	for _, a := range c.Agents() {
		for _, path := range []string{"/metrics", "/v1/cluster", "/readyz", "/v1/audit", "/v1/keys"} {
			_, hdr, b := rawGetTLS(t, a.URL+path, "Bearer "+c.AdminKey)
			record(b, hdr)
		}
	}

	// Look everywhere.
	var logs []string
	for _, id := range c.AgentIDs() {
		logs = append(logs, c.AgentLog(id))
	}
	logs = append(logs, c.LB().Log)
	sources := map[string][]byte{"cli stderr": cliErr.Bytes(), "responses": bodies.Bytes()}
	lines := 0
	for _, path := range logs {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sources[path] = b
		lines += bytes.Count(b, []byte("\n"))
	}
	if lines < 50 {
		t.Fatalf("only %d log lines: is the run logging?", lines)
	}
	for where, b := range sources {
		for what, secret := range secrets {
			if secret != "" && bytes.Contains(b, []byte(secret)) {
				i := bytes.Index(b, []byte(secret))
				t.Errorf("%s holds the %s: ...%s...", where, what, b[max(0, i-200):i])
			}
		}
	}
	if !bytes.Contains(sources[c.AgentLog("agent1")], []byte("xxxxx@")) {
		t.Error("the agents do not log the database URL with its password redacted")
	}
	t.Logf("%d log lines, %d bytes of responses: no secret", lines, bodies.Len())
}

// secretOf is a key's secret part.
func secretOf(token string) string {
	return token[strings.LastIndex(token, "_")+1:]
}

func rawGet(t *testing.T, url, authorization string) (int, http.Header, []byte) {
	t.Helper()
	return rawGetTLS(t, url, authorization)
}

func rawGetTLS(t *testing.T, url, authorization string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", authorization)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}
