package agentd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"silt/agent"
	"silt/batcher"
	"silt/fetch"
	"silt/groups"
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
	DBMaxConns  int
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
	// Kafka is the Kafka listener; it is off while Kafka.Listen is empty.
	Kafka kafka.Config
}

// DefaultConfig returns the defaults; AgentID, DatabaseURL and
// ObjectStore must be filled in.
func DefaultConfig() Config {
	return Config{
		DBMaxConns:      16,
		ShutdownTimeout: 30 * time.Second,
		HTTP:            agent.DefaultConfig(),
		Batcher:         batcher.DefaultConfig(),
		Fetch:           fetch.DefaultConfig(),
		Ownership:       ownership.DefaultConfig(),
		Groups:          groups.DefaultConfig(),
		Kafka:           kafka.DefaultConfig(),
	}
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
	case c.Ownership.Janitor.OrphanAge < 2*c.Batcher.FlushTimeout:
		// A flush's object has no segment row until its commit, up to a
		// flush timeout after the PUT: the orphan sweep must not see it
		// as an orphan (the factor two leaves room for clock skew).
		return fmt.Errorf("orphan age %v must be at least twice the flush timeout %v", c.Ownership.Janitor.OrphanAge, c.Batcher.FlushTimeout)
	case c.DBMaxConns < 2:
		return errors.New("database pool needs at least 2 connections")
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
	if c.Kafka.Listen != "" {
		if err := c.Kafka.Validate(); err != nil {
			return err
		}
	}
	return c.Batcher.Validate()
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
	owner   *ownership.Owner
	stopBG  context.CancelFunc // stops background loops (the notifier)
	drain   chan struct{}      // closed when Stop begins: ends long-polls
	http    *agent.Server
	ln      net.Listener
	kafka   *kafka.Server // nil when off
	kafkaLn net.Listener
	served  chan error
	reg     *prometheus.Registry
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
	mcfg.MaxConns = int32(cfg.DBMaxConns)
	mcfg.Logger = logger
	if a.store, err = metadata.Open(ctx, mcfg); err != nil {
		return nil, err
	}
	closers = append(closers, a.store.Close)
	if err := migrateWithRetry(ctx, a.store, logger); err != nil {
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

	if a.batcher, err = batcher.New(ctx, cfg.Batcher, batcher.Deps{Bucket: a.bucket, Committer: a.store, Logger: logger, Registerer: a.reg}); err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = a.batcher.Close(context.WithoutCancel(ctx)) })

	if a.notify, err = fetch.NewNotifier(cfg.DatabaseURL, metadata.NotifyChannel, logger, a.reg); err != nil {
		return nil, err
	}
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	a.stopBG = stopBG
	go a.notify.Run(bg)
	closers = append(closers, func() { stopBG(); <-a.notify.Stopped() })
	if a.fetcher, err = fetch.New(cfg.Fetch, fetch.Deps{
		Index: a.store, Objects: a.bucket, Watcher: a.notify, Logger: logger, Registerer: a.reg, Done: a.drain,
	}); err != nil {
		return nil, err
	}

	if a.owner, err = ownership.New(cfg.ownershipConfig(), ownership.Deps{
		Store: a.store, Bucket: a.bucket, Logger: logger, Registerer: a.reg,
	}); err != nil {
		return nil, err
	}
	if err := a.owner.Start(ctx); err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = a.owner.Stop(context.WithoutCancel(ctx)) })

	coordinator, err := groups.New(cfg.Groups, groups.Deps{Store: a.store, Logger: logger})
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

	a.http, err = agent.New(cfg.HTTP, agent.Deps{
		Topics:   a.store,
		Producer: a.batcher,
		Fetcher:  a.fetcher,
		Cluster:  a.owner,
		Ready: []agent.ReadyCheck{
			{Name: "postgres", Check: a.store.Ping},
			{Name: "objectstore", Check: a.probeBucket},
		},
		Gatherer:   a.reg,
		Registerer: a.reg,
		Logger:     logger,
		Groups:     coordinator,
	})
	if err != nil {
		return nil, err
	}
	a.ln = ov.Listener
	if a.ln == nil {
		if a.ln, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
			return nil, fmt.Errorf("listen %s: %w", cfg.HTTP.Listen, err)
		}
	}
	closers = append(closers, func() { a.ln.Close() })
	if cfg.Kafka.Listen != "" {
		if a.kafka, err = kafka.New(cfg.Kafka, kafka.Deps{
			Topics: a.store, Producer: a.batcher, Fetcher: a.fetcher, Watcher: a.notify, Logger: logger, Registerer: a.reg,
		}); err != nil {
			return nil, err
		}
		a.kafkaLn = ov.KafkaListener
		if a.kafkaLn == nil {
			if a.kafkaLn, err = net.Listen("tcp", cfg.Kafka.Listen); err != nil {
				return nil, fmt.Errorf("kafka listen %s: %w", cfg.Kafka.Listen, err)
			}
		}
		go func() {
			if err := a.kafka.Serve(a.kafkaLn); err != nil {
				select {
				case a.served <- err:
				default:
				}
			}
		}()
	}
	go func() { a.served <- a.http.Serve(a.ln) }()
	logger.Info("agent started", "listen", a.ln.Addr().String(), "kafka", a.KafkaAddr(), "objectstore", a.bucket.Name(), "version", cfg.HTTP.Version)
	return a, nil
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
	a.stopBG()
	<-a.notify.Stopped()
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
