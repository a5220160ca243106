package metadata

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Store.
type Config struct {
	URL      string // postgres:// URL
	MaxConns int32  // pool size
	// ConnectTimeout bounds each new connection.
	ConnectTimeout time.Duration
	// Session bounds every connection of the pool; see Session.
	Session Session
	// ApplicationName names the pool's sessions in pg_stat_activity,
	// unless the URL names them.
	ApplicationName string
	Logger          *slog.Logger
	// Registerer receives the store's metrics; nil keeps them private.
	Registerer prometheus.Registerer
	// MaxClusterPartitions bounds the partitions of all topics together;
	// 0 leaves them unbounded.
	MaxClusterPartitions int64
	// TransactionPooler says that URL leads to a connection pooler in
	// transaction mode (pgbouncer with pool_mode=transaction), which hands
	// each transaction a server session of its own choosing. The store then
	// sends the session bounds at the start of each transaction it opens
	// (SET LOCAL), not in the startup message, which such a pooler refuses
	// or drops; and it uses no named prepared statements (pgx describes
	// each statement once per connection and runs it unnamed). Statements
	// outside a transaction run under the server's settings for the role:
	// set the same bounds there (ALTER ROLE ... SET). LISTEN and the
	// migrations' session lock need a direct connection, not this URL.
	TransactionPooler bool
}

// Session holds the bounds set on every Postgres session an agent opens,
// so that no lock is held for long on behalf of a client that stalled and
// a vanished client's session is dropped within seconds. Zero leaves the
// server's setting.
type Session struct {
	// LockTimeout bounds each wait for a lock (lock_timeout).
	LockTimeout time.Duration
	// StatementTimeout bounds each statement (statement_timeout).
	StatementTimeout time.Duration
	// IdleInTransactionTimeout ends a session that keeps a transaction
	// open without sending anything (idle_in_transaction_session_timeout).
	IdleInTransactionTimeout time.Duration
	// TCP keepalives and user timeout of the server's socket
	// (tcp_keepalives_idle, tcp_keepalives_interval, tcp_keepalives_count,
	// tcp_user_timeout).
	KeepalivesIdle     time.Duration
	KeepalivesInterval time.Duration
	KeepalivesCount    int
	TCPUserTimeout     time.Duration
}

// DefaultSession returns the defaults, each below the batcher's default
// flush timeout of 30 s.
func DefaultSession() Session {
	return Session{
		LockTimeout:              3 * time.Second,
		StatementTimeout:         10 * time.Second,
		IdleInTransactionTimeout: 5 * time.Second,
		KeepalivesIdle:           5 * time.Second,
		KeepalivesInterval:       2 * time.Second,
		KeepalivesCount:          3,
		TCPUserTimeout:           10 * time.Second,
	}
}

// Validate checks the bounds.
func (s Session) Validate() error {
	for name, d := range map[string]time.Duration{
		"lock timeout": s.LockTimeout, "statement timeout": s.StatementTimeout,
		"idle in transaction timeout": s.IdleInTransactionTimeout, "keepalives idle": s.KeepalivesIdle,
		"keepalives interval": s.KeepalivesInterval, "tcp user timeout": s.TCPUserTimeout,
	} {
		if d < 0 {
			return fmt.Errorf("%w: %s must not be negative", ErrInvalidArgument, name)
		}
		if d > 0 && d < time.Millisecond {
			return fmt.Errorf("%w: %s must be at least 1ms", ErrInvalidArgument, name)
		}
	}
	if s.KeepalivesCount < 0 {
		return fmt.Errorf("%w: keepalives count must not be negative", ErrInvalidArgument)
	}
	return nil
}

// Params returns the session bounds as run-time parameters of the startup
// message. Parameters already set in the URL (params) are kept.
func (s Session) Params(params map[string]string) {
	set := func(name string, v int64) {
		if _, ok := params[name]; ok || v <= 0 {
			return
		}
		params[name] = strconv.FormatInt(v, 10)
	}
	set("lock_timeout", s.LockTimeout.Milliseconds())
	set("statement_timeout", s.StatementTimeout.Milliseconds())
	set("idle_in_transaction_session_timeout", s.IdleInTransactionTimeout.Milliseconds())
	set("tcp_keepalives_idle", int64(s.KeepalivesIdle/time.Second))
	set("tcp_keepalives_interval", int64(s.KeepalivesInterval/time.Second))
	set("tcp_keepalives_count", int64(s.KeepalivesCount))
	set("tcp_user_timeout", s.TCPUserTimeout.Milliseconds())
}

