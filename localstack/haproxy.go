package localstack

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"silt/internal/pgcluster"
)

//go:embed haproxy.cfg.tmpl
var haproxyTemplate string

var haproxyTmpl = template.Must(template.New("haproxy.cfg").Option("missingkey=error").Parse(haproxyTemplate))

// HAProxyBackend names the backend that holds the agents.
const HAProxyBackend = "agents"

// HAProxyServer is one agent behind the load balancer.
type HAProxyServer struct {
	Name string // server name: the agent id
	Addr string // host:port
	// KafkaAddr is the agent's Kafka listener, host:port; empty leaves
	// the agent out of the Kafka frontend.
	KafkaAddr string
}

// CheckPort is the port of Addr: the Kafka backend checks the agent's
// HTTP readiness there.
func (s HAProxyServer) CheckPort() string {
	_, port, _ := strings.Cut(s.Addr, ":")
	return port
}

// HAProxyTemplate is what the config template is rendered with.
type HAProxyTemplate struct {
	Bind      string // the API frontend, host:port or :port
	StatsBind string // the stats/health/metrics frontend
	// KafkaBind is the Kafka protocol frontend (TCP); empty leaves it out.
	KafkaBind string
	Servers   []HAProxyServer
	// DockerDNS resolves server names with Docker's embedded DNS and
	// starts even while a name does not resolve yet (docker-compose).
	DockerDNS bool
	// Generated adds a do-not-edit banner (the committed compose rendering).
	Generated bool
	// FrontCert, when set, serves the API over TLS with this PEM file (the
	// certificate followed by its key).
	FrontCert string
	// AgentCA, when set, speaks TLS to the agents (and checks them over
	// it), verifying their certificates against this PEM CA file.
	AgentCA string
}

// RenderHAProxyConfig renders the shared template.
func RenderHAProxyConfig(t HAProxyTemplate) ([]byte, error) {
	if strings.ContainsAny(t.FrontCert+t.AgentCA, " \t\n#") {
		return nil, fmt.Errorf("localstack: haproxy TLS file names must not hold spaces or #: %q %q", t.FrontCert, t.AgentCA)
	}
	if t.Bind == "" || t.StatsBind == "" || strings.ContainsAny(t.Bind+t.StatsBind+t.KafkaBind, " \t\n#") {
		return nil, fmt.Errorf("localstack: haproxy config needs bind addresses, got %q and %q", t.Bind, t.StatsBind)
	}
	if len(t.Servers) == 0 {
		return nil, errors.New("localstack: haproxy config needs at least one server")
	}
	for _, s := range t.Servers {
		if s.Name == "" || strings.ContainsAny(s.Name, " \t\n#") || s.Addr == "" || strings.ContainsAny(s.Addr+s.KafkaAddr, " \t\n#") || s.CheckPort() == "" {
			return nil, fmt.Errorf("localstack: bad haproxy server %q at %q", s.Name, s.Addr)
		}
	}
	var b bytes.Buffer
	if err := haproxyTmpl.Execute(&b, t); err != nil {
		return nil, fmt.Errorf("localstack: render haproxy config: %w", err)
	}
	return b.Bytes(), nil
}

// ComposeAgents is the number of agents docker-compose.yml runs.
const ComposeAgents = 3

// ComposeHAProxyTemplate is the rendering committed as localstack/haproxy.cfg
// for docker-compose.yml: agents agent1..agentN on port 8080, their Kafka
// listeners on 9092.
func ComposeHAProxyTemplate() HAProxyTemplate {
	t := HAProxyTemplate{Bind: ":8080", StatsBind: ":8404", KafkaBind: ":9092", DockerDNS: true, Generated: true}
	for i := 1; i <= ComposeAgents; i++ {
		id := AgentName(i)
		t.Servers = append(t.Servers, HAProxyServer{Name: id, Addr: id + ":8080", KafkaAddr: id + ":9092"})
	}
	return t
}

// AgentName is the id of the i-th agent (from 1), as in docker-compose.yml.
func AgentName(i int) string { return "agent" + strconv.Itoa(i) }

// FindHAProxy returns the haproxy binary: on PATH, else /usr/sbin/haproxy
// (where Debian installs it, often outside a user's PATH).
func FindHAProxy() (string, error) {
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p, nil
	}
	const debian = "/usr/sbin/haproxy"
	if _, err := os.Stat(debian); err == nil {
		return debian, nil
	}
	return "", errors.New("localstack: haproxy not found on PATH or at /usr/sbin/haproxy; install it with `make haproxy`")
}

// HAProxyConfig starts one HAProxy.
type HAProxyConfig struct {
	Bin   string // haproxy binary; empty: FindHAProxy
	Dir   string // haproxy.cfg and haproxy.log go here
	Port  int    // API port on 127.0.0.1; 0 picks a free one
	Stats int    // stats port on 127.0.0.1; 0 picks a free one
	// Kafka is the Kafka frontend's port on 127.0.0.1; 0 leaves the
	// frontend out.
	Kafka   int
	Servers []HAProxyServer
	// FrontCert and AgentCA: see HAProxyTemplate.
	FrontCert, AgentCA string
}

// HAProxy is a running HAProxy, a child process in the foreground (-db).
type HAProxy struct {
	URL      string // http(s)://127.0.0.1:port: the API through the load balancer
	StatsURL string // http://127.0.0.1:port: /stats, /healthz, /metrics
	// KafkaAddr is the Kafka protocol through the load balancer
	// (127.0.0.1:port), or "" without a Kafka frontend.
	KafkaAddr string
	Config    string // the rendered config file
	Log       string
	cmd       *exec.Cmd
	exited    chan struct{}
	err       error
}

