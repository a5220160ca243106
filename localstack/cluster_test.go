package localstack

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a fake `silt agent` (no Postgres needed): it
// serves /readyz and /whoami on SILT_LISTEN and drains on SIGTERM.
func TestMain(m *testing.M) {
	if os.Getenv("LOCALSTACK_FAKE_AGENT") == "1" {
		os.Exit(fakeAgentMain())
	}
	os.Exit(m.Run())
}

func fakeAgentMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", os.Getenv("SILT_LISTEN"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if dir := os.Getenv("LOCALSTACK_FAKE_PIDS"); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, strconv.Itoa(os.Getpid())), nil, 0o644)
	}
	id := os.Getenv("SILT_AGENT_ID")
	var draining atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, id) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	<-ctx.Done()
	draining.Store(true)
	_ = srv.Shutdown(context.Background())
	return 0
}

func fakeCluster(t *testing.T, ctx context.Context, port int, pids string) (*Cluster, error) {
	t.Helper()
	return StartCluster(ctx, ClusterConfig{
		StateDir:    t.TempDir(),
		SiltBin:     os.Args[0],
		HAProxyBin:  haproxyBin(t),
		Port:        port,
		DatabaseURL: "postgres://unused",
		ObjectStore: "mem://",
		Env:         []string{"LOCALSTACK_FAKE_AGENT=1", "LOCALSTACK_FAKE_PIDS=" + pids},
	})
}

// whoami asks the load balancer which agent answers.
func whoami(t *testing.T, lb string) string {
	t.Helper()
	resp, err := http.Get(lb + "/whoami")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Silt-Agent") != string(b) {
		t.Fatalf("through the load balancer: %d %q (X-Silt-Agent %q)", resp.StatusCode, b, resp.Header.Get("X-Silt-Agent"))
	}
	return string(b)
}

// allDead checks that every process that recorded its pid has exited.
func allDead(t *testing.T, dir string, want int) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != want {
		t.Fatalf("%d agent processes recorded, want %d", len(entries), want)
	}
	for _, e := range entries {
		pid, _ := strconv.Atoi(e.Name())
		if alive(pid) {
			t.Errorf("agent process %d still running", pid)
		}
	}
}

func TestClusterLifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pids := t.TempDir()
	c, err := fakeCluster(t, ctx, 0, pids)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(context.Background())
	if got := strings.Join(c.AgentIDs(), ","); got != "agent1,agent2,agent3" || len(c.Agents()) != 3 {
		t.Fatalf("agents %s, %d running", got, len(c.Agents()))
	}
	seen := map[string]bool{}
	for i := 0; i < 12; i++ {
		seen[whoami(t, c.LBURL)] = true
	}
	if len(seen) != 3 {
		t.Fatalf("the load balancer reached %v", seen)
	}

	// A stopped agent leaves rotation; requests keep succeeding elsewhere.
	if err := c.StopAgent(ctx, "agent2"); err != nil {
		t.Fatal(err)
	}
	if err := c.StopAgent(ctx, "agent2"); err == nil {
		t.Fatal("stopping a stopped agent succeeded")
	}
	for i := 0; i < 12; i++ {
		if who := whoami(t, c.LBURL); who == "agent2" {
			t.Fatal("a stopped agent answered")
		}
	}
	port := c.Agents()[0].Port
	if err := c.StartAgent(ctx, "agent2"); err != nil {
		t.Fatal(err)
	}
	if err := c.RestartAgent(ctx, "agent1"); err != nil {
		t.Fatal(err)
	}
	if c.Agents()[0].Port != port {
		t.Fatal("a restarted agent moved to another port")
	}
	if err := c.KillAgent(ctx, "agent3"); err != nil {
		t.Fatal(err)
	}
	seen = map[string]bool{}
	for i := 0; i < 12; i++ {
		seen[whoami(t, c.LBURL)] = true
	}
	if len(seen) != 2 || seen["agent3"] {
		t.Fatalf("after restarts and a kill the load balancer reached %v", seen)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.LB().Exited():
	default:
		t.Fatal("haproxy still running after Stop")
	}
	if len(c.Agents()) != 0 {
		t.Fatal("agents left after Stop")
	}
	allDead(t, pids, 5) // three, agent2 again, agent1 again
}

// When the cluster cannot start (here: the load balancer's port is
// taken), the agents already started are stopped and reaped.
func TestClusterStartFailsCleanly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pids := t.TempDir()
	c, err := fakeCluster(t, ctx, ln.Addr().(*net.TCPAddr).Port, pids)
	if err == nil {
		c.Stop(ctx)
		t.Fatal("started with the load balancer's port taken")
	}
	if !strings.Contains(err.Error(), "haproxy") {
		t.Errorf("error does not name haproxy: %v", err)
	}
	allDead(t, pids, 3)
}
