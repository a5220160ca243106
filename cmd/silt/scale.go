package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"silt/internal/pgcluster"
	"silt/scale"
)

// scaleConfig is everything `silt scale` is configured with.
type scaleConfig struct {
	load         scale.Config
	databaseURL  string
	pgDir        string
	pgSettings   string
	experiment   string
	killFraction float64
	timeout      time.Duration
	indexRows    string
	groupCounts  string
	index        scale.IndexConfig
	week         scale.WeekConfig
	suite        bool
	quick        bool
	outDir       string
	jsonPath     string
	logLevel     string
	keep         bool
}

// defaultPGSettings tune the private Postgres of `silt scale` for this
// kind of machine: durable (fsync and synchronous commit on), a buffer
// cache of a few GiB, room for every simulated agent's pool.
const defaultPGSettings = "shared_buffers=2GB,effective_cache_size=8GB,max_wal_size=4GB,checkpoint_timeout=15min," +
	"maintenance_work_mem=512MB,track_io_timing=on,shared_preload_libraries=pg_stat_statements"

func scaleFlags(fs *flagSet, c *scaleConfig) {
	l := &c.load
	*l = scale.DefaultConfig()
	c.index = scale.DefaultIndexConfig()
	c.week = scale.DefaultWeekConfig()
	fs.StringVar(&c.databaseURL, "database-url", "", "Postgres server to simulate against (any database on it: each experiment creates a database of its own and drops it after); empty starts a private, durable Postgres in --pg-dir")
	fs.StringVar(&c.pgDir, "pg-dir", ".silt-scale/pg", "data directory of the private Postgres started when --database-url is empty (removed at the end unless --keep)")
	fs.StringVar(&c.pgSettings, "pg-settings", defaultPGSettings, "settings of the private Postgres, name=value separated by commas (fsync stays on)")
	fs.StringVar(&c.experiment, "experiment", "load", "what to run: load (agents flushing, looking up, renewing leases and running groups), groups (consumer group members only, heartbeating and committing, at each of --group-counts), converge (ownership settling after a start and after agents die), index (fetch lookups over synthetic index rows) or week (index rows per GiB over a simulated week with the janitor merging)")
	fs.BoolVar(&c.suite, "suite", false, "run every sweep (agents, partitions, groups, index rows, convergence, week) and write the tables to --out")
	fs.BoolVar(&c.quick, "quick", false, "with --suite: small sizes and short phases (seconds), to check the suite runs")
	fs.StringVar(&c.outDir, "out", "docs/scale", "where --suite writes results.md and results.json")
	fs.StringVar(&c.jsonPath, "json", "", "also write the results as JSON to this file")
	fs.StringVar(&c.logLevel, "log-level", "error", "log level of the simulated agents")
	fs.BoolVar(&c.keep, "keep", false, "keep the databases (and the private Postgres's data directory) after the run")

	fs.IntVar(&l.Agents, "agents", l.Agents, "simulated agents, each with a pool of its own")
	fs.IntVar(&l.PoolSize, "pool-size", l.PoolSize, "connections in each agent's pool")
	fs.IntVar(&l.Topics, "topics", l.Topics, "topics taking the produce")
	fs.IntVar(&l.Partitions, "partitions", l.Partitions, "partitions per topic")
	fs.float64Var(&l.FlushRate, "flush-rate", l.FlushRate, "flushes per second per agent")
	fs.IntVar(&l.FlushPartitions, "flush-partitions", l.FlushPartitions, "chunks (partitions) per flush")
	fs.IntVar(&l.FlushInflight, "flush-inflight", l.FlushInflight, "flushes each agent keeps in flight at most")
	fs.float64Var(&l.LookupRate, "lookup-rate", l.LookupRate, "fetch index lookups per second per agent")
	fs.IntVar(&l.Groups, "groups", l.Groups, "consumer groups")
	fs.StringVar(&c.groupCounts, "group-counts", "10,100,1000,10000", "groups: the group counts to sweep, separated by commas (each run has --group-members members per group on --agents agents, and no produce)")
	fs.IntVar(&l.GroupMembers, "group-members", l.GroupMembers, "members per group")
	fs.DurationVar(&l.GroupHeartbeat, "group-heartbeat", l.GroupHeartbeat, "each member's heartbeat interval")
	fs.DurationVar(&l.GroupCommit, "group-commit", l.GroupCommit, "each member's offset commit interval")
	fs.IntVar(&l.GroupInflight, "group-inflight", l.GroupInflight, "group operations each agent keeps in flight at most")
	fs.BoolVar(&l.Janitor, "janitor", l.Janitor, "run each agent's janitor beside its lease rounds")
	fs.BoolVar(&l.Listen, "listen", l.Listen, "give each agent a LISTEN connection on the commit channel, as its fetcher keeps")
	fs.DurationVar(&l.Warmup, "warmup", l.Warmup, "unmeasured time before each measured phase")
	fs.DurationVar(&l.Duration, "duration", l.Duration, "measured time of each load phase")
	fs.float64Var(&c.killFraction, "kill-fraction", 0.1, "converge: the fraction of agents cut off from Postgres after ownership settled")
	fs.DurationVar(&c.timeout, "converge-timeout", 3*time.Minute, "converge: how long to wait for ownership to settle")
	fs.StringVar(&c.indexRows, "index-rows", "0,1000000,10000000", "index: the index sizes to measure at, in rows, ascending (rows are added by COPY between steps)")
	fs.IntVar(&c.index.Partitions, "index-partitions", c.index.Partitions, "index: partitions the rows are spread over")
	fs.IntVar(&c.index.Lookups, "index-lookups", c.index.Lookups, "index: lookups of each kind per step")
	fs.IntVar(&c.week.Partitions, "week-partitions", c.week.Partitions, "week: partitions produced to")
	fs.IntVar(&c.week.Hours, "week-hours", c.week.Hours, "week: simulated hours")
	fs.BytesVar(&c.week.BytesPerMinute, "week-bytes-per-minute", c.week.BytesPerMinute, "week: bytes produced per simulated minute over all partitions (partition p takes a share proportional to 2^-p)")
}

func runScaleCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c scaleConfig
	fs := newFlagSet("scale")
	scaleFlags(fs, &c)
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	logger, err := newLogger(stderr, c.logLevel, "text")
	if err != nil {
		return err
	}
	pr := func(format string, args ...any) {
		fmt.Fprintf(stdout, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	admin := c.databaseURL
	if admin == "" {
		pg, err := startScalePostgres(ctx, &c, logger)
		if err != nil {
			return err
		}
		defer func() {
			if err := pg.Stop(context.WithoutCancel(ctx)); err != nil {
				pr("%v", err)
			}
			if !c.keep {
				_ = os.RemoveAll(pg.DataDir())
			}
		}()
		admin = pg.URL("postgres")
		pr("private Postgres (fsync on) at %s, data in %s", admin, pg.DataDir())
	}
	env := scale.Env{AdminURL: admin, Keep: c.keep, Logger: logger, Log: pr}
	if c.suite {
		sc := scale.DefaultSuite()
		if c.quick {
			sc = scale.QuickSuite()
		}
		rep, err := scale.RunSuite(ctx, env, sc)
		if rep != nil {
			if werr := rep.Write(c.outDir); werr != nil {
				err = errors.Join(err, werr)
			} else {
				pr("wrote %s", filepath.Join(c.outDir, "results.md"))
			}
			if c.jsonPath != "" {
				err = errors.Join(err, scale.WriteJSON(c.jsonPath, rep))
			}
		}
		return err
	}
	var result any
	switch c.experiment {
	case "load":
		r, err := env.Load(ctx, c.load)
		if err != nil {
			return err
		}
		scale.WriteLoadTable(stdout, []*scale.LoadResult{r})
		fmt.Fprintln(stdout)
		scale.WriteOps(stdout, r)
		if r.Groups > 0 {
			fmt.Fprintln(stdout)
			scale.WriteGroupTable(stdout, []*scale.LoadResult{r})
		}
		result = r
	case "groups":
		counts, err := parseCounts("--group-counts", c.groupCounts)
		if err != nil {
			return err
		}
		runs, err := env.Groups(ctx, scale.GroupsConfig{Base: c.load, Counts: counts})
		if len(runs) > 0 {
			scale.WriteGroupTable(stdout, runs)
			for _, r := range runs {
				fmt.Fprintf(stdout, "\n%d groups:\n\n", r.Groups)
				scale.WriteOps(stdout, r)
			}
		}
		if err != nil {
			return err
		}
		result = runs
	case "converge":
		r, err := env.Converge(ctx, c.load, c.killFraction, c.timeout)
		if err != nil {
			return err
		}
		scale.WriteConvergeTable(stdout, []*scale.ConvergeResult{r})
		result = r
	case "index":
		steps, err := parseRowSteps(c.indexRows)
		if err != nil {
			return err
		}
		c.index.Steps = steps
		r, err := env.Index(ctx, c.index)
		if err != nil {
			return err
		}
		scale.WriteIndexTable(stdout, r)
		result = r
	case "week":
		r, err := env.Week(ctx, c.week)
		if err != nil {
			return err
		}
		scale.WriteWeekTable(stdout, r)
		result = r
	default:
		return fmt.Errorf("--experiment %q: want load, groups, converge, index or week", c.experiment)
	}
	if c.jsonPath != "" {
		return scale.WriteJSON(c.jsonPath, result)
	}
	return nil
}

func parseRowSteps(s string) ([]int64, error) {
	var out []int64
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil || n < 0 || len(out) > 0 && n < out[len(out)-1] {
			return nil, fmt.Errorf("--index-rows %q: want row counts, ascending, separated by commas", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// parseCounts parses positive counts separated by commas.
func parseCounts(flag, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s %q: want positive counts separated by commas", flag, s)
		}
		out = append(out, n)
	}
	return out, nil
}

// startScalePostgres starts the private, durable Postgres of a run.
func startScalePostgres(ctx context.Context, c *scaleConfig, logger *slog.Logger) (*pgcluster.Cluster, error) {
	pc := pgcluster.DefaultConfig()
	pc.DataDir = c.pgDir
	pc.MaxConnections = 800
	pc.Logger = logger
	pc.Settings = map[string]string{}
	for _, kv := range strings.Split(c.pgSettings, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--pg-settings %q: want name=value pairs separated by commas", c.pgSettings)
		}
		pc.Settings[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	if _, ok := pc.Settings["fsync"]; ok {
		return nil, errors.New("--pg-settings: fsync stays on in scale runs")
	}
	if err := os.MkdirAll(filepath.Dir(c.pgDir), 0o755); err != nil {
		return nil, err
	}
	return pgcluster.Start(ctx, pc)
}
