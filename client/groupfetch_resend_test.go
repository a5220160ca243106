package client

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A group fetch moves the member's positions on the agent, so it must
// reach the agent at most once per call. Go's HTTP transport resends a
// GET on its own when a reused keep-alive connection closes before the
// answer (as HAProxy does when the agent behind dies mid-request); the
// resend then starts after the records of the lost answer, which no
// member gets (found by the fault suite). GroupFetch must fail instead.
func TestGroupFetchIsNeverResentByTheTransport(t *testing.T) {
	var fetches atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/records") {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"name":"t","partitions":1}`)
			return
		}
		if fetches.Add(1) == 1 {
			// The first fetch reaches the agent, which dies before it
			// answers: the connection just closes.
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"generation":1,"records":[],"positions":[]}`)
	}))
	defer srv.Close()
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A keep-alive connection to reuse.
	if _, err := c.DescribeTopic(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	_, err = c.GroupFetch(ctx, "g", "m-1", GroupFetchOptions{})
	if n := fetches.Load(); n != 1 || err == nil {
		t.Fatalf("the group fetch reached the agent %d times and returned %v; want once, and an error", n, err)
	}
}