// StartHAProxy renders the config, checks it with `haproxy -c`, starts
// HAProxy and waits until its frontends answer.
func StartHAProxy(ctx context.Context, cfg HAProxyConfig) (*HAProxy, error) {
	bin := cfg.Bin
	if bin == "" {
		var err error
		if bin, err = FindHAProxy(); err != nil {
			return nil, err
		}
	}
	port, stats := cfg.Port, cfg.Stats
	for _, p := range []*int{&port, &stats} {
		if *p == 0 {
			free, err := pgcluster.FreePort()
			if err != nil {
				return nil, err
			}
			*p = free
		}
	}
	tmpl := HAProxyTemplate{
		Bind:      "127.0.0.1:" + strconv.Itoa(port),
		StatsBind: "127.0.0.1:" + strconv.Itoa(stats),
		Servers:   cfg.Servers,
		FrontCert: cfg.FrontCert,
		AgentCA:   cfg.AgentCA,
	}
	if cfg.Kafka > 0 {
		tmpl.KafkaBind = "127.0.0.1:" + strconv.Itoa(cfg.Kafka)
	}
	text, err := RenderHAProxyConfig(tmpl)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("localstack: haproxy dir: %w", err)
	}
	path := filepath.Join(cfg.Dir, "haproxy.cfg")
	if err := os.WriteFile(path, text, 0o644); err != nil {
		return nil, fmt.Errorf("localstack: write haproxy config: %w", err)
	}
	if out, err := exec.CommandContext(ctx, bin, "-c", "-q", "-f", path).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("localstack: haproxy -c %s: %w\n%s", path, err, out)
	}
	logPath := filepath.Join(cfg.Dir, "haproxy.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("localstack: haproxy log: %w", err)
	}
	defer logFile.Close()
	// -db: stay in the foreground, a child we reap; no master process.
	cmd := exec.Command(bin, "-db", "-f", path)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("localstack: start haproxy: %w", err)
	}
	scheme := "http://"
	if cfg.FrontCert != "" {
		scheme = "https://"
	}
	h := &HAProxy{
		URL:      scheme + "127.0.0.1:" + strconv.Itoa(port),
		StatsURL: "http://127.0.0.1:" + strconv.Itoa(stats),
		Config:   path, Log: logPath, cmd: cmd, exited: make(chan struct{}),
		KafkaAddr: tmpl.KafkaBind,
	}
	go func() {
		h.err = cmd.Wait()
		close(h.exited)
	}()
	if err := waitHTTP(ctx, h.StatsURL+"/stats;csv", 30*time.Second, h.exited); err != nil {
		_ = h.Stop()
		tail, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("localstack: haproxy not answering: %w\n%s", err, lastBytes(tail, 3000))
	}
	return h, nil
}

// PID is HAProxy's process id.
func (h *HAProxy) PID() int { return h.cmd.Process.Pid }

// Stop ends HAProxy (SIGTERM: a hard stop; streams through it are cut)
// and waits for it to exit.
func (h *HAProxy) Stop() error {
	select {
	case <-h.exited:
		return nil
	default:
	}
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("localstack: stop haproxy: %w", err)
	}
	select {
	case <-h.exited:
	case <-time.After(10 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.exited
	}
	return nil
}

// Exited is closed when HAProxy has exited.
func (h *HAProxy) Exited() <-chan struct{} { return h.exited }

// ServerStatus returns the health-check status of every agent, by server
// name, as HAProxy's statistics report it: "UP", "DOWN", "UP 1/2" (going
// down), "DOWN 1/2" (coming up), "MAINT", "NOLB"...
func (h *HAProxy) ServerStatus(ctx context.Context) (map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.StatsURL+"/stats;csv", nil)
	if err != nil {
		return nil, err
	}
	resp, err := statsClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("localstack: haproxy stats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("localstack: haproxy stats: %s", resp.Status)
	}
	return parseStatsCSV(resp.Body)
}

var statsClient = &http.Client{Timeout: 5 * time.Second}

// parseStatsCSV reads the status column of the agents backend's servers.
func parseStatsCSV(r io.Reader) (map[string]string, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	rows, err := cr.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("localstack: haproxy stats csv: %w", err)
	}
	if len(rows) == 0 || len(rows[0]) == 0 {
		return nil, errors.New("localstack: haproxy stats csv: empty")
	}
	header := rows[0]
	header[0] = strings.TrimPrefix(strings.TrimSpace(header[0]), "# ")
	col := map[string]int{}
	for i, name := range header {
		col[name] = i
	}
	px, sv, st := col["pxname"], col["svname"], col["status"]
	if _, ok := col["status"]; !ok {
		return nil, errors.New("localstack: haproxy stats csv: no status column")
	}
	out := map[string]string{}
	for _, row := range rows[1:] {
		if len(row) <= max(px, sv, st) || row[px] != HAProxyBackend || row[sv] == "BACKEND" || row[sv] == "FRONTEND" {
			continue
		}
		out[row[sv]] = row[st]
	}
	return out, nil
}

// WaitServer waits until HAProxy reports the server UP (up) or DOWN (!up),
// so that traffic is (or no longer is) sent to it.
func (h *HAProxy) WaitServer(ctx context.Context, name string, up bool, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	want := "DOWN"
	if up {
		want = "UP"
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		st, err := h.ServerStatus(ctx)
		if err == nil {
			last = st[name]
			if last == want || (!up && strings.HasPrefix(last, "MAINT")) {
				return nil
			}
		}
		select {
		case <-h.exited:
			return errors.New("localstack: haproxy exited")
		case <-ctx.Done():
			return fmt.Errorf("localstack: haproxy server %s is %q, not %s: %w", name, last, want, ctx.Err())
		case <-tick.C:
		}
	}
}

func lastBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
