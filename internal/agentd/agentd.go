package agentd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"silt/agent"
	"silt/auth"
	"silt/batcher"
	"silt/fetch"
	"silt/groups"
	"silt/internal/tlsreload"
	"silt/kafka"
	"silt/metadata"
	"silt/migrations"
	"silt/objectstore"
	"silt/objectstore/bucketurl"
	"silt/ownership"
)

// Config is an agent's whole configuration.
type Config struct {
	AgentID     string
	Advertise   string
	DatabaseURL string
	// DatabaseDirectURL, when set, reaches Postgres directly while
	// DatabaseURL leads to a connection pooler in transaction mode
	// (pgbouncer): the LISTEN connection and the migrations, which need
	// a session of their own, use it (see metadata.Config.TransactionPooler).
	DatabaseDirectURL string
	DBMaxConns        int
	// DBSession bounds every Postgres session (lock, statement and
	// idle-in-transaction timeouts, TCP keepalives).
	DBSession metadata.Session
	// MemoryLimit is the agent's memory: the Go runtime's soft limit (set
	// by the program: see cmd/silt) and what the memory budgets of
	// HTTP, Batcher, Fetch, Kafka and Ownership are derived from
	// (DeriveBudgets) and checked against (Validate). See memory.go.
	MemoryLimit int64
	// MaxClusterPartitions bounds the partitions of all topics together.
	MaxClusterPartitions int64
	// DrainDelay: on shutdown, /readyz fails this long before the listener
	// closes, for load balancers that cannot retry elsewhere.
	DrainDelay      time.Duration
	ObjectStore     string // URL; ignored when Overrides.Bucket is set
	ShutdownTimeout time.Duration
	HTTP            agent.Config
	Batcher         batcher.Config
	Fetch           fetch.Config
	Ownership       ownership.Config // AgentID, Address and Version are filled in from above

	// Groups bounds consumer groups and their lag metrics.
	Groups groups.Config

	// Auth tunes key authentication (on unless HTTP.Auth is none) and
	// Quotas the per-key quotas.
	Auth   auth.Config
	Quotas auth.QuotaConfig
	// BootstrapAdminKey, when set, is made a live admin key at start
	// (for deployments that cannot run `silt keys create` first).
	BootstrapAdminKey string
	// TLS serves HTTPS (and optional mutual TLS) when a certificate is set.
	TLS tlsreload.Config
	// MetricsListen, when set, serves /metrics there instead of on the
	// API listener.
	MetricsListen string
	// Kafka is the Kafka listener; it is off while Kafka.Listen is empty.
	// It requires keys (SASL, or a client certificate) when HTTP does, and
	// serves TLS with the same certificate.
	Kafka kafka.Config
}

// DefaultConfig returns the defaults, the memory budgets derived from
// DefaultMemoryLimit; AgentID, DatabaseURL and ObjectStore must be filled
// in.
func DefaultConfig() Config {
	c := Config{
		MemoryLimit:          DefaultMemoryLimit,
		DBMaxConns:           16,
		DBSession:            metadata.DefaultSession(),
		MaxClusterPartitions: metadata.DefaultConfig().MaxClusterPartitions,
		ShutdownTimeout:      30 * time.Second,
		HTTP:                 agent.DefaultConfig(),
		Batcher:              batcher.DefaultConfig(),
		Fetch:                fetch.DefaultConfig(),
		Ownership:            ownership.DefaultConfig(),
		Groups:               groups.DefaultConfig(),
		Auth:                 auth.DefaultConfig(),
		Quotas:               auth.DefaultQuotaConfig(),
		TLS:                  tlsreload.DefaultConfig(),
		Kafka:                kafka.DefaultConfig(),
	}
	c.DeriveBudgets(nil)
	return c
}

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case c.AgentID == "":
		return errors.New("agent id is required")
	case c.DatabaseURL == "":
		return errors.New("database URL is required")
	case c.ShutdownTimeout <= 0:
		return errors.New("shutdown timeout must be positive")
	case c.DrainDelay < 0 || c.DrainDelay >= c.ShutdownTimeout:
		return errors.New("drain delay must be at least 0 and shorter than the shutdown timeout")
	case c.DBMaxConns < 2:
		return errors.New("database pool needs at least 2 connections")
	}
	if err := c.DBSession.Validate(); err != nil {
		return err
	}
	if err := c.validateMemory(); err != nil {
		return err
	}
	if err := c.HTTP.Validate(); err != nil {
		return err
	}
	if err := c.Fetch.Validate(); err != nil {
		return err
	}
	if err := c.ownershipConfig().Validate(); err != nil {
		return err
	}
	if err := c.Groups.Validate(); err != nil {
		return err
	}
	if err := c.Auth.Validate(); err != nil {
		return err
	}
	if err := c.Quotas.Validate(); err != nil {
		return err
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	if c.BootstrapAdminKey != "" {
		if _, ok := auth.ParseToken(c.BootstrapAdminKey); !ok {
			return errors.New("the bootstrap admin key is not of the form silt_<16 hex digits>_<64 hex digits> (make one with `silt keys generate`)")
		}
	}
	if c.Kafka.Listen != "" {
		if err := c.Kafka.Validate(); err != nil {
			return err
		}
	}
	if err := c.Batcher.Validate(); err != nil {
		return err
	}
	return c.sessionBelowFlush()
}