// setLocal returns the SET LOCAL statements of the transaction-scoped
// bounds (lock, statement and idle-in-transaction timeouts; the TCP
// settings belong to the pooler's own sockets), or "" when none is set.
func (s Session) setLocal() string {
	var b strings.Builder
	for _, p := range []struct {
		name string
		d    time.Duration
	}{
		{"lock_timeout", s.LockTimeout},
		{"statement_timeout", s.StatementTimeout},
		{"idle_in_transaction_session_timeout", s.IdleInTransactionTimeout},
	} {
		if p.d > 0 {
			fmt.Fprintf(&b, "SET LOCAL %s = %d; ", p.name, p.d.Milliseconds())
		}
	}
	return strings.TrimSuffix(b.String(), " ")
}

// DefaultConfig returns the defaults; URL must be set.
func DefaultConfig() Config {
	return Config{MaxConns: 16, ConnectTimeout: 5 * time.Second, Session: DefaultSession(), MaxClusterPartitions: 100_000}
}

// Validate checks the config.
func (c Config) Validate() error {
	if c.URL == "" {
		return fmt.Errorf("%w: database URL is required", ErrInvalidArgument)
	}
	if c.MaxConns < 2 {
		return fmt.Errorf("%w: max conns %d below 2", ErrInvalidArgument, c.MaxConns)
	}
	if c.MaxClusterPartitions < 0 {
		return fmt.Errorf("%w: max cluster partitions must not be negative", ErrInvalidArgument)
	}
	if _, err := pgxpool.ParseConfig(c.URL); err != nil {
		return fmt.Errorf("%w: database URL: %v", ErrInvalidArgument, err)
	}
	return c.Session.Validate()
}

// Store is Silt's metadata over a connection pool.
type Store struct {
	pool    *pgxpool.Pool
	logger  *slog.Logger
	metrics *metrics
	// maxPartitions bounds all topics' partitions together (0: unbounded).
	maxPartitions int64
	// setLocal sets the session bounds for one transaction, behind a
	// transaction pooler ("" when they were set at connection start).
	setLocal string
}

// Open connects a pool. It does not wait for Postgres to be reachable.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("metadata: parse URL: %w", err)
	}
	pc.MaxConns = cfg.MaxConns
	if cfg.ConnectTimeout > 0 {
		pc.ConnConfig.ConnectTimeout = cfg.ConnectTimeout
	}
	var begin string
	if cfg.TransactionPooler {
		begin = cfg.Session.setLocal()
		if pc.ConnConfig.DefaultQueryExecMode == pgx.QueryExecModeCacheStatement {
			pc.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
		}
	} else {
		cfg.Session.Params(pc.ConnConfig.RuntimeParams)
	}
	if _, ok := pc.ConnConfig.RuntimeParams["application_name"]; !ok && cfg.ApplicationName != "" {
		pc.ConnConfig.RuntimeParams["application_name"] = cfg.ApplicationName
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("metadata: open pool: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Store{pool: pool, logger: logger, metrics: m, maxPartitions: cfg.MaxClusterPartitions, setLocal: begin}, nil
}

// Pool exposes the pool, for migrations and the LISTEN connection.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Ping checks that Postgres answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.classify("ping", s.pool.Ping(ctx))
}

// inTx runs fn in a transaction, mapping errors with classify.
func (s *Store) inTx(ctx context.Context, what string, fn func(tx pgx.Tx) error) error {
	return s.classify(what, pgx.BeginTxFunc(ctx, s.pool, s.txOptions(pgx.TxOptions{}), fn))
}

// txOptions returns opts with the session bounds added to the BEGIN when
// they must be set per transaction (see Config.TransactionPooler). The
// BEGIN and the SETs go in one simple-protocol message: no round trip more.
func (s *Store) txOptions(opts pgx.TxOptions) pgx.TxOptions {
	if s.setLocal == "" {
		return opts
	}
	begin := "BEGIN"
	if opts.IsoLevel != "" {
		begin += " ISOLATION LEVEL " + string(opts.IsoLevel)
	}
	if opts.AccessMode != "" {
		begin += " " + string(opts.AccessMode)
	}
	if opts.DeferrableMode != "" {
		begin += " " + string(opts.DeferrableMode)
	}
	opts.BeginQuery = begin + "; " + s.setLocal
	return opts
}

// classify maps driver errors to sentinels (see the package function) and
// counts the server's timeouts by kind.
func (s *Store) classify(what string, err error) error {
	if err == nil {
		return nil
	}
	if kind := timeoutKind(err); kind != "" {
		s.metrics.timeouts.WithLabelValues(kind).Inc()
	}
	return classify(what, err)
}
