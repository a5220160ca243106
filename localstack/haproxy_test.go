package localstack

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"silt/agent"
)

var update = flag.Bool("update", false, "rewrite localstack/haproxy.cfg from the template")

// haproxyBin returns the haproxy binary or fails: `make haproxy` installs it.
func haproxyBin(t *testing.T) string {
	t.Helper()
	bin, err := FindHAProxy()
	if err != nil {
		if testing.Short() {
			t.Skipf("under -short without HAProxy: %v", err)
		}
		t.Fatal(err)
	}
	return bin
}

// The compose file mounts localstack/haproxy.cfg: it must be the
// template's rendering for the compose agents.
func TestComposeHAProxyConfig(t *testing.T) {
	want, err := RenderHAProxyConfig(ComposeHAProxyTemplate())
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("haproxy.cfg", want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("localstack/haproxy.cfg differs from the rendered template; regenerate with: go test ./localstack -run TestComposeHAProxyConfig -update")
	}
	for i := 1; i <= ComposeAgents; i++ {
		if !strings.Contains(string(got), fmt.Sprintf("server agent%d agent%d:8080\n", i, i)) {
			t.Errorf("no server line for agent%d", i)
		}
	}
}

// Both renderings pass `haproxy -c`.
func TestHAProxyConfigValid(t *testing.T) {
	bin := haproxyBin(t)
	native, err := RenderHAProxyConfig(HAProxyTemplate{
		Bind: "127.0.0.1:1", StatsBind: "127.0.0.1:2",
		Servers: []HAProxyServer{{Name: "agent1", Addr: "127.0.0.1:3"}, {Name: "agent2", Addr: "127.0.0.1:4"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	compose, err := os.ReadFile("haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string][]byte{"native": native, "compose": compose} {
		path := filepath.Join(t.TempDir(), "haproxy.cfg")
		if err := os.WriteFile(path, text, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
			t.Errorf("%s: haproxy -c: %v\n%s", name, err, out)
		}
	}
}

// The timeouts let long-polls and idle SSE streams through, and the health
// check probes the agent's readiness route.
func TestHAProxyConfigFitsAgent(t *testing.T) {
	text, err := RenderHAProxyConfig(ComposeHAProxyTemplate())
	if err != nil {
		t.Fatal(err)
	}
	def := agent.DefaultConfig()
	timeouts := map[string]time.Duration{}
	for _, m := range regexp.MustCompile(`(?m)^\s*timeout (\S+) (\S+)$`).FindAllStringSubmatch(string(text), -1) {
		d, err := parseHAProxyDuration(m[2])
		if err != nil {
			t.Fatalf("timeout %s: %v", m[1], err)
		}
		timeouts[m[1]] = d
	}
	for _, name := range []string{"client", "server"} {
		d, ok := timeouts[name]
		if !ok {
			t.Fatalf("no timeout %s", name)
		}
		// A long-poll is silent for up to MaxWait; a stream for up to one
		// heartbeat interval. Leave room for the agent's own latency.
		if d < def.MaxWait+15*time.Second || d < 2*def.SSEHeartbeat {
			t.Errorf("timeout %s %s is too short for long-polls of %s and SSE heartbeats every %s", name, d, def.MaxWait, def.SSEHeartbeat)
		}
	}
	for _, want := range []string{"http-check send meth GET uri /readyz", "http-check expect status 200", "option redispatch", "balance leastconn"} {
		if !strings.Contains(string(text), want) {
			t.Errorf("config lacks %q", want)
		}
	}
}

// parseHAProxyDuration reads HAProxy's time format: a number with an
// optional unit (us, ms, s, m, h, d); no unit means milliseconds.
func parseHAProxyDuration(s string) (time.Duration, error) {
	m := regexp.MustCompile(`^(\d+)(us|ms|s|m|h|d)?$`).FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("bad HAProxy time %q", s)
	}
	var n time.Duration
	fmt.Sscan(m[1], &n)
	unit := map[string]time.Duration{"": time.Millisecond, "us": time.Microsecond, "ms": time.Millisecond,
		"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[m[2]]
	return n * unit, nil
}

func TestParseStatsCSV(t *testing.T) {
	csv := "# pxname,svname,qcur,status,weight\n" +
		"silt,FRONTEND,,OPEN,\n" +
		"agents,agent1,0,UP,1\n" +
		"agents,agent2,0,DOWN 1/2,1\n" +
		"agents,BACKEND,0,UP,1\n" +
		"stats,FRONTEND,,OPEN,\n"
	got, err := parseStatsCSV(strings.NewReader(csv))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["agent1"] != "UP" || got["agent2"] != "DOWN 1/2" {
		t.Fatalf("got %v", got)
	}
}

// fakeAgent is an HTTP server on loopback that answers like an agent
// enough for HAProxy: /readyz, and counts what it serves.
type fakeAgent struct {
	name     string
	srv      *http.Server
	ln       net.Listener
	ready    atomic.Bool
	getFails atomic.Bool // GET /api answers 503
	posts    atomic.Int64
	// group fetches served (always 503)
	groupFetches atomic.Int64
}

func startFakeAgent(t *testing.T, name string) *fakeAgent {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAgent{name: name, ln: ln}
	f.ready.Store(true)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !f.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("GET /api", func(w http.ResponseWriter, r *http.Request) {
		if f.getFails.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, f.name)
	})
	mux.HandleFunc("GET /v1/groups/{group}/members/{member}/records", func(w http.ResponseWriter, r *http.Request) {
		f.groupFetches.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	mux.HandleFunc("POST /api", func(w http.ResponseWriter, r *http.Request) {
		f.posts.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	f.srv = &http.Server{Handler: mux}
	go f.srv.Serve(ln)
	t.Cleanup(func() { f.srv.Close() })
	return f
}

// HAProxy with the shared template: balances over healthy agents, takes a
// dead or unready one out, resends safe requests only, and is reaped.
func TestHAProxyBehaviour(t *testing.T) {
	bin := haproxyBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, b := startFakeAgent(t, "a"), startFakeAgent(t, "b")
	h, err := StartHAProxy(ctx, HAProxyConfig{Bin: bin, Dir: t.TempDir(), Servers: []HAProxyServer{
		{Name: "a", Addr: a.ln.Addr().String()}, {Name: "b", Addr: b.ln.Addr().String()},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := h.Stop(); err != nil {
			t.Error(err)
		}
		select {
		case <-h.Exited():
		default:
			t.Error("haproxy not reaped after Stop")
		}
	}()
	for _, n := range []string{"a", "b"} {
		if err := h.WaitServer(ctx, n, true, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	get := func() (int, string, string) {
		t.Helper()
		resp, err := http.Get(h.URL + "/api")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), resp.Header.Get("X-Silt-Agent")
	}
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		code, body, via := get()
		if code != 200 || body != via {
			t.Fatalf("GET through haproxy: %d %q via %q", code, body, via)
		}
		seen[via] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Fatalf("requests did not reach both agents: %v", seen)
	}

	// A GET answered 503 is resent to another agent.
	a.getFails.Store(true)
	for i := 0; i < 10; i++ {
		if code, body, _ := get(); code != 200 || body != "b" {
			t.Fatalf("GET with a failing agent: %d %q", code, body)
		}
	}
	a.getFails.Store(false)

	// A POST that reached an agent is never resent: its 503 comes back.
	resp, err := http.Post(h.URL+"/api", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || a.posts.Load()+b.posts.Load() != 1 {
		t.Fatalf("POST: status %d, delivered %d times", resp.StatusCode, a.posts.Load()+b.posts.Load())
	}

	// A group fetch is a GET that moves the member's positions: one that
	// reached an agent is not resent, or the records of the answer the
	// first agent lost would be skipped.
	resp, err = http.Get(h.URL + "/v1/groups/g/members/m-1/records?wait_ms=0")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := a.groupFetches.Load() + b.groupFetches.Load(); resp.StatusCode != http.StatusServiceUnavailable || n != 1 {
		t.Fatalf("group fetch: status %d, delivered %d times", resp.StatusCode, n)
	}

	// An agent that goes away: requests go to the other one at once
	// (refused connections are redispatched), and haproxy marks it down.
	a.srv.Close()
	for i := 0; i < 10; i++ {
		if code, body, _ := get(); code != 200 || body != "b" {
			t.Fatalf("GET after agent a stopped: %d %q", code, body)
		}
	}
	if err := h.WaitServer(ctx, "a", false, time.Minute); err != nil {
		t.Fatal(err)
	}

	// An unready agent leaves rotation; with none left, /healthz fails.
	b.ready.Store(false)
	if err := h.WaitServer(ctx, "b", false, time.Minute); err != nil {
		t.Fatal(err)
	}
	resp, err = http.Get(h.StatsURL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("haproxy /healthz with no agent up: %d", resp.StatusCode)
	}
	b.ready.Store(true)
	if err := h.WaitServer(ctx, "b", true, time.Minute); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := get(); code != 200 || body != "b" {
		t.Fatalf("GET after b is ready again: %d %q", code, body)
	}
}

func TestRenderHAProxyConfigRejectsBadInput(t *testing.T) {
	for _, tc := range []HAProxyTemplate{
		{Bind: ":1", StatsBind: ":2"},
		{Bind: ":1", Servers: []HAProxyServer{{Name: "a", Addr: "x:1"}}},
		{Bind: ":1", StatsBind: ":2", Servers: []HAProxyServer{{Name: "a b", Addr: "x:1"}}},
		{Bind: ":1", StatsBind: ":2", Servers: []HAProxyServer{{Name: "a", Addr: "x:1\nlisten evil"}}},
		{Bind: ":1\nlisten evil", StatsBind: ":2", Servers: []HAProxyServer{{Name: "a", Addr: "x:1"}}},
	} {
		if _, err := RenderHAProxyConfig(tc); err == nil {
			t.Errorf("accepted %+v", tc)
		}
	}
	if _, err := StartHAProxy(context.Background(), HAProxyConfig{Bin: "/nonexistent/haproxy", Dir: t.TempDir(),
		Servers: []HAProxyServer{{Name: "a", Addr: "127.0.0.1:1"}}}); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("start with a missing binary: %v", err)
	}
}