// sessionBelowFlush refuses Postgres session bounds at or above the flush
// timeout. A commit stuck on a lock must fail on its own bound, in
// Postgres, while its flush still has time: then its producers get a
// retriable 503 and the flushes queued behind it go on, rather than the
// whole flush timeout passing first. Zero leaves the server's setting and
// is not checked; so is a bound set in the database URL, which wins.
func (c Config) sessionBelowFlush() error {
	for _, b := range []struct {
		flag string
		d    time.Duration
	}{
		{"--db-lock-timeout", c.DBSession.LockTimeout},
		{"--db-statement-timeout", c.DBSession.StatementTimeout},
		{"--db-idle-in-transaction-timeout", c.DBSession.IdleInTransactionTimeout},
	} {
		if b.d > 0 && b.d >= c.Batcher.FlushTimeout {
			return fmt.Errorf("%s (%v) must be below --flush-timeout (%v): a commit held up in Postgres must fail there, and a stalled session's locks go, while a flush still has time",
				b.flag, b.d, c.Batcher.FlushTimeout)
		}
	}
	return nil
}

func (c Config) ownershipConfig() ownership.Config {
	o := c.Ownership
	o.AgentID, o.Address, o.Version = c.AgentID, c.Advertise, c.HTTP.Version
	return o
}

// Overrides replace parts for tests.
type Overrides struct {
	// Bucket replaces the object store named by Config.ObjectStore.
	Bucket objectstore.Bucket
	// Listener replaces listening on Config.HTTP.Listen.
	Listener net.Listener
	// KafkaListener replaces listening on Config.Kafka.Listen (which
	// must still be set for the Kafka listener to run).
	KafkaListener net.Listener
}

// Agent is a running agent.
type Agent struct {
	cfg     Config
	logger  *slog.Logger
	store   *metadata.Store
	bucket  objectstore.Bucket
	batcher *batcher.Batcher
	fetcher *fetch.Fetcher
	notify  *fetch.Notifier
	authn   *auth.Authenticator
	owner   *ownership.Owner
	stopBG  context.CancelFunc // stops background loops (the notifier)
	drain   chan struct{}      // closed when Stop begins: ends long-polls
	http    *agent.Server
	ln      net.Listener
	kafka   *kafka.Server // nil when off
	kafkaLn net.Listener
	served  chan error
	reg     *prometheus.Registry
	bg      sync.WaitGroup // background loops on the stopBG context
	metrics *http.Server   // --metrics-listen, when set
	mln     net.Listener
}

