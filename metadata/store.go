package metadata

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config configures a Store.
type Config struct {
	URL      string // postgres:// URL
	MaxConns int32  // pool size
	// ConnectTimeout bounds each new connection.
	ConnectTimeout time.Duration
	Logger         *slog.Logger
}

// DefaultConfig returns the defaults; URL must be set.
func DefaultConfig() Config {
	return Config{MaxConns: 16, ConnectTimeout: 5 * time.Second}
}

// Validate checks the config.
func (c Config) Validate() error {
	if c.URL == "" {
		return fmt.Errorf("%w: database URL is required", ErrInvalidArgument)
	}
	if c.MaxConns < 2 {
		return fmt.Errorf("%w: max conns %d below 2", ErrInvalidArgument, c.MaxConns)
	}
	if _, err := pgxpool.ParseConfig(c.URL); err != nil {
		return fmt.Errorf("%w: database URL: %v", ErrInvalidArgument, err)
	}
	return nil
}

// Store is Silt's metadata over a connection pool.
type Store struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
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
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("metadata: open pool: %w", err)
	}
	return New(pool, cfg.Logger), nil
}

// New wraps an existing pool.
func New(pool *pgxpool.Pool, logger *slog.Logger) *Store {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Store{pool: pool, logger: logger}
}

// Pool exposes the pool, for migrations and the LISTEN connection.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Ping checks that Postgres answers.
func (s *Store) Ping(ctx context.Context) error {
	return classify("ping", s.pool.Ping(ctx))
}

// inTx runs fn in a transaction, mapping errors with classify.
func (s *Store) inTx(ctx context.Context, what string, fn func(tx pgx.Tx) error) error {
	return classify(what, pgx.BeginFunc(ctx, s.pool, fn))
}
