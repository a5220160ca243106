package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"silt/client"
	"silt/internal/testcerts"
	"silt/localstack"
	"silt/problem"
)

// TestLBSecurityTLS runs three agents behind HAProxy with TLS everywhere
// (client to HAProxy, HAProxy to the agents, verified against a private
// CA) and keys required. A key limited to one topic produces and consumes
// it and gets 403 elsewhere; revoked while its SSE stream is open through
// the load balancer, the stream ends and every agent refuses the key
// (401) within 5 s.
func TestLBSecurityTLS(t *testing.T) {
	ca := testcerts.NewCA(t, "silt-e2e")
	agentCert := ca.Server(t, "agent")
	lbCert := ca.Server(t, "lb")
	c := startLBClusterTLS(t, 3, &localstack.ClusterTLS{CertFile: agentCert.CertFile, KeyFile: agentCert.KeyFile,
		CAFile: ca.File, FrontCert: lbCert.Combined})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tally := newAgentTally()
	admin := lbClient(t, c, tally)
	for _, name := range []string{"sec-orders", "sec-other"} {
		if _, err := admin.CreateTopic(ctx, client.NewTopic{Name: name, Partitions: 1}); err != nil {
			t.Fatal(err)
		}
	}
	created, err := admin.CreateKey(ctx, client.NewKey{Name: "orders-app", Allow: []string{"produce,consume:topic:sec-orders"}})
	if err != nil {
		t.Fatal(err)
	}
	app := lbClientAs(t, c, tally, created.Token)
	one := []client.Message{{Partition: client.Partition(0), Value: []byte(`"hello"`)}}

	// Its own topic: produce and consume, over TLS through HAProxy.
	if _, err := app.Produce(ctx, "sec-orders", one); err != nil {
		t.Fatal(err)
	}
	res, err := app.Fetch(ctx, "sec-orders", 0, 0, client.FetchOptions{})
	if err != nil || len(res.Records) != 1 {
		t.Fatalf("fetch its topic: %+v %v", res, err)
	}
	// Everything else: 403.
	for what, call := range map[string]func() error{
		"produce elsewhere": func() error { _, err := app.Produce(ctx, "sec-other", one); return err },
		"fetch elsewhere":   func() error { _, err := app.Fetch(ctx, "sec-other", 0, 0, client.FetchOptions{}); return err },
		"delete its topic":  func() error { return app.DeleteTopic(ctx, "sec-orders") },
		"list keys":         func() error { _, err := app.ListKeys(ctx); return err },
	} {
		if err := call(); !client.IsCode(err, problem.CodeForbidden) {
			t.Errorf("%s: %v, want 403 forbidden", what, err)
		}
	}
	topics, err := app.ListTopics(ctx)
	if err != nil || len(topics) != 1 || topics[0].Name != "sec-orders" {
		t.Fatalf("the key's topic list: %+v %v", topics, err)
	}

	// The web console through the load balancer: its files without a key,
	// its figures with one.
	consoleThroughLB(t, c, created.Token)

	// An SSE stream through the load balancer, following the topic.
	streamCtx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	got := make(chan client.Record, 16)
	ended := make(chan error, 1)
	go func() {
		for rec, err := range app.Stream(streamCtx, "sec-orders", 0, client.Earliest, client.StreamOptions{MaxBackoff: 200 * time.Millisecond}) {
			if err != nil {
				ended <- err
				return
			}
			got <- rec
		}
		ended <- errors.New("the stream stopped without an error")
	}()
	select {
	case <-got:
	case err := <-ended:
		t.Fatalf("stream: %v", err)
	case <-ctx.Done():
		t.Fatal("no record on the stream")
	}

	// Revoke it, and watch the stream and every agent.
	revoked := time.Now()
	if _, err := admin.RevokeKey(ctx, created.Key.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		var e *client.Error
		if !errors.As(err, &e) || e.Status != http.StatusUnauthorized {
			t.Fatalf("the stream ended with %v, want 401", err)
		}
		t.Logf("the stream through haproxy ended %s after the revocation", time.Since(revoked).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the stream did not end within 5 s of the revocation")
	}
	for _, a := range c.Agents() {
		direct, err := client.New(a.URL, client.WithTLSConfig(c.ClientTLS), client.WithToken(created.Token))
		if err != nil {
			t.Fatal(err)
		}
		left := 5*time.Second - time.Since(revoked)
		err = waitUntil(ctx, max(left, 0), func() bool {
			_, err := direct.Fetch(ctx, "sec-orders", 0, 0, client.FetchOptions{})
			return client.IsCode(err, problem.CodeUnauthenticated)
		})
		if err != nil {
			t.Fatalf("agent %s still accepts the revoked key 5 s after the revocation", a.ID)
		}
	}
	t.Logf("all %d agents refuse the key %s after the revocation", len(c.Agents()), time.Since(revoked).Round(time.Millisecond))
	if failed := tally.failed(); len(failed) > 0 {
		t.Logf("failed responses through haproxy (retried): %v", failed)
	}
}

// consoleThroughLB fetches the console's page and a script through the
// load balancer without a key, and /v1/stats with and without one.
func consoleThroughLB(t *testing.T, c *localstack.Cluster, token string) {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = c.ClientTLS.Clone()
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	get := func(path, key string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, c.LBURL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type")
	}
	if status, ctype := get("/ui/", ""); status != http.StatusOK || !strings.HasPrefix(ctype, "text/html") {
		t.Fatalf("/ui/ through haproxy: %d %s", status, ctype)
	}
	if status, ctype := get("/ui/app.js", ""); status != http.StatusOK || !strings.HasPrefix(ctype, "text/javascript") {
		t.Fatalf("/ui/app.js through haproxy: %d %s", status, ctype)
	}
	if status, _ := get("/v1/stats", ""); status != http.StatusUnauthorized {
		t.Fatalf("/v1/stats without a key: %d", status)
	}
	if status, _ := get("/v1/stats", token); status != http.StatusForbidden {
		t.Fatalf("/v1/stats with a key that may not describe the cluster: %d", status)
	}
	if status, _ := get("/v1/stats", c.AdminKey); status != http.StatusOK {
		t.Fatalf("/v1/stats with the admin key: %d", status)
	}
}