// Start builds and starts an agent. Stop shuts it down.
func Start(ctx context.Context, cfg Config, ov Overrides, logger *slog.Logger) (_ *Agent, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ObjectStore == "" && ov.Bucket == nil {
		return nil, errors.New("object store URL is required")
	}
	logger = logger.With("agent_id", cfg.AgentID)
	// a is local, not the named result: the cleanup below must still see
	// it after an error return sets the result to nil.
	a := &Agent{cfg: cfg, logger: logger, served: make(chan error, 2), reg: prometheus.NewRegistry(), drain: make(chan struct{})}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	mcfg := metadata.DefaultConfig()
	mcfg.URL = cfg.DatabaseURL
	mcfg.TransactionPooler = cfg.DatabaseDirectURL != ""
	mcfg.MaxConns = int32(cfg.DBMaxConns)
	mcfg.Session = cfg.DBSession
	mcfg.MaxClusterPartitions = cfg.MaxClusterPartitions
	mcfg.ApplicationName = "silt agent " + cfg.AgentID
	mcfg.Logger = logger
	mcfg.Registerer = a.reg
	if a.store, err = metadata.Open(ctx, mcfg); err != nil {
		return nil, err
	}
	closers = append(closers, a.store.Close)
	if err := a.migrate(ctx, mcfg); err != nil {
		return nil, err
	}

	raw, backend := ov.Bucket, "custom"
	if raw == nil {
		if raw, err = bucketurl.Open(ctx, cfg.ObjectStore); err != nil {
			return nil, err
		}
		backend = strings.SplitN(cfg.ObjectStore, ":", 2)[0]
	}
	a.bucket = objectstore.Instrument(raw, a.reg, backend)

	// The fetcher, built below, keeps each flush segment for the tail
	// readers (no flush happens before the listeners start).
	var seed atomic.Pointer[fetch.Fetcher]
	written := func(key string, obj []byte) {
		if f := seed.Load(); f != nil {
			f.Seed(key, obj)
		}
	}
	if a.batcher, err = batcher.New(ctx, cfg.Batcher, batcher.Deps{Bucket: a.bucket, Committer: a.store, Logger: logger, Registerer: a.reg, Written: written}); err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = a.batcher.Close(context.WithoutCancel(ctx)) })

	if a.notify, err = fetch.NewNotifier(cfg.directURL(), metadata.NotifyChannel, logger, a.reg); err != nil {
		return nil, err
	}
	groupWake := groups.NewNotifications()
	a.notify.Also(metadata.GroupsChannel, groupWake.Note, groupWake.WakeAll)
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	a.stopBG = stopBG
	authDeps, err := a.startAuth(ctx, bg)
	if err != nil {
		stopBG()
		a.bg.Wait()
		return nil, err
	}
	go a.notify.Run(bg)
	closers = append(closers, func() { stopBG(); <-a.notify.Stopped(); a.bg.Wait() })
	if a.fetcher, err = fetch.New(cfg.Fetch, fetch.Deps{
		Index: a.store, Objects: a.bucket, Watcher: a.notify, Logger: logger, Registerer: a.reg, Done: a.drain,
	}); err != nil {
		return nil, err
	}
	seed.Store(a.fetcher)

	if a.owner, err = ownership.New(cfg.ownershipConfig(), ownership.Deps{
		Store: a.store, Bucket: a.bucket, Logger: logger, Registerer: a.reg,
	}); err != nil {
		return nil, err
	}
	if err := a.owner.Start(ctx); err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = a.owner.Stop(context.WithoutCancel(ctx)) })

	coordinator, err := groups.New(cfg.Groups, groups.Deps{Store: a.store, Logger: logger, Waker: groupWake})
	if err != nil {
		return nil, err
	}
	lag, err := groups.NewLagCollector(cfg.Groups, a.store, logger)
	if err != nil {
		return nil, err
	}
	if err := a.reg.Register(lag); err != nil {
		return nil, fmt.Errorf("group lag metrics: %w", err)
	}
	if err := a.reg.Register(newGCCollector(a.store, logger, 15*time.Second)); err != nil {
		return nil, fmt.Errorf("janitor metrics: %w", err)
	}
	lagHistory, err := groups.NewLagHistory(cfg.Groups, a.store, logger)
	if err != nil {
		return nil, err
	}
	a.bg.Go(func() { lagHistory.Run(bg) })

	httpCfg := cfg.HTTP
	httpCfg.MetricsElsewhere = cfg.MetricsListen != ""
	httpCfg.AgentID = cfg.AgentID
	a.http, err = agent.New(httpCfg, agent.Deps{
		Topics:   a.store,
		Producer: a.batcher,
		Fetcher:  a.fetcher,
		Cluster:  a.owner,
		Ready: []agent.ReadyCheck{
			{Name: "postgres", Check: a.store.Ping},
			{Name: "objectstore", Check: a.probeBucket},
			{Name: "flush", Check: a.batcher.Ready},
		},
		Gatherer:   a.reg,
		Registerer: a.reg,
		Logger:     logger,
		Groups:     coordinator,
		LagHistory: lagHistory,
		Auth:       authDeps,
	})
	if err != nil {
		return nil, err
	}
	if err := a.startMetrics(); err != nil {
		return nil, err
	}
	closers = append(closers, a.stopMetrics)
	a.ln = ov.Listener
	if a.ln == nil {
		if a.ln, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
			return nil, fmt.Errorf("listen %s: %w", cfg.HTTP.Listen, err)
		}
	}
	closers = append(closers, func() { a.ln.Close() })
	ln := a.ln
	var serverTLS *tls.Config
	if cfg.TLS.Enabled() {
		certs, err := tlsreload.New(cfg.TLS, logger, a.reg)
		if err != nil {
			return nil, err
		}
		a.bg.Go(func() { certs.Run(bg) })
		serverTLS = certs.ServerConfig()
		ln = tls.NewListener(a.ln, serverTLS)
	}
	if cfg.Kafka.Listen != "" {
		kcfg := cfg.Kafka
		kcfg.RequireAuth = cfg.HTTP.Auth != agent.AuthNone
		if a.kafka, err = kafka.New(kcfg, kafka.Deps{
			Topics: a.store, Producer: a.batcher, Fetcher: a.fetcher, Watcher: a.notify, Groups: coordinator,
			Logger: logger, Registerer: a.reg, Auth: a.authn, Audit: authDeps.Audit, Producers: a.store,
		}); err != nil {
			return nil, err
		}
		a.kafkaLn = ov.KafkaListener
		if a.kafkaLn == nil {
			if a.kafkaLn, err = net.Listen("tcp", cfg.Kafka.Listen); err != nil {
				return nil, fmt.Errorf("kafka listen %s: %w", cfg.Kafka.Listen, err)
			}
		}
		kln := a.kafkaLn
		if serverTLS != nil {
			kln = tls.NewListener(a.kafkaLn, serverTLS)
		}
		go func() {
			if err := a.kafka.Serve(kln); err != nil {
				select {
				case a.served <- err:
				default:
				}
			}
		}()
		if kcfg.RequireAuth && serverTLS == nil {
			logger.Warn("the Kafka listener takes SASL PLAIN credentials (API keys) without TLS; set --tls-cert and --tls-key outside a trusted network")
		}
	}
	go func() { a.served <- a.http.Serve(ln) }()
	if cfg.HTTP.Auth == agent.AuthNone {
		logger.Warn("authentication is off (--auth=none): anyone who reaches this agent may read, write and delete every topic and group")
	}
	logger.Info("agent started", "listen", a.ln.Addr().String(), "kafka", a.KafkaAddr(), "tls", cfg.TLS.Enabled(), "mutual_tls", cfg.TLS.ClientCAFile != "",
		"auth", cfg.HTTP.Auth, "database", metadata.RedactURL(cfg.DatabaseURL), "objectstore", a.bucket.Name(), "version", cfg.HTTP.Version)
	return a, nil
}

