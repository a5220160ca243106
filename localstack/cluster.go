package localstack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"silt/auth"
	"silt/client"
	"silt/internal/pgcluster"
)

// ClusterConfig describes the local cluster: agents behind HAProxy, all on
// loopback, on a database and a bucket that already exist.
type ClusterConfig struct {
	StateDir   string // agent logs and HAProxy's config and log; required
	SiltBin    string // the silt binary (BuildSilt makes one); required
	HAProxyBin string // empty: FindHAProxy
	Agents     int    // how many agents; 0 means ComposeAgents
	Port       int    // the load balancer's port on 127.0.0.1; 0 picks a free one
	StatsPort  int    // HAProxy's stats port on 127.0.0.1; 0 picks a free one
	// KafkaPort is the load balancer's Kafka port on 127.0.0.1 (0 picks a
	// free one); every agent runs its Kafka listener and advertises it.
	KafkaPort   int
	DatabaseURL string // required
	ObjectStore string // required
	// Env adds agent settings after those of agent.env (SharedAgentEnv):
	// object store credentials, test overrides. Later entries win.
	Env []string
	// AgentEnv, when set, adds settings for one agent after Env: a
	// database or object store URL of its own (through a fault proxy).
	AgentEnv func(id string) []string
	// StopGrace bounds how long a SIGTERMed agent may take to exit before
	// it is killed (default 60s; the agents' --shutdown-timeout is 20s).
	StopGrace time.Duration
	Logger    *slog.Logger
	// AdminKey is made a live admin key by the agents at start
	// (SILT_BOOTSTRAP_ADMIN_KEY): the agents require keys, as in
	// production. Empty generates one; Cluster.AdminKey has it.
	AdminKey string
	// TLS, when set, makes the agents serve HTTPS and HAProxy speak TLS
	// to them.
	TLS *ClusterTLS
}

// ClusterTLS is the local cluster's TLS: PEM files.
type ClusterTLS struct {
	CertFile, KeyFile string // the agents' certificate (for 127.0.0.1) and key
	CAFile            string // the CA that signed it: HAProxy and clients verify against it
	// FrontCert, when set, is HAProxy's own certificate and key in one file:
	// the API through the load balancer is then HTTPS too.
	FrontCert string
	// ClientCAFile, when set, lets the agents take client certificates
	// (mutual TLS).
	ClientCAFile string
}

// Cluster is a running local cluster. Agents keep their id and port across
// restarts, so HAProxy's configuration stays valid.
type Cluster struct {
	// LBURL is the API through the load balancer: what clients use.
	LBURL string
	// KafkaAddr is the Kafka protocol through the load balancer
	// (127.0.0.1:port): what Kafka clients bootstrap from.
	KafkaAddr string
	// StatsURL serves HAProxy's /stats, /healthz and /metrics.
	StatsURL string
	// AdminKey is an admin API key of the cluster.
	AdminKey string
	// ClientTLS trusts the cluster's CA (nil without TLS).
	ClientTLS *tls.Config

	cfg    ClusterConfig
	env    []string
	lb     *HAProxy
	logger *slog.Logger

	mu     sync.Mutex
	agents []*slot // fixed, in id order
}

// slot is one agent position: a stable id and port, and the process
// running there, if any.
type slot struct {
	id        string
	port      int
	kafkaPort int
	proc      *AgentProc // nil while stopped
}

