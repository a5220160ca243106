// Command localstack starts Silt's backing services, or the whole local
// cluster, as real processes on loopback ports.
//
//	localstack exec [flags] -- CMD ARGS...   start, run CMD with the services' env, stop (always)
//	localstack up [flags]                    start and leave running; prints the env file path
//	localstack down [flags]                  stop what `up` started
//	localstack cluster [flags]               Postgres, MinIO, three agents and HAProxy in the
//	                                         foreground (make localstack); Ctrl-C stops them all
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"silt/localstack"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: localstack exec|up|down|cluster [flags] [-- CMD ARGS...]")
		return 2
	}
	verb := args[0]
	if verb == "cluster" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return runCluster(ctx, args[1:], os.Stdout, logger)
	}
	fs := flag.NewFlagSet(verb, flag.ContinueOnError)
	state := fs.String("state", "", "state directory (default: a temporary one for exec, .silt-services for up/down)")
	minioBin := fs.String("minio-bin", os.Getenv("SILT_MINIO_BIN"), "path to the minio binary")
	toxiproxyBin := fs.String("toxiproxy-bin", os.Getenv("SILT_TOXIPROXY_BIN"), "path to the toxiproxy server binary, exported to tests as "+localstack.EnvToxiproxyBin+" (optional)")
	pg := fs.Bool("postgres", true, "start PostgreSQL")
	minio := fs.Bool("minio", true, "start MinIO")
	fast := fs.Bool("fast", true, "run Postgres with fsync=off and synchronous_commit=off (tests); --fast=false runs it durable (benchmarks)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg := localstack.ServicesConfig{
		StateDir: *state, Postgres: *pg, MinIO: *minio, MinIOBin: *minioBin,
		ToxiproxyBin: *toxiproxyBin, Fast: *fast, Logger: logger,
	}
	switch verb {
	case "exec":
		if fs.NArg() == 0 {
			fmt.Fprintln(os.Stderr, "localstack exec: missing command after --")
			return 2
		}
		if cfg.StateDir == "" {
			dir, err := os.MkdirTemp("", "silt-services-")
			if err != nil {
				logger.Error("state dir", "err", err)
				return 1
			}
			defer os.RemoveAll(dir)
			_ = os.Chmod(dir, 0o755) // the postgres user must traverse it when we are root
			cfg.StateDir = dir
		}
		return execWith(ctx, cfg, fs.Args(), logger)
	case "up":
		if cfg.StateDir == "" {
			cfg.StateDir = ".silt-services"
		}
		cfg.Detached = true
		svc, err := localstack.StartServices(ctx, cfg)
		if err != nil {
			logger.Error("start services", "err", err)
			return 1
		}
		fmt.Print(svc.EnvFile())
		abs, _ := filepath.Abs(filepath.Join(cfg.StateDir, "env"))
		logger.Info("services are up; source the env file to use them", "env_file", abs)
		return 0
	case "down":
		if cfg.StateDir == "" {
			cfg.StateDir = ".silt-services"
		}
		if err := localstack.StopState(ctx, cfg.StateDir, logger); err != nil {
			logger.Error("stop services", "err", err)
			return 1
		}
		return 0
	default:
		fmt.Fprintf(os.Stderr, "localstack: unknown verb %q\n", verb)
		return 2
	}
}

// execWith starts the services, runs the command with their env and stops
// them whatever the command's outcome.
func execWith(ctx context.Context, cfg localstack.ServicesConfig, argv []string, logger *slog.Logger) int {
	svc, err := localstack.StartServices(ctx, cfg)
	if err != nil {
		logger.Error("start services", "err", err)
		return 1
	}
	defer func() {
		if err := svc.Stop(context.WithoutCancel(ctx)); err != nil {
			logger.Error("stop services", "err", err)
		}
	}()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), svc.Environ()...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		logger.Error("run command", "err", err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		err = <-done
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		if exit.ExitCode() < 0 {
			return 1
		}
		return exit.ExitCode()
	default:
		logger.Error("run command", "err", err)
		return 1
	}
}