// startAuth builds authentication, quotas and the audit log, and runs
// their background loops on bg: the key cache is invalidated by NOTIFY on
// metadata.KeysChannel, over the commit listener's connection.
func (a *Agent) startAuth(ctx, bg context.Context) (agent.AuthDeps, error) {
	keys := auth.NewKeys(a.store)
	if a.cfg.BootstrapAdminKey != "" {
		id, _ := auth.ParseToken(a.cfg.BootstrapAdminKey)
		switch err := keys.Bootstrap(ctx, a.cfg.BootstrapAdminKey, "bootstrap-admin-"+id); {
		case errors.Is(err, auth.ErrBootstrapRevoked):
			a.logger.Warn("the bootstrap admin key was revoked and stays revoked; drop --bootstrap-admin-key", "key_id", id)
		case err != nil:
			return agent.AuthDeps{}, fmt.Errorf("bootstrap admin key: %w", err)
		}
	}
	authn, err := auth.New(a.cfg.Auth, auth.Deps{Store: a.store, Logger: a.logger, Registerer: a.reg})
	if err != nil {
		return agent.AuthDeps{}, err
	}
	a.authn = authn
	a.notify.Also(metadata.KeysChannel, authn.Invalidate, authn.InvalidateAll)
	ttl := a.cfg.Ownership.AgentTTL
	quotas, err := auth.NewQuotas(a.cfg.Quotas, func(ctx context.Context) (int, error) {
		live, err := a.store.LiveAgents(ctx, ttl)
		return len(live), err
	}, a.logger, a.reg)
	if err != nil {
		return agent.AuthDeps{}, err
	}
	a.bg.Go(func() { authn.Run(bg) })
	a.bg.Go(func() { quotas.Run(bg) })
	return agent.AuthDeps{Authenticator: authn, Keys: keys, Audit: auth.NewAuditor(a.store, a.logger, a.cfg.AgentID),
		Quotas: quotas, Producers: a.store}, nil
}

// startMetrics serves /metrics on --metrics-listen, when set.
func (a *Agent) startMetrics() error {
	if a.cfg.MetricsListen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", a.cfg.MetricsListen)
	if err != nil {
		return fmt.Errorf("metrics listen %s: %w", a.cfg.MetricsListen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	a.mln, a.metrics = ln, &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := a.metrics.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("metrics listener failed", "err", err)
		}
	}()
	a.logger.Info("metrics listening", "addr", ln.Addr().String())
	return nil
}

