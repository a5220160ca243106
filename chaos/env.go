package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"silt/internal/pgcluster"
	"silt/internal/toxiproxy"
	"silt/localstack"
)

// EnvConfig describes the system under test.
type EnvConfig struct {
	// StateDir holds the Postgres nodes, MinIO's data, the agents' logs and
	// HAProxy's config. When the tests run as root the postgres user must
	// be able to enter it.
	StateDir     string
	SiltBin      string
	MinIOBin     string
	ToxiproxyBin string
	HAProxyBin   string // empty: localstack.FindHAProxy
	Agents       int
	// AgentEnv holds agent settings (SILT_*) on top of localstack's
	// agent.env.
	AgentEnv []string
	Logger   *slog.Logger
}

// pgNode is one of the two Postgres slots: a fixed port and data
// directory, holding the primary or the standby.
type pgNode struct {
	dir  string
	port int
	c    *pgcluster.Cluster
}

// Env is the running system: Postgres (a primary and a synchronous
// standby), MinIO, Toxiproxy between every agent and each of them, the
// agents and HAProxy in front.
type Env struct {
	cfg    EnvConfig
	logger *slog.Logger

	tpSrv *toxiproxy.Server
	tp    *toxiproxy.Client

	mu      sync.Mutex
	nodes   [2]*pgNode
	primary int  // index into nodes
	synced  bool // the other node streams as a synchronous standby
	rebuild chan struct{}

	minio     *localstack.MinIO
	minioDir  string
	minioPort int

	cluster   *localstack.Cluster
	agentURLs map[string]string
	ids       []string
	// expected holds agents the nemesis is stopping; any other exit is a
	// crash.
	expected map[string]bool
	exits    chan agentExit
}

type agentExit struct {
	id  string
	err error
}

// Bucket and database the agents use.
const (
	envBucket   = "silt-chaos"
	envDatabase = "silt"
)