// StartCluster starts the agents, waits until each is ready, then starts
// HAProxy in front of them and waits until it reports every agent up.
func StartCluster(ctx context.Context, cfg ClusterConfig) (_ *Cluster, err error) {
	switch {
	case cfg.StateDir == "":
		return nil, errors.New("localstack: cluster state directory is required")
	case cfg.SiltBin == "":
		return nil, errors.New("localstack: silt binary is required")
	case cfg.DatabaseURL == "" || cfg.ObjectStore == "":
		return nil, errors.New("localstack: cluster needs a database URL and an object store URL")
	case cfg.Agents < 0:
		return nil, fmt.Errorf("localstack: %d agents", cfg.Agents)
	}
	if cfg.Agents == 0 {
		cfg.Agents = ComposeAgents
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HAProxyBin == "" {
		if cfg.HAProxyBin, err = FindHAProxy(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "logs"), 0o755); err != nil {
		return nil, fmt.Errorf("localstack: cluster state dir: %w", err)
	}
	c := &Cluster{cfg: cfg, logger: cfg.Logger, AdminKey: cfg.AdminKey}
	if c.AdminKey == "" {
		if c.AdminKey, _, err = auth.NewToken(); err != nil {
			return nil, err
		}
	}
	c.env = append(SharedAgentEnv(), "SILT_DATABASE_URL="+cfg.DatabaseURL, "SILT_OBJECTSTORE="+cfg.ObjectStore,
		"SILT_BOOTSTRAP_ADMIN_KEY="+c.AdminKey)
	if t := cfg.TLS; t != nil {
		if c.ClientTLS, err = client.TLSConfig(t.CAFile); err != nil {
			return nil, err
		}
		c.env = append(c.env, "SILT_TLS_CERT="+t.CertFile, "SILT_TLS_KEY="+t.KeyFile)
		if t.ClientCAFile != "" {
			c.env = append(c.env, "SILT_TLS_CLIENT_CA="+t.ClientCAFile)
		}
	}
	c.env = append(c.env, cfg.Env...)
	if cfg.KafkaPort == 0 {
		if cfg.KafkaPort, err = pgcluster.FreePort(); err != nil {
			return nil, err
		}
	}
	c.KafkaAddr = "127.0.0.1:" + strconv.Itoa(cfg.KafkaPort)
	used := map[int]bool{cfg.KafkaPort: true, cfg.Port: true, cfg.StatsPort: true}
	for i := 1; i <= cfg.Agents; i++ {
		s := &slot{id: AgentName(i)}
		if err := s.pickPorts(used); err != nil {
			return nil, err
		}
		c.agents = append(c.agents, s)
	}
	defer func() {
		if err != nil { // stop whatever started
			_ = c.Stop(context.WithoutCancel(ctx))
		}
	}()

	// Agents in parallel: they serialize their migrations themselves.
	errs := make([]error, len(c.agents))
	var wg sync.WaitGroup
	for i, s := range c.agents {
		wg.Go(func() {
			// A free port may be taken by another process between the
			// pick and the agent's bind: pick again (the load balancer
			// is configured after the agents are up).
			for try := 0; ; try++ {
				errs[i] = c.startSlot(ctx, s)
				if errs[i] == nil || try == 2 || !strings.Contains(errs[i].Error(), "address already in use") {
					return
				}
				c.mu.Lock()
				err := s.pickPorts(used)
				c.mu.Unlock()
				if err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	servers := make([]HAProxyServer, len(c.agents))
	for i, s := range c.agents {
		servers[i] = HAProxyServer{Name: s.id, Addr: "127.0.0.1:" + strconv.Itoa(s.port), KafkaAddr: "127.0.0.1:" + strconv.Itoa(s.kafkaPort)}
	}
	hc := HAProxyConfig{Bin: cfg.HAProxyBin, Dir: cfg.StateDir, Port: cfg.Port, Stats: cfg.StatsPort, Kafka: cfg.KafkaPort, Servers: servers}
	if cfg.TLS != nil {
		hc.FrontCert, hc.AgentCA = cfg.TLS.FrontCert, cfg.TLS.CAFile
	}
	lb, err := StartHAProxy(ctx, hc)
	if err != nil {
		return nil, err
	}
	c.lb, c.LBURL, c.StatsURL = lb, lb.URL, lb.StatsURL
	for _, s := range c.agents {
		if err := lb.WaitServer(ctx, s.id, true, time.Minute); err != nil {
			return nil, err
		}
	}
	c.logger.Info("cluster up", "lb", c.LBURL, "kafka", c.KafkaAddr, "agents", len(c.agents))
	return c, nil
}

// startSlot starts the agent of a slot on its port.
func (c *Cluster) startSlot(ctx context.Context, s *slot) error {
	env := c.env
	if c.cfg.AgentEnv != nil {
		env = append(append([]string(nil), c.env...), c.cfg.AgentEnv(s.id)...)
	}
	p, err := StartAgent(ctx, AgentConfig{
		Bin: c.cfg.SiltBin, ID: s.id, Port: s.port, Env: env, LogDir: filepath.Join(c.cfg.StateDir, "logs"), ClientTLS: c.ClientTLS,
		KafkaPort: s.kafkaPort, KafkaAdvertised: c.KafkaAddr,
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	s.proc = p
	c.mu.Unlock()
	c.logger.Info("agent started", "id", s.id, "url", p.URL, "pid", p.PID())
	return nil
}

func (c *Cluster) slot(id string) (*slot, error) {
	for _, s := range c.agents {
		if s.id == id {
			return s, nil
		}
	}
	return nil, fmt.Errorf("localstack: no agent %q", id)
}

// LB is the load balancer.
func (c *Cluster) LB() *HAProxy { return c.lb }

// AgentIDs lists every agent's id, running or not.
func (c *Cluster) AgentIDs() []string {
	ids := make([]string, len(c.agents))
	for i, s := range c.agents {
		ids[i] = s.id
	}
	return ids
}

// Agents returns the running agents, in id order.
func (c *Cluster) Agents() []*AgentProc {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*AgentProc
	for _, s := range c.agents {
		if s.proc != nil {
			out = append(out, s.proc)
		}
	}
	return out
}

// Agent returns the running agent id, or nil when it is stopped.
func (c *Cluster) Agent(id string) *AgentProc {
	s, err := c.slot(id)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return s.proc
}

// AgentLog is the path of an agent's log (kept across restarts).
func (c *Cluster) AgentLog(id string) string {
	return filepath.Join(c.cfg.StateDir, "logs", id+".log")
}

// take removes a slot's process, so that one caller stops it.
func (c *Cluster) take(id string) (*slot, *AgentProc, error) {
	s, err := c.slot(id)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := s.proc
	s.proc = nil
	if p == nil {
		return nil, nil, fmt.Errorf("localstack: agent %s is not running", id)
	}
	return s, p, nil
}

// StopAgent stops an agent as a rolling restart does: SIGTERM (its
// readiness turns 503, it finishes in-flight requests, flushes and
// releases its leases), then waits for it to exit and for HAProxy to take
// it out of rotation. It returns the agent's exit error, if any.
func (c *Cluster) StopAgent(ctx context.Context, id string) error {
	s, p, err := c.take(id)
	if err != nil {
		return err
	}
	exitErr := p.Terminate(c.cfg.StopGrace)
	if err := c.waitLB(ctx, s.id, false); err != nil {
		return errors.Join(exitErr, err)
	}
	if exitErr != nil {
		return fmt.Errorf("localstack: agent %s exit after SIGTERM: %w", id, exitErr)
	}
	return nil
}

// KillAgent ends an agent with SIGKILL (a crash) and waits for HAProxy to
// take it out of rotation.
func (c *Cluster) KillAgent(ctx context.Context, id string) error {
	s, p, err := c.take(id)
	if err != nil {
		return err
	}
	if err := p.Kill(); err != nil {
		return fmt.Errorf("localstack: kill agent %s: %w", id, err)
	}
	return c.waitLB(ctx, s.id, false)
}

// StartAgent starts a stopped agent again, with the same id and port, and
// waits until it is ready and HAProxy sends it traffic.
func (c *Cluster) StartAgent(ctx context.Context, id string) error {
	s, err := c.slot(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	running := s.proc != nil
	c.mu.Unlock()
	if running {
		return fmt.Errorf("localstack: agent %s is already running", id)
	}
	if err := c.startSlot(ctx, s); err != nil {
		return err
	}
	return c.waitLB(ctx, s.id, true)
}

// RestartAgent is StopAgent then StartAgent.
func (c *Cluster) RestartAgent(ctx context.Context, id string) error {
	if err := c.StopAgent(ctx, id); err != nil {
		return err
	}
	return c.StartAgent(ctx, id)
}

func (c *Cluster) waitLB(ctx context.Context, id string, up bool) error {
	if c.lb == nil {
		return nil
	}
	return c.lb.WaitServer(ctx, id, up, time.Minute)
}

// Stop stops every agent gracefully, in parallel (they drain through the
// load balancer), then HAProxy. It always reaps every process it started.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	var procs []*AgentProc
	for _, s := range c.agents {
		if s.proc != nil {
			procs = append(procs, s.proc)
			s.proc = nil
		}
	}
	c.mu.Unlock()
	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Go(func() {
			if err := p.Terminate(c.cfg.StopGrace); err != nil {
				errs[i] = fmt.Errorf("localstack: agent %s: %w", p.ID, err)
			}
		})
	}
	wg.Wait()
	if c.lb != nil {
		errs = append(errs, c.lb.Stop())
	}
	c.logger.Info("cluster stopped")
	return errors.Join(slices.DeleteFunc(errs, func(e error) bool { return e == nil })...)
}

// pickPorts gives s free ports for its HTTP and Kafka listeners, none of
// them in used (which it extends).
func (s *slot) pickPorts(used map[int]bool) error {
	pick := func() (int, error) {
		for {
			p, err := pgcluster.FreePort()
			if err != nil || !used[p] {
				used[p] = true
				return p, err
			}
		}
	}
	var err error
	if s.port, err = pick(); err != nil {
		return err
	}
	s.kafkaPort, err = pick()
	return err
}
