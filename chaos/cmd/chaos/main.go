// Command chaos runs Silt's fault suite (make chaos): real agents behind
// HAProxy on a Postgres primary with a synchronous standby and MinIO, with
// Toxiproxy in between; a fault schedule drawn from a seed; a history
// checker. Then the overload test. It prints the seed, writes
// history.jsonl, verdict.json and verdict.md, and exits 1 when any
// guarantee was broken.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"silt/chaos"
	"silt/localstack"
)

func main() {
	os.Exit(run())
}

func run() int {
	d := chaos.DefaultConfig()
	fs := flag.NewFlagSet("chaos", flag.ExitOnError)
	duration := fs.Duration("duration", d.Duration, "length of the fault phase (CHAOS_DURATION in make)")
	seedFlag := fs.String("seed", "", "seed of the fault schedule and workloads (CHAOS_SEED in make; default: random, printed)")
	out := fs.String("out", "", "directory for history.jsonl, verdict.json and verdict.md (default chaos-results/<seed>)")
	state := fs.String("state", "", "scratch directory for Postgres, MinIO and logs (default: a temporary directory, removed after a passing run)")
	minioBin := fs.String("minio-bin", os.Getenv(localstack.EnvMinIOBin), "the MinIO server binary")
	toxiBin := fs.String("toxiproxy-bin", os.Getenv(localstack.EnvToxiproxyBin), "the Toxiproxy server binary")
	haproxyBin := fs.String("haproxy-bin", "", "the HAProxy binary (default: on PATH or /usr/sbin/haproxy)")
	siltBin := fs.String("silt-bin", "", "the silt binary (default: go build ./cmd/silt)")
	race := fs.Bool("race", false, "build the agents with -race")
	faults := fs.String("faults", "all", "comma-separated fault kinds")
	agents := fs.Int("agents", d.Agents, "number of agents")
	overload := fs.Bool("overload", true, "run the overload test after the fault suite")
	suite := fs.Bool("suite", true, "run the fault suite (-suite=false: the overload test alone)")
	overloadFor := fs.Duration("overload-duration", chaos.DefaultOverloadConfig().Overload, "how long the overload lasts")
	overloadRecords := fs.Int("overload-records", chaos.DefaultOverloadConfig().RecordsPerRequest, "records per overload request")
	overloadRecordBytes := fs.Int("overload-record-bytes", chaos.DefaultOverloadConfig().RecordBytes, "bytes of each overload record")
	everyKind := fs.Bool("every-kind", false, "keep the fault phase going until every kind of fault ran once")
	smoke := fs.Bool("smoke", false, "the smoke run of make test: every kind of fault once with short holds, then the checker (implies -every-kind; -duration still applies)")
	_ = fs.Parse(os.Args[1:])

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	seed, err := parseSeed(*seedFlag)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Printf("chaos: seed %d (repeat with CHAOS_SEED=%d)\n", seed, seed)
	kinds, err := chaos.ParseKinds(*faults)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if *out == "" {
		*out = filepath.Join("chaos-results", strconv.FormatUint(seed, 10))
	}
	tmp := *state == ""
	if tmp {
		if *state, err = os.MkdirTemp("", "silt-chaos-"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	// The postgres user (when we are root) must enter it.
	_ = os.Chmod(*state, 0o755)
	if *siltBin == "" {
		root, err := localstack.ModuleRoot(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		*siltBin = filepath.Join(*state, "silt")
		logger.Info("building silt", "race", *race)
		if err := localstack.BuildSilt(ctx, root, *siltBin, *race); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}

	cfg := d
	if *smoke {
		cfg = chaos.SmokeConfig()
		*everyKind = true
		set := false
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == "duration" })
		if !set {
			*duration = cfg.Duration
		}
	}
	cfg.Seed, cfg.Duration, cfg.EveryKind = seed, *duration, *everyKind
	cfg.StateDir, cfg.Out = filepath.Join(*state, "suite"), *out
	cfg.SiltBin, cfg.MinIOBin, cfg.ToxiproxyBin, cfg.HAProxyBin = *siltBin, *minioBin, *toxiBin, *haproxyBin
	cfg.Agents = *agents
	cfg.Faults.Kinds = kinds
	cfg.Logger = logger
	res := &chaos.Result{Seed: seed, Verdict: chaos.Verdict{Valid: true}}
	if *suite {
		if res, err = chaos.Run(ctx, cfg); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: the run failed: %v (state kept in %s)\n", err, *state)
			return 1
		}
	}
	if *overload && ctx.Err() == nil {
		oc := chaos.DefaultOverloadConfig()
		oc.StateDir, oc.SiltBin, oc.MinIOBin, oc.Logger = filepath.Join(*state, "overload"), *siltBin, *minioBin, logger
		oc.Overload, oc.RecordsPerRequest, oc.RecordBytes = *overloadFor, *overloadRecords, *overloadRecordBytes
		if *race {
			fmt.Fprintln(os.Stderr, "chaos: the overload test measures RSS; it is skipped with -race")
		} else if res.Overload, err = chaos.RunOverload(ctx, oc); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: the overload test failed to run: %v (state kept in %s)\n", err, *state)
			return 1
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := res.Write(*out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Print(res.Markdown())
	fmt.Printf("\nchaos: seed %d: verdict in %s/verdict.md and verdict.json, history in %s/history.jsonl\n", seed, *out, *out)
	if !res.Valid() {
		fmt.Printf("chaos: FAIL (state kept in %s)\n", *state)
		return 1
	}
	if tmp {
		_ = os.RemoveAll(*state)
	}
	fmt.Println("chaos: PASS")
	return 0
}

func parseSeed(s string) (uint64, error) {
	if s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("chaos: seed %q: %w", s, err)
		}
		return n, nil
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	// Keep seeds short enough to type.
	return binary.BigEndian.Uint64(b[:]) % 1_000_000_000, nil
}