// StartEnv starts everything and waits until the agents are ready behind
// HAProxy.
func StartEnv(ctx context.Context, cfg EnvConfig) (_ *Env, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Agents < 1 {
		return nil, errors.New("chaos: at least one agent")
	}
	for _, p := range []string{cfg.SiltBin, cfg.MinIOBin, cfg.ToxiproxyBin} {
		if p == "" {
			return nil, errors.New("chaos: the silt, minio and toxiproxy binaries are required")
		}
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("chaos: state dir: %w", err)
	}
	e := &Env{cfg: cfg, logger: cfg.Logger, expected: map[string]bool{}, exits: make(chan agentExit, 64), agentURLs: map[string]string{}}
	defer func() {
		if err != nil {
			e.Stop(context.WithoutCancel(ctx))
		}
	}()

	tlog, err := os.Create(filepath.Join(cfg.StateDir, "toxiproxy.log"))
	if err != nil {
		return nil, fmt.Errorf("chaos: toxiproxy log: %w", err)
	}
	tcfg := toxiproxy.DefaultConfig()
	tcfg.Bin, tcfg.Log = cfg.ToxiproxyBin, tlog
	if e.tpSrv, err = toxiproxy.Start(ctx, tcfg); err != nil {
		return nil, err
	}
	e.tp = e.tpSrv.Client()

	// Postgres: a primary, then a standby made from it with
	// pg_basebackup, synchronous.
	for i := range e.nodes {
		port, err := pgcluster.FreePort()
		if err != nil {
			return nil, err
		}
		e.nodes[i] = &pgNode{dir: filepath.Join(cfg.StateDir, "pg"+strconv.Itoa(i)), port: port}
	}
	if e.nodes[0].c, err = pgcluster.Start(ctx, e.pgConfig(e.nodes[0])); err != nil {
		return nil, err
	}
	if err := createDatabase(ctx, e.nodes[0].c.URL("postgres"), envDatabase); err != nil {
		return nil, err
	}
	if e.nodes[1].c, err = pgcluster.StartStandby(ctx, e.pgConfig(e.nodes[1]), e.nodes[0].c); err != nil {
		return nil, err
	}
	if err := pgcluster.SyncStandby(ctx, e.nodes[0].c); err != nil {
		return nil, err
	}
	e.synced = true

	// MinIO.
	if e.minioPort, err = pgcluster.FreePort(); err != nil {
		return nil, err
	}
	e.minioDir = filepath.Join(cfg.StateDir, "minio", "data")
	if err := e.StartMinIO(ctx); err != nil {
		return nil, err
	}
	if err := localstack.EnsureBucket(ctx, e.minio.Endpoint, localstack.MinIOAccessKey, localstack.MinIOSecretKey, envBucket); err != nil {
		return nil, err
	}

	// A proxy per agent and service.
	agentEnv := map[string][]string{}
	for i := 1; i <= cfg.Agents; i++ {
		id := localstack.AgentName(i)
		e.ids = append(e.ids, id)
		var hosts []string
		for n, node := range e.nodes {
			p, err := e.tp.CreateProxy(ctx, proxyName(id, "pg"+strconv.Itoa(n)), "", "127.0.0.1:"+strconv.Itoa(node.port))
			if err != nil {
				return nil, err
			}
			hosts = append(hosts, p.Listen)
		}
		s3, err := e.tp.CreateProxy(ctx, proxyName(id, "s3"), "", "127.0.0.1:"+strconv.Itoa(e.minioPort))
		if err != nil {
			return nil, err
		}
		db := url.URL{Scheme: "postgres", User: url.User(pgcluster.SuperUser), Host: hosts[0] + "," + hosts[1], Path: "/" + envDatabase,
			RawQuery: "sslmode=disable&target_session_attrs=read-write"}
		agentEnv[id] = []string{
			"SILT_DATABASE_URL=" + db.String(),
			"SILT_OBJECTSTORE=" + localstack.S3URL("http://"+s3.Listen, envBucket, ""),
		}
	}

	env := append([]string{
		"AWS_ACCESS_KEY_ID=" + localstack.MinIOAccessKey,
		"AWS_SECRET_ACCESS_KEY=" + localstack.MinIOSecretKey,
	}, cfg.AgentEnv...)
	e.cluster, err = localstack.StartCluster(ctx, localstack.ClusterConfig{
		StateDir:    filepath.Join(cfg.StateDir, "cluster"),
		SiltBin:     cfg.SiltBin,
		HAProxyBin:  cfg.HAProxyBin,
		Agents:      cfg.Agents,
		DatabaseURL: "set per agent",
		ObjectStore: "set per agent",
		Env:         env,
		AgentEnv:    func(id string) []string { return agentEnv[id] },
		StopGrace:   45 * time.Second,
		Logger:      cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	for _, a := range e.cluster.Agents() {
		e.agentURLs[a.ID] = a.URL
		e.watch(a)
	}
	return e, nil
}

func proxyName(agent, service string) string { return agent + "-" + service }

func (e *Env) pgConfig(n *pgNode) pgcluster.Config {
	c := pgcluster.DefaultConfig()
	c.DataDir, c.Port = n.dir, n.port
	c.RelocateRoot = "" // the state directory must be reachable: nothing left outside it
	c.Logger = e.logger
	return c
}

func createDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("chaos: connect to postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("chaos: create database: %w", err)
	}
	return nil
}

// LBURL is the API through HAProxy.
func (e *Env) LBURL() string { return e.cluster.LBURL }

// KafkaAddr is the Kafka listener through the load balancer.
func (e *Env) KafkaAddr() string { return e.cluster.KafkaAddr }

// AdminKey is the cluster's admin API key: the workloads use it, as
// agents require keys by default.
func (e *Env) AdminKey() string { return e.cluster.AdminKey }

// AgentIDs lists the agents, running or not.
func (e *Env) AgentIDs() []string { return append([]string(nil), e.ids...) }

// AgentURL is an agent's own address (fixed across restarts).
func (e *Env) AgentURL(id string) string { return e.agentURLs[id] }

// AgentURLs lists every agent's address.
func (e *Env) AgentURLs() []string {
	out := make([]string, 0, len(e.ids))
	for _, id := range e.ids {
		out = append(out, e.agentURLs[id])
	}
	return out
}

// AgentPID is a running agent's process id, 0 when it is not running.
func (e *Env) AgentPID(id string) int {
	if a := e.cluster.Agent(id); a != nil {
		return a.PID()
	}
	return 0
}

// AgentLog is the path of an agent's log.
func (e *Env) AgentLog(id string) string { return e.cluster.AgentLog(id) }

// Exits reports agents that exited without the nemesis stopping them.
func (e *Env) Exits() <-chan agentExit { return e.exits }

func (e *Env) watch(a *localstack.AgentProc) {
	go func() {
		<-a.Exited()
		e.mu.Lock()
		expected := e.expected[a.ID]
		delete(e.expected, a.ID)
		e.mu.Unlock()
		if !expected {
			select {
			case e.exits <- agentExit{id: a.ID, err: fmt.Errorf("agent %s (pid %d) exited; see %s", a.ID, a.PID(), a.Log)}:
			default:
			}
		}
	}()
}

func (e *Env) expect(id string) {
	e.mu.Lock()
	e.expected[id] = true
	e.mu.Unlock()
}

// KillAgent ends an agent with SIGKILL.
func (e *Env) KillAgent(ctx context.Context, id string) error {
	e.expect(id)
	return e.cluster.KillAgent(ctx, id)
}

// TermAgent stops an agent with SIGTERM and waits for it to exit.
func (e *Env) TermAgent(ctx context.Context, id string) error {
	e.expect(id)
	return e.cluster.StopAgent(ctx, id)
}

// StartAgent starts a stopped agent again on its port.
func (e *Env) StartAgent(ctx context.Context, id string) error {
	if err := e.cluster.StartAgent(ctx, id); err != nil {
		return err
	}
	if a := e.cluster.Agent(id); a != nil {
		e.watch(a)
	}
	return nil
}

// SignalAgent sends sig (SIGSTOP, SIGCONT) to a running agent.
func (e *Env) SignalAgent(id string, sig syscall.Signal) error {
	pid := e.AgentPID(id)
	if pid == 0 {
		return fmt.Errorf("chaos: agent %s is not running", id)
	}
	return syscall.Kill(pid, sig)
}

// Primary is the Postgres node taking writes.
func (e *Env) Primary() *pgcluster.Cluster {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.nodes[e.primary].c
}

// PrimaryURL is a direct URL of the current primary's Silt database.
func (e *Env) PrimaryURL() string {
	return e.Primary().URL(envDatabase)
}

// StandbySynced reports whether the standby streams synchronously, so
// that a failover loses no acknowledged commit.
func (e *Env) StandbySynced() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.synced
}

