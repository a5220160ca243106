package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5"

	"silt/agent"
	"silt/metadata"

	"silt/internal/pgcluster"
)

// runDevCmd starts a private Postgres under --data-dir/pg, a file object
// store under --data-dir/objects and one agent, and stops them all on
// Ctrl-C. A second run reuses the data.
func runDevCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := defaultAgentConfig()
	cfg.LogFormat = "text"
	// Anonymous, so on loopback only.
	cfg.Agent.HTTP.Auth = agent.AuthNone
	cfg.Agent.HTTP.Listen = devListen
	cfg.Agent.Kafka.Listen = "localhost:9092" // the Kafka listener is on in dev
	cfg.Agent.Kafka.AutoCreateTopics = true
	fs := newFlagSet("dev")
	var dataDir string
	fs.StringVar(&dataDir, "data-dir", ".silt", "where the private Postgres and the objects live")
	agentFlags(fs, &cfg, false)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkDevListen("--listen", cfg.Agent.HTTP.Listen, cfg.Agent.HTTP.Auth); err != nil {
		return err
	}
	if cfg.Agent.Kafka.Listen != "" {
		if err := checkDevListen("--kafka-listen", cfg.Agent.Kafka.Listen, cfg.Agent.HTTP.Auth); err != nil {
			return err
		}
	}
	logger, err := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(abs, "objects"), 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if os.Geteuid() == 0 {
		// The private Postgres runs as the postgres user; it must reach pg/.
		// When a parent directory keeps it out, pgcluster keeps the cluster
		// in a directory of its own and records it in pg.location.
		_ = os.Chmod(abs, 0o755)
	}
	pc := pgcluster.DefaultConfig()
	pc.DataDir = filepath.Join(abs, "pg")
	pc.Logger = logger
	pg, err := pgcluster.Start(ctx, pc)
	if err != nil {
		return err
	}
	defer func() {
		if err := pg.Stop(context.WithoutCancel(ctx)); err != nil {
			logger.Error("stop postgres", "err", err)
		}
	}()
	if err := ensureDatabase(ctx, pg.URL("postgres"), "silt"); err != nil {
		return err
	}
	cfg.Agent.DatabaseURL = pg.URL("silt")
	cfg.Agent.ObjectStore = "file://" + filepath.Join(abs, "objects")
	if cfg.Agent.AgentID == "" {
		cfg.Agent.AgentID = "dev"
	}
	if err := cfg.finish(); err != nil {
		return err
	}
	return runAgent(ctx, cfg, logger, func(addr string) {
		kafka := ""
		if cfg.Agent.Kafka.Listen != "" {
			kafka = ", Kafka " + cfg.Agent.Kafka.AdvertisedAddr
		}
		fmt.Fprintf(stdout, "Silt is running: http://%s%s (Postgres %s, data in %s; objects in %s). Ctrl-C stops it.\n",
			displayAddr(addr), kafka, metadata.RedactURL(cfg.Agent.DatabaseURL), pg.DataDir(), filepath.Join(abs, "objects"))
	})
}

// devListen is where silt dev listens: loopback only, since it is
// anonymous.
const devListen = "127.0.0.1:8080"

// checkDevListen refuses an anonymous dev agent on a non-loopback address
// given by flag (its HTTP or its Kafka listener).
func checkDevListen(flag, listen, authMode string) error {
	if authMode != agent.AuthNone {
		return nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("%s %q: %w", flag, listen, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("%s %q: silt dev serves without authentication, so it listens on loopback only (127.0.0.1, ::1 or localhost); run silt agent to serve others", flag, listen)
	}
	return nil
}

// ensureDatabase creates database name if it is missing.
func ensureDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to private postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("check database: %w", err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// displayAddr turns a wildcard listen address into one a browser can open.
func displayAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