func (a *Agent) stopMetrics() {
	if a.metrics != nil {
		_ = a.metrics.Close()
	}
}

// MetricsAddr is the address of the metrics listener ("" without one).
func (a *Agent) MetricsAddr() string {
	if a.mln == nil {
		return ""
	}
	return a.mln.Addr().String()
}

// Addr is the address the HTTP server listens on.
func (a *Agent) Addr() string { return a.ln.Addr().String() }

// KafkaAddr is the address the Kafka listener listens on, or "" when it
// is off.
func (a *Agent) KafkaAddr() string {
	if a.kafkaLn == nil {
		return ""
	}
	return a.kafkaLn.Addr().String()
}

// Store is the agent's metadata store.
func (a *Agent) Store() *metadata.Store { return a.store }

// Bucket is the agent's (instrumented) object store.
func (a *Agent) Bucket() objectstore.Bucket { return a.bucket }

// Owner is the agent's leader election and janitor.
func (a *Agent) Owner() *ownership.Owner { return a.owner }

// Notifier is the agent's commit listener.
func (a *Agent) Notifier() *fetch.Notifier { return a.notify }

// HTTP is the agent's API server.
func (a *Agent) HTTP() *agent.Server { return a.http }

// Metrics is the agent's Prometheus registry.
func (a *Agent) Metrics() *prometheus.Registry { return a.reg }

// Wait blocks until ctx ends or the HTTP server (or the Kafka listener)
// fails.
func (a *Agent) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-a.served:
		return err
	}
}

// Stop shuts down in the reverse order of construction, within the
// configured shutdown timeout: Kafka listener, HTTP, batcher final flush,
// pools.
func (a *Agent) Stop(ctx context.Context) error {
	a.logger.Info("shutting down")
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ShutdownTimeout)
	defer cancel()
	var errs []error
	if a.cfg.DrainDelay > 0 {
		// Readiness fails first, so load balancers stop sending new work
		// while requests in flight are still served.
		a.http.Drain()
		a.logger.Info("draining", "for", a.cfg.DrainDelay)
		t := time.NewTimer(a.cfg.DrainDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	close(a.drain)
	if a.kafka != nil {
		if err := a.kafka.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := a.http.Shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := a.owner.Stop(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := a.batcher.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	a.stopMetrics()
	a.stopBG()
	<-a.notify.Stopped()
	a.bg.Wait()
	a.store.Close()
	a.logger.Info("agent stopped")
	return errors.Join(errs...)
}

// probeBucket checks that the bucket answers: a missing probe key is fine.
func (a *Agent) probeBucket(ctx context.Context) error {
	_, err := a.bucket.Stat(ctx, "silt-readyz-probe")
	if err == nil || errors.Is(err, objectstore.ErrNotExist) {
		return nil
	}
	return err
}

// directURL is the URL of sessions that must stay on one Postgres
// session: LISTEN and the migrations' advisory lock.
func (c Config) directURL() string {
	if c.DatabaseDirectURL != "" {
		return c.DatabaseDirectURL
	}
	return c.DatabaseURL
}

// migrate applies the migrations over the store's pool, or over a pool of
// its own on the direct URL when the store's goes through a transaction
// pooler (the migrations hold a session-level advisory lock).
func (a *Agent) migrate(ctx context.Context, mcfg metadata.Config) error {
	if !mcfg.TransactionPooler {
		return migrateWithRetry(ctx, a.store, a.logger)
	}
	mcfg.URL, mcfg.TransactionPooler, mcfg.MaxConns, mcfg.Registerer = a.cfg.DatabaseDirectURL, false, 2, nil
	direct, err := metadata.Open(ctx, mcfg)
	if err != nil {
		return fmt.Errorf("database direct URL: %w", err)
	}
	defer direct.Close()
	return migrateWithRetry(ctx, direct, a.logger)
}

// migrateWithRetry applies migrations, waiting up to a minute for Postgres.
func migrateWithRetry(ctx context.Context, store *metadata.Store, logger *slog.Logger) error {
	deadline := time.Now().Add(time.Minute)
	for {
		applied, err := migrations.Apply(ctx, store.Pool())
		if err == nil {
			if len(applied) > 0 {
				logger.Info("migrations applied", "migrations", applied)
			}
			return nil
		}
		if errors.Is(err, migrations.ErrNewerSchema) || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		logger.Warn("waiting for postgres", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