// CrashPostgres stops the primary in immediate mode.
func (e *Env) CrashPostgres(ctx context.Context) error { return e.Primary().StopImmediate(ctx) }

// RestartPostgres starts the crashed primary again (crash recovery).
func (e *Env) RestartPostgres(ctx context.Context) error { return e.Primary().Restart(ctx) }

// KillPrimary kills the primary's processes (SIGKILL), as when its
// machine dies; Promote must follow. It first waits until the standby
// streams as the synchronous standby: a commit acknowledged while it was
// away (a crash of the primary, and its restart, leave it reconnecting for
// a few seconds) is on it only once it caught up.
func (e *Env) KillPrimary(ctx context.Context) error {
	if !e.StandbySynced() {
		return errors.New("chaos: no synchronous standby to fail over to")
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := pgcluster.SyncStandby(wctx, e.Primary()); err != nil {
		return err
	}
	return e.Primary().Kill(ctx)
}

// Promote promotes the standby; it becomes the primary, and a new standby
// is built in the old primary's place in the background (RebuildDone
// tells when it is synchronous).
func (e *Env) Promote(ctx context.Context) error {
	e.mu.Lock()
	standby := e.nodes[1-e.primary]
	e.mu.Unlock()
	if err := standby.c.Promote(ctx); err != nil {
		return err
	}
	e.mu.Lock()
	e.primary = 1 - e.primary
	e.synced = false
	done := make(chan struct{})
	e.rebuild = done
	old, primary := e.nodes[1-e.primary], e.nodes[e.primary]
	e.mu.Unlock()
	go func() {
		defer close(done)
		err := e.rebuildStandby(context.WithoutCancel(ctx), old, primary)
		if err != nil {
			e.logger.Error("rebuilding the standby", "err", err)
			return
		}
		e.mu.Lock()
		e.synced = true
		e.mu.Unlock()
	}()
	return nil
}

// rebuildStandby replaces the dead node with a fresh standby of primary,
// retrying while the primary is down (a crash fault may hit it midway).
func (e *Env) rebuildStandby(ctx context.Context, dead, primary *pgNode) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	started := false
	for {
		err := func() error {
			if !started {
				if err := dead.c.Remove(); err != nil {
					return err
				}
				c, err := pgcluster.StartStandby(ctx, e.pgConfig(dead), primary.c)
				if err != nil {
					return err
				}
				e.mu.Lock()
				dead.c = c
				e.mu.Unlock()
				started = true
			}
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			return pgcluster.SyncStandby(sctx, primary.c)
		}()
		if err == nil {
			return nil
		}
		e.logger.Info("rebuilding the standby; trying again", "err", err)
		if !sleepCtx(ctx, time.Second) {
			return fmt.Errorf("chaos: rebuild the standby: %w", err)
		}
	}
}

