package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"silt/client"
)

// HAProxy's timeouts let the agent's longest requests through: a
// long-poll that waits the full 30 s answers 200 (not 504), and an SSE
// stream stays open while idle, across a heartbeat, and still delivers.
// Raw HTTP, so that no client retry could hide a cut connection.
func TestLBLongLivedRequests(t *testing.T) {
	c := startLBCluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin := lbClient(t, c, newAgentTally())
	const topic = "quiet"
	if _, err := admin.CreateTopic(ctx, client.NewTopic{Name: topic, Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr} // no timeout: the load balancer's are under test

	// A long-poll on partition 1, where nothing is ever produced.
	pollDone := make(chan error, 1)
	pollTook := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		url := fmt.Sprintf("%s/v1/topics/%s/partitions/1/records?offset=0&wait_ms=30000", c.LBURL, topic)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+c.AdminKey)
		resp, err := hc.Do(req)
		if err != nil {
			pollDone <- err
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		took := time.Since(start)
		switch {
		case resp.StatusCode != http.StatusOK:
			pollDone <- fmt.Errorf("long-poll through haproxy: %d after %s: %s", resp.StatusCode, took, body)
		case took < 25*time.Second:
			pollDone <- fmt.Errorf("long-poll answered after %s, before its wait: %s", took, body)
		case !strings.Contains(string(body), `"records":[]`):
			pollDone <- fmt.Errorf("long-poll on an empty partition: %s", body)
		default:
			pollDone <- nil
			pollTook <- took
		}
	}()

	// An SSE stream on partition 0: idle until a heartbeat comment came
	// through, then a record produced through the load balancer arrives on
	// the same connection.
	url := fmt.Sprintf("%s/v1/topics/%s/partitions/0/stream?offset=latest", c.LBURL, topic)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+c.AdminKey)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Silt-Agent") == "" {
		t.Fatalf("stream through haproxy: %d, agent %q", resp.StatusCode, resp.Header.Get("X-Silt-Agent"))
	}
	lines := make(chan string)
	readErr := make(chan error, 1)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
		readErr <- fmt.Errorf("stream ended: %v", sc.Err())
	}()
	next := func(what string, match func(string) bool) {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("waiting for %s: %v", what, <-readErr)
				}
				if match(l) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("waiting for %s: %v", what, ctx.Err())
			}
		}
	}
	// The agent sends a keepalive right after its first (empty) read, then
	// one per heartbeat interval (15 s) of silence: wait for the second.
	next("the first keepalive", func(l string) bool { return l == ": keepalive" })
	idle := time.Now()
	next("a heartbeat after an idle interval", func(l string) bool { return l == ": keepalive" })
	t.Logf("the idle stream through haproxy stayed open and got a heartbeat after %s of silence", time.Since(idle).Round(time.Millisecond))
	if _, err := admin.Produce(ctx, topic, []client.Message{{Partition: client.Partition(0), Value: []byte(`"after-idle"`)}}); err != nil {
		t.Fatal(err)
	}
	next("the record on the same connection", func(l string) bool {
		return strings.HasPrefix(l, "data: ") && strings.Contains(l, `"value":"after-idle"`)
	})
	if err := <-pollDone; err != nil {
		t.Fatal(err)
	}
	t.Logf("a 30 s long-poll through haproxy answered 200 after %s", (<-pollTook).Round(time.Millisecond))
	cancel() // ends the stream request
	resp.Body.Close()
	for range lines { // the reader goroutine exits
	}
}
