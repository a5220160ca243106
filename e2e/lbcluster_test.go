package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"silt/client"
	"silt/internal/testenv"
	"silt/localstack"
)

// startLBCluster runs the native local cluster, exactly as `make
// localstack` does (localstack.StartCluster: agents with agent.env's
// settings, HAProxy from the shared template), on a fresh database and
// bucket of the test services. extraEnv overrides agent settings.
func startLBCluster(t *testing.T, agents int, extraEnv ...string) *localstack.Cluster {
	t.Helper()
	return startLBClusterWith(t, lbOptions{agents: agents, env: extraEnv})
}

// startLBClusterTLS is startLBCluster with TLS on the agents (and, with
// FrontCert, on HAProxy's front).
func startLBClusterTLS(t *testing.T, agents int, tlsFiles *localstack.ClusterTLS, extraEnv ...string) *localstack.Cluster {
	t.Helper()
	return startLBClusterWith(t, lbOptions{agents: agents, tls: tlsFiles, env: extraEnv})
}

// lbOptions tune startLBClusterWith.
type lbOptions struct {
	agents int
	tls    *localstack.ClusterTLS
	env    []string
	// dbURL, when set, edits the database URL the agents get.
	dbURL func(string) string
}

func startLBClusterWith(t *testing.T, o lbOptions) *localstack.Cluster {
	t.Helper()
	agents, tlsFiles, extraEnv := o.agents, o.tls, o.env
	bin := siltBinary(t)
	db := testenv.PostgresURL(t)
	if o.dbURL != nil {
		db = o.dbURL(db)
	}
	srv, bucket := testenv.MinIOBucket(t)
	if _, err := localstack.FindHAProxy(); err != nil {
		t.Fatalf("%v (the end-to-end tests run a real load balancer)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := append([]string{
		"AWS_ACCESS_KEY_ID=" + srv.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + srv.SecretKey,
	}, extraEnv...)
	c, err := localstack.StartCluster(ctx, localstack.ClusterConfig{
		StateDir:    t.TempDir(),
		SiltBin:     bin,
		Agents:      agents,
		DatabaseURL: db,
		ObjectStore: srv.URL("s3", bucket, ""),
		Env:         env,
		TLS:         tlsFiles,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the database and bucket: runs before they go.
	t.Cleanup(func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
		if t.Failed() {
			for _, id := range c.AgentIDs() {
				t.Logf("log of %s (tail):\n%s", id, tail(c.AgentLog(id), 4000))
			}
			t.Logf("haproxy log (tail):\n%s", tail(c.LB().Log, 3000))
		}
	})
	return c
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// agentTally counts the responses each agent gave, by the X-Silt-Agent
// header HAProxy adds.
type agentTally struct {
	mu       sync.Mutex
	n        map[string]int
	failures map[string]int // error statuses and transport errors, which clients may have retried
}

func newAgentTally() *agentTally { return &agentTally{n: map[string]int{}, failures: map[string]int{}} }

func (a *agentTally) fail(what string) {
	a.mu.Lock()
	a.failures[what]++
	a.mu.Unlock()
}

// failed returns the failed responses by status ("502") or "transport".
func (a *agentTally) failed() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.failures)
}

func (a *agentTally) add(agent string) {
	if agent == "" {
		return
	}
	a.mu.Lock()
	a.n[agent]++
	a.mu.Unlock()
}

// agents returns the agents that answered, sorted.
func (a *agentTally) agents() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for id := range a.n {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func (a *agentTally) String() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return fmt.Sprint(a.n)
}

type tallyTransport struct {
	base  http.RoundTripper
	tally *agentTally
}

func (tt *tallyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := tt.base.RoundTrip(r)
	switch {
	case err != nil:
		if r.Context().Err() == nil {
			tt.tally.fail("transport")
		}
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		tt.tally.fail(strconv.Itoa(resp.StatusCode))
		fallthrough
	default:
		tt.tally.add(resp.Header.Get("X-Silt-Agent"))
	}
	return resp, err
}

// lbClient is a client of the load balancer with its own connections,
// the default retry policy and its responses counted per agent.
func lbClient(t *testing.T, c *localstack.Cluster, tally *agentTally) *client.Client {
	t.Helper()
	return lbClientAs(t, c, tally, c.AdminKey)
}

// lbClientAs is lbClient with the API key token.
func lbClientAs(t *testing.T, c *localstack.Cluster, tally *agentTally, token string) *client.Client {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.ClientTLS != nil {
		tr.TLSClientConfig = c.ClientTLS.Clone()
	}
	tr.ForceAttemptHTTP2 = true
	t.Cleanup(tr.CloseIdleConnections)
	cl, err := client.New(c.LBURL,
		client.WithHTTPClient(&http.Client{Transport: &tallyTransport{base: tr, tally: tally}}),
		client.WithRetry(client.DefaultRetryPolicy()), client.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// retriable reports whether err is one a client may retry: a problem the
// agent (or HAProxy, by its status) marks retriable, or a transport
// failure. Anything else is a real error.
func retriable(err error) bool {
	var e *client.Error
	if errors.As(err, &e) {
		return e.Retriable
	}
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded)
}

// errorLog counts client errors, keeping the first few non-retriable ones.
type errorLog struct {
	mu           sync.Mutex
	retriable    int
	nonRetriable []string
}

func (l *errorLog) add(what string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if retriable(err) {
		l.retriable++
		return
	}
	l.nonRetriable = append(l.nonRetriable, fmt.Sprintf("%s: %v", what, err))
}

func (l *errorLog) counts() (int, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.retriable, slices.Clone(l.nonRetriable)
}

// readPartition fetches a whole partition through c, from offset 0 to the
// high watermark as of the first fetch's answer at the latest.
func readPartition(ctx context.Context, c *client.Client, topic string, p int32) ([]client.Record, error) {
	var out []client.Record
	next, hw := int64(0), int64(-1)
	for hw < 0 || next < hw {
		res, err := c.Fetch(ctx, topic, p, next, client.FetchOptions{MaxRecords: 5000})
		if err != nil {
			return nil, err
		}
		if hw < 0 {
			hw = res.HighWatermark
		}
		out = append(out, res.Records...)
		if res.NextOffset == next && next < hw {
			return nil, fmt.Errorf("partition %d: no progress at offset %d below high watermark %d", p, next, hw)
		}
		next = res.NextOffset
	}
	return out, nil
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(ctx context.Context, limit time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// short trims a list for a failure message.
func short(items []string) string {
	if len(items) > 5 {
		return strings.Join(items[:5], "; ") + fmt.Sprintf("; and %d more", len(items)-5)
	}
	return strings.Join(items, "; ")
}