// WaitStandby waits until the standby is synchronous again after a
// failover.
func (e *Env) WaitStandby(ctx context.Context) error {
	e.mu.Lock()
	done := e.rebuild
	e.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if !e.StandbySynced() {
		return errors.New("chaos: the standby was not rebuilt (see the log)")
	}
	return nil
}

// StartMinIO starts MinIO on its port and data directory.
func (e *Env) StartMinIO(ctx context.Context) error {
	m, err := localstack.StartMinIO(ctx, localstack.MinIOConfig{Bin: e.cfg.MinIOBin, DataDir: e.minioDir, Port: e.minioPort, Logger: e.logger})
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.minio = m
	e.mu.Unlock()
	return nil
}

// KillMinIO ends MinIO with SIGKILL.
func (e *Env) KillMinIO() error {
	e.mu.Lock()
	m := e.minio
	e.minio = nil
	e.mu.Unlock()
	if m == nil {
		return errors.New("chaos: minio is not running")
	}
	return m.Kill()
}

// Toxic adds a toxic to the proxies of service ("pg" or "s3") of the
// given agents (both Postgres nodes for "pg").
func (e *Env) Toxic(ctx context.Context, agents []string, service string, t toxiproxy.Toxic) error {
	for _, name := range e.proxies(agents, service) {
		if _, err := e.tp.AddToxic(ctx, name, t); err != nil {
			return err
		}
	}
	return nil
}

// RemoveToxic removes a toxic added by Toxic; a missing one is no error.
func (e *Env) RemoveToxic(ctx context.Context, agents []string, service, toxic string) error {
	var errs []error
	for _, name := range e.proxies(agents, service) {
		if err := e.tp.RemoveToxic(ctx, name, toxic); err != nil && !errors.Is(err, toxiproxy.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (e *Env) proxies(agents []string, service string) []string {
	var out []string
	for _, id := range agents {
		if service == "pg" {
			out = append(out, proxyName(id, "pg0"), proxyName(id, "pg1"))
		} else {
			out = append(out, proxyName(id, service))
		}
	}
	return out
}

// Stop stops everything it started, the agents first.
func (e *Env) Stop(ctx context.Context) {
	if e.cluster != nil {
		for _, id := range e.ids {
			e.expect(id)
			_ = e.SignalAgent(id, syscall.SIGCONT)
		}
		if err := e.cluster.Stop(ctx); err != nil {
			e.logger.Warn("stopping the agents", "err", err)
		}
	}
	if e.tpSrv != nil {
		_ = e.tpSrv.Stop()
	}
	e.mu.Lock()
	m := e.minio
	e.minio = nil
	done := e.rebuild
	e.mu.Unlock()
	if m != nil {
		_ = m.Stop()
	}
	if done != nil {
		select {
		case <-done:
		case <-time.After(time.Minute):
		}
	}
	for _, n := range e.nodes {
		if n != nil && n.c != nil {
			_ = n.c.Kill(ctx)
		}
	}
}
