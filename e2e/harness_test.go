package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"silt/internal/testenv"
	"silt/localstack"
)

// raceEnabled is set when the tests run with -race; the agents are then
// built with -race too.
var raceEnabled bool

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// siltBinary builds ./cmd/silt once per test run.
func siltBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "silt-e2e-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "silt")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/silt")...)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out.String())
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// cluster is a set of agent processes sharing one database and bucket.
type cluster struct {
	t      *testing.T
	db     string // the cluster's Postgres URL
	srv    testenv.MinIOServer
	bucket string
	bin    string
	env    []string
	logDir string
	mu     sync.Mutex
	agents map[string]*localstack.AgentProc
}

func newCluster(t *testing.T, extraEnv ...string) *cluster {
	t.Helper()
	bin := siltBinary(t)
	db := testenv.PostgresURL(t)
	srv, bucket := testenv.MinIOBucket(t)
	c := &cluster{t: t, db: db, srv: srv, bucket: bucket, bin: bin, logDir: t.TempDir(), agents: map[string]*localstack.AgentProc{}}
	c.env = append([]string{
		"SILT_DATABASE_URL=" + db,
		"SILT_OBJECTSTORE=" + srv.URL("s3", bucket, ""),
		"AWS_ACCESS_KEY_ID=" + srv.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + srv.SecretKey,
		"SILT_LOG_LEVEL=info",
		"SILT_LINGER=20ms",
		"SILT_SHUTDOWN_TIMEOUT=20s",
		// These clusters test failover, not security: anonymous, said
		// explicitly (agents require keys by default).
		"SILT_AUTH=none",
	}, extraEnv...)
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, a := range c.agents {
			_ = a.Kill()
		}
		if t.Failed() {
			for id, a := range c.agents {
				if b, err := os.ReadFile(a.Log); err == nil {
					if len(b) > 4000 {
						b = b[len(b)-4000:]
					}
					t.Logf("log of %s (tail):\n%s", id, b)
				}
			}
		}
	})
	return c
}

func (c *cluster) start(id string, extraEnv ...string) *localstack.AgentProc {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// Later entries win: extraEnv overrides the cluster's settings.
	env := append(append([]string(nil), c.env...), extraEnv...)
	a, err := localstack.StartAgent(ctx, localstack.AgentConfig{Bin: c.bin, ID: id, Env: env, LogDir: c.logDir})
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.agents[id] = a
	c.mu.Unlock()
	return a
}

// remove forgets an agent that was killed or stopped.
func (c *cluster) remove(id string) {
	c.mu.Lock()
	delete(c.agents, id)
	c.mu.Unlock()
}

// live returns the URLs of the agents believed running.
func (c *cluster) live() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, a := range c.agents {
		out = append(out, a.URL)
	}
	return out
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// request sends a JSON request and decodes a 2xx JSON answer into out.
func request(method, url string, body, out any) (int, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.After(limit)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("%s: not within %s", what, limit)
		case <-tick.C:
		}
	}
	return time.Since(start)
}
