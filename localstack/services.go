package localstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"silt/internal/pgcluster"
)

// Environment variables through which the services reach tests and tools.
const (
	EnvPostgresURL    = "SILT_TEST_POSTGRES_URL"
	EnvMinIOEndpoint  = "SILT_TEST_MINIO_ENDPOINT"
	EnvMinIOAccessKey = "SILT_TEST_MINIO_ACCESS_KEY"
	EnvMinIOSecretKey = "SILT_TEST_MINIO_SECRET_KEY"
	// EnvToxiproxyBin is the Toxiproxy server binary; tests start their own
	// servers from it (internal/testenv.Toxiproxy).
	EnvToxiproxyBin = "SILT_TEST_TOXIPROXY_BIN"
	// EnvMinIOBin is the MinIO server binary, for tests that run a MinIO
	// of their own to crash it (package chaos).
	EnvMinIOBin = "SILT_TEST_MINIO_BIN"
)

// ServicesConfig selects and configures the backing services.
type ServicesConfig struct {
	StateDir string // data, logs and the env file live here
	Postgres bool
	MinIO    bool
	MinIOBin string
	// ToxiproxyBin, when set, is exported as EnvToxiproxyBin (absolute);
	// nothing is started from it here.
	ToxiproxyBin string
	// Fast runs Postgres without fsync and synchronous commit (tests);
	// otherwise it runs durable (fsync=on, synchronous_commit=on), as
	// benchmarks must.
	Fast     bool
	Detached bool // leave services running after this process exits
	Logger   *slog.Logger
}

// Services is the set of running backing services.
type Services struct {
	PG    *pgcluster.Cluster
	MinIO *MinIO
	Env   map[string]string
}

// StartServices starts the selected services and writes <state>/env.
func StartServices(ctx context.Context, cfg ServicesConfig) (*Services, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("localstack: state dir: %w", err)
	}
	s := &Services{Env: map[string]string{}}
	if cfg.ToxiproxyBin != "" {
		bin, err := executable(cfg.ToxiproxyBin)
		if err != nil {
			return nil, fmt.Errorf("localstack: toxiproxy binary: %w", err)
		}
		s.Env[EnvToxiproxyBin] = bin
	}
	if cfg.MinIO && cfg.MinIOBin != "" {
		if bin, err := executable(cfg.MinIOBin); err == nil {
			s.Env[EnvMinIOBin] = bin
		}
	}
	if cfg.Postgres {
		pc := pgcluster.DefaultConfig()
		pc.DataDir = filepath.Join(cfg.StateDir, "pg")
		pc.Fast = cfg.Fast
		pc.MaxConnections = 500
		pc.Logger = cfg.Logger
		pg, err := pgcluster.Start(ctx, pc)
		if err != nil {
			return nil, err
		}
		s.PG = pg
		s.Env[EnvPostgresURL] = pg.URL("postgres")
	}
	if cfg.MinIO {
		m, err := StartMinIO(ctx, MinIOConfig{
			Bin:      cfg.MinIOBin,
			DataDir:  filepath.Join(cfg.StateDir, "minio", "data"),
			Detached: cfg.Detached,
			Logger:   cfg.Logger,
		})
		if err != nil {
			s.Stop(context.WithoutCancel(ctx))
			return nil, err
		}
		s.MinIO = m
		s.Env[EnvMinIOEndpoint] = m.Endpoint
		s.Env[EnvMinIOAccessKey] = MinIOAccessKey
		s.Env[EnvMinIOSecretKey] = MinIOSecretKey
		if err := os.WriteFile(filepath.Join(cfg.StateDir, "minio.pid"), []byte(fmt.Sprint(m.PID())), 0o644); err != nil {
			s.Stop(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("localstack: pid file: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(cfg.StateDir, "env"), []byte(s.EnvFile()), 0o644); err != nil {
		s.Stop(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("localstack: env file: %w", err)
	}
	return s, nil
}

// executable returns the absolute path of an existing executable file.
func executable(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%s is not an executable file", abs)
	}
	return abs, nil
}

// EnvFile renders the environment as shell export lines.
func (s *Services) EnvFile() string {
	keys := make([]string, 0, len(s.Env))
	for k := range s.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "export %s='%s'\n", k, s.Env[k])
	}
	return b.String()
}

// Environ returns the environment as KEY=VALUE pairs.
func (s *Services) Environ() []string {
	out := make([]string, 0, len(s.Env))
	for k, v := range s.Env {
		out = append(out, k+"="+v)
	}
	return out
}

// Stop stops every started service, MinIO first.
func (s *Services) Stop(ctx context.Context) error {
	var errs []error
	if s.MinIO != nil {
		errs = append(errs, s.MinIO.Stop())
	}
	if s.PG != nil {
		errs = append(errs, s.PG.Stop(ctx))
	}
	return errors.Join(errs...)
}

// StopState stops services recorded in a state directory by a detached run.
func StopState(ctx context.Context, stateDir string, logger *slog.Logger) error {
	var errs []error
	if b, err := os.ReadFile(filepath.Join(stateDir, "minio.pid")); err == nil {
		var pid int
		if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 {
			errs = append(errs, stopPID(pid, 20*time.Second))
		}
		_ = os.Remove(filepath.Join(stateDir, "minio.pid"))
	}
	pgDir := filepath.Join(stateDir, "pg")
	_, inPlace := os.Stat(filepath.Join(pgDir, "PG_VERSION"))
	_, relocated := os.Stat(pgcluster.PointerFile(pgDir))
	if inPlace == nil || relocated == nil {
		pc := pgcluster.DefaultConfig()
		pc.DataDir = pgDir
		pc.Logger = logger
		errs = append(errs, pgcluster.StopDataDir(ctx, pc))
	}
	return errors.Join(errs...)
}
