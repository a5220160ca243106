package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"silt/bench"
	"silt/client"
	"silt/internal/agentd"
	"silt/kafka"
	"silt/objectstore/bucketurl"
)

// benchConfig is everything `silt bench` is configured with.
type benchConfig struct {
	opts           bench.Options
	url            string
	kafkaAddr      string
	rawBatchMin    int64
	databaseURL    string
	objectStore    string
	linger         time.Duration
	segmentBytes   int64
	recordSize     int64
	keys           string
	baselines      string
	natsBin        string
	rawDuration    time.Duration
	jsonPath       string
	suite          bool
	outDir         string
	catchUpProfile string
	cpuProfile     string
	memProfile     string
	logLevel       string
	token          string
	caFile         string
	security       string
	modes          []string
	rounds         int
}

func (fs *flagSet) float64Var(p *float64, name string, def float64, usage string) {
	fs.FlagSet.Float64Var(p, name, def, usage)
	fs.add(name, usage)
}

func benchFlags(fs *flagSet, c *benchConfig) {
	o := &c.opts
	*o = bench.DefaultOptions()
	c.linger = 100 * time.Millisecond
	c.segmentBytes = 8 << 20
	c.recordSize = int64(o.RecordSize)
	fs.StringVar(&c.url, "url", "", "base URL of an agent to benchmark; empty runs one in this process against --database-url and --objectstore")
	fs.StringVar(&o.Protocol, "protocol", o.Protocol, "drive Silt over http (binary produce and fetch) or kafka (franz-go's kgo against the Kafka listener)")
	fs.StringVar(&c.kafkaAddr, "kafka-addr", "", "the Kafka listener (host:port) of the agent at --url, for --protocol kafka")
	fs.StringVar(&o.KafkaCompression, "kafka-compression", "none", "codec of the Kafka producers' batches: none, gzip, snappy, lz4 or zstd")
	c.rawBatchMin = int64(kafka.DefaultConfig().RawBatchMinBytes)
	fs.BytesVar(&c.rawBatchMin, "kafka-raw-batch-min-bytes", c.rawBatchMin, "compressed Kafka batches at least this large are stored as sent by the agent run in this process; smaller ones are re-encoded")
	fs.StringVar(&c.databaseURL, "database-url", "", "Postgres URL for the agent run in this process")
	fs.StringVar(&c.objectStore, "objectstore", "", "object store URL for the agent run in this process and for the raw baseline (an s3:// or minio:// bucket is created when missing)")
	fs.IntVar(&o.Producers, "producers", o.Producers, "producer clients")
	fs.IntVar(&o.Consumers, "consumers", o.Consumers, "consumer clients (tailing, then catch-up); 0 measures producing only")
	fs.IntVar(&o.Topics, "topics", o.Topics, "topics, created fresh for the run")
	fs.IntVar(&o.Partitions, "partitions", o.Partitions, "partitions per topic")
	fs.BytesVar(&c.recordSize, "record-size", c.recordSize, "value bytes per record (its first 8 bytes carry the send time)")
	fs.float64Var(&o.Rate, "rate", o.Rate, "target records/s over all producers; 0 is as fast as possible")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "measured time")
	fs.DurationVar(&o.Warmup, "warmup", o.Warmup, "unmeasured time before it")
	fs.IntVar(&o.Batch, "batch", o.Batch, "records per produce request")
	fs.IntVar(&o.Inflight, "inflight", o.Inflight, "requests each producer keeps outstanding")
	fs.DurationVar(&c.linger, "linger", c.linger, "linger of the agent run in this process (an external agent uses its own)")
	fs.BytesVar(&c.segmentBytes, "max-segment-bytes", c.segmentBytes, "segment size of the agent run in this process")
	fs.StringVar(&c.keys, "keys", o.Keys.String(), "record keys: none (one partition per request, round-robin), random, or uniform:N (N distinct keys)")
	fs.StringVar(&o.Values, "values", o.Values, "record values: random (incompressible) or text (log-like JSON, about 3:1 under zstd)")
	fs.BoolVar(&o.Idempotent, "idempotent", o.Idempotent, "idempotent producers (one request in flight each)")
	fs.StringVar(&o.FetchEncoding, "fetch-encoding", o.FetchEncoding, "what the HTTP consumers fetch: batches (the stored batches, decoded by the consumer) or records (records encoded by the agent, application/vnd.silt.records.v1)")
	fs.BoolVar(&o.CatchUp, "catch-up", o.CatchUp, "read everything back from offset 0 after producing")
	fs.StringVar(&o.CatchUpOrder, "catch-up-order", o.CatchUpOrder, "how each HTTP consumer reads its partitions back: concurrent (all at once, one fetch in flight each, as a Kafka consumer) or sequential (one after another)")
	fs.DurationVar(&o.CatchUpTimeout, "catch-up-timeout", o.CatchUpTimeout, "bound on the catch-up read")
	fs.StringVar(&c.baselines, "baselines", "raw,nats", "baselines run with the same workload: raw (the object store itself), nats (NATS JetStream), both, or none")
	fs.StringVar(&c.natsBin, "nats-server", "", "nats-server binary for the NATS baseline (default: nats-server on PATH, else /usr/sbin/nats-server)")
	fs.DurationVar(&c.rawDuration, "raw-duration", 15*time.Second, "length of each of the raw baseline's PUT and GET phases")
	fs.StringVar(&c.jsonPath, "json", "", "also write the results as JSON to this file")
	fs.BoolVar(&c.suite, "suite", false, "run the whole suite (main workload, baselines, linger and partition sweeps) and write results and plots to --out")
	fs.StringVar(&c.outDir, "out", "docs/bench", "where --suite writes results.json, results.md and the PNG plots")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (load generator and in-process agent) to this file")
	fs.StringVar(&c.memProfile, "memprofile", "", "write an allocation profile of this process to this file")
	fs.StringVar(&c.catchUpProfile, "catch-up-cpuprofile", "", "write a CPU profile of the catch-up read alone to this file (not with --cpuprofile)")
	fs.StringVar(&c.logLevel, "log-level", "warn", "log level of the agent run in this process")
	fs.StringVar(&c.token, "token", "", "API key for --url (it must be allowed to create, produce to and consume from bench-* topics)")
	fs.StringVar(&c.caFile, "ca-file", "", "PEM CA of the --url agent's TLS certificate")
	fs.StringVar(&c.security, "security", bench.SecurityNone, "how the agent run in this process is reached: none (anonymous, HTTP), auth (keys required; the bench uses a key limited to its topics) or auth+tls (and HTTPS); a list (none,auth,auth+tls) runs the workload once per mode, --rounds times, on fresh agents, and compares them")
	fs.IntVar(&c.rounds, "rounds", 1, "with several --security modes: how many times each runs, interleaved (medians are reported)")
}

// finish checks the flags and fills the options.
func (c *benchConfig) finish() error {
	var err error
	if c.opts.Keys, err = bench.ParseKeyDist(c.keys); err != nil {
		return err
	}
	c.opts.RecordSize = int(c.recordSize)
	if err := c.opts.Validate(); err != nil {
		return err
	}
	if c.url == "" && (c.databaseURL == "" || c.objectStore == "") {
		return errors.New("give --url of an agent, or --database-url and --objectstore to run one here")
	}
	if c.suite && c.url != "" {
		return errors.New("--suite runs its own agents: give --database-url and --objectstore, not --url")
	}
	if c.modes, err = bench.ParseSecurity(c.security); err != nil {
		return err
	}
	if (len(c.modes) > 1 || c.modes[0] != bench.SecurityNone) && c.url != "" {
		return errors.New("--security is for the agent run in this process; for --url give --token and --ca-file")
	}
	if c.catchUpProfile != "" && c.cpuProfile != "" {
		return errors.New("--catch-up-cpuprofile and --cpuprofile: give one (one CPU profile at a time)")
	}
	if c.rounds < 1 {
		return errors.New("--rounds must be at least 1")
	}
	for _, b := range strings.Split(c.baselines, ",") {
		switch strings.TrimSpace(b) {
		case "raw", "nats", "none", "":
		default:
			return fmt.Errorf("--baselines %q: want raw, nats, raw,nats or none", c.baselines)
		}
	}
	return nil
}

func (c *benchConfig) wants(baseline string) bool {
	for _, b := range strings.Split(c.baselines, ",") {
		if strings.TrimSpace(b) == baseline {
			return true
		}
	}
	return false
}

// natsServer finds the nats-server binary.
func (c *benchConfig) natsServer() (string, error) {
	if c.natsBin != "" {
		return c.natsBin, nil
	}
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/nats-server"); err == nil {
		return "/usr/sbin/nats-server", nil
	}
	return "", errors.New("no nats-server found (install it with `make nats`, give --nats-server, or leave nats out of --baselines)")
}

func runBenchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c benchConfig
	fs := newFlagSet("bench")
	benchFlags(fs, &c)
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	if err := c.finish(); err != nil {
		return err
	}
	logger, err := newLogger(stderr, c.logLevel, "text")
	if err != nil {
		return err
	}
	terminal := false
	if f, ok := stdout.(*os.File); ok {
		terminal = bench.IsTerminal(f)
	}
	pr := bench.NewProgress(stdout, terminal)

	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if c.catchUpProfile != "" {
		// The first catch-up read of the run.
		var f *os.File
		done := false
		pr.OnPhase = func(phase string) {
			switch {
			case phase == "catch-up" && !done:
				done = true
				var err error
				if f, err = os.Create(c.catchUpProfile); err == nil && pprof.StartCPUProfile(f) != nil {
					f.Close()
					f = nil
				}
			case phase == "" && f != nil:
				pprof.StopCPUProfile()
				f.Close()
				f = nil
			}
		}
	}
	if c.memProfile != "" {
		runtime.MemProfileRate = 64 << 10
		defer func() {
			if f, err := os.Create(c.memProfile); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	if c.url == "" {
		benchRuntime(&c, pr)
	}
	if c.objectStore != "" {
		if err := bench.EnsureBucket(ctx, c.objectStore); err != nil {
			return err
		}
	}

	if c.suite {
		cfg := bench.DefaultSuite()
		cfg.DatabaseURL, cfg.ObjectStore, cfg.OutDir, cfg.Logger = c.databaseURL, c.objectStore, c.outDir, logger
		cfg.Main, cfg.Linger, cfg.SegmentBytes, cfg.RawDuration = c.opts, c.linger, c.segmentBytes, c.rawDuration
		if c.wants("nats") {
			if cfg.NATSBin, err = c.natsServer(); err != nil {
				return err
			}
		}
		rep, err := bench.RunSuite(ctx, cfg, pr)
		if err != nil {
			return err
		}
		rep.Main.WriteText(stdout)
		fmt.Fprintf(stdout, "wrote %s/results.json, results.md and plots\n", c.outDir)
		if c.jsonPath != "" {
			return bench.WriteJSON(c.jsonPath, rep)
		}
		return nil
	}
	return runBench(ctx, &c, pr, logger, stdout)
}

// loadGeneratorMemory is what the Go runtime's soft limit grants the load
// generator beside an agent run in this process.
const loadGeneratorMemory = 256 << 20

// benchRuntime runs the collector of a bench process that holds its agent
// as `silt agent` runs its own (agentd.GCPercent and a soft memory limit),
// unless GOGC or GOMEMLIMIT say otherwise: the agent's limit (512 MiB,
// more for segments over 8 MiB, as bench.LocalAgent sizes it) less what the
// runtime does not count, plus loadGeneratorMemory for the load generator.
func benchRuntime(c *benchConfig, pr *bench.Progress) {
	gogc := os.Getenv("GOGC")
	if gogc == "" {
		debug.SetGCPercent(agentd.GCPercent)
		gogc = strconv.Itoa(agentd.GCPercent)
	}
	if _, ok := os.LookupEnv("GOMEMLIMIT"); !ok {
		limit := max(int64(agentd.DefaultMemoryLimit), 64*c.segmentBytes)
		debug.SetMemoryLimit(agentd.RuntimeMemoryLimit(limit) + loadGeneratorMemory)
	}
	pr.Logf("silt: this process (agent and load generator) runs with GOGC=%s and a soft memory limit of %s",
		gogc, formatBytes(debug.SetMemoryLimit(-1)))
}

// runBench runs one workload against Silt and the chosen baselines.
func runBench(ctx context.Context, c *benchConfig, pr *bench.Progress, logger *slog.Logger, stdout io.Writer) error {
	if len(c.modes) > 1 || c.rounds > 1 {
		return runSecurityBench(ctx, c, pr, logger, stdout)
	}
	var t *bench.Target
	var err error
	if c.url != "" {
		var tlsCfg *tls.Config
		if c.caFile != "" {
			if tlsCfg, err = client.TLSConfig(c.caFile); err != nil {
				return err
			}
		}
		t = bench.ExternalTarget(c.url, c.kafkaAddr, c.token, tlsCfg)
	} else {
		la := bench.LocalAgent{DatabaseURL: c.databaseURL, ObjectStore: c.objectStore, Linger: c.linger, SegmentBytes: c.segmentBytes, Logger: logger,
			Security:  c.modes[0],
			Configure: func(cfg *agentd.Config) { cfg.Kafka.RawBatchMinBytes = int(c.rawBatchMin) }}
		if t, err = la.Start(ctx); err != nil {
			return err
		}
	}
	res, t, err := bench.RunSilt(ctx, t, c.opts, pr)
	if t != nil {
		err = errors.Join(err, t.Stop(context.WithoutCancel(ctx)))
	}
	if err != nil {
		return err
	}
	rep := &bench.Report{Silt: res}
	if c.wants("raw") && c.objectStore != "" {
		b, err := bucketurl.Open(ctx, c.objectStore)
		if err != nil {
			return err
		}
		inflight := 4
		if t != nil && t.InflightFlushes > 0 {
			inflight = t.InflightFlushes
		}
		if rep.Raw, err = bench.RunRaw(ctx, b, bench.RawBaselineFor(res, c.rawDuration, inflight), pr); err != nil {
			return err
		}
	} else if c.wants("raw") {
		pr.Logf("raw baseline skipped: it needs --objectstore")
	}
	if c.wants("nats") {
		bin, err := c.natsServer()
		if err != nil {
			return err
		}
		srv, err := bench.StartNATS(ctx, bin)
		if err != nil {
			return err
		}
		rep.NATS, err = bench.RunNATS(ctx, srv.URL, c.opts, pr)
		srv.Stop()
		if err != nil {
			return err
		}
	}
	rep.Compare()
	rep.WriteText(stdout)
	if c.jsonPath != "" {
		return bench.WriteJSON(c.jsonPath, rep)
	}
	return nil
}

// runSecurityBench runs the workload once per security mode, --rounds
// times, interleaved, each on a fresh agent of this process, and compares
// the modes: the cost of keys, and of keys over TLS, in one run.
func runSecurityBench(ctx context.Context, c *benchConfig, pr *bench.Progress, logger *slog.Logger, stdout io.Writer) error {
	if c.url != "" {
		return errors.New("--rounds and several --security modes need the agent run in this process")
	}
	var runs []*bench.RunResult
	for round := 1; round <= c.rounds; round++ {
		for _, mode := range c.modes {
			pr.Logf("security %s, round %d of %d", mode, round, c.rounds)
			la := bench.LocalAgent{DatabaseURL: c.databaseURL, ObjectStore: c.objectStore, Linger: c.linger, SegmentBytes: c.segmentBytes,
				Logger: logger, Security: mode}
			t, err := la.Start(ctx)
			if err != nil {
				return err
			}
			res, t, err := bench.RunSilt(ctx, t, c.opts, pr)
			if t != nil {
				err = errors.Join(err, t.Stop(context.WithoutCancel(ctx)))
			}
			if err != nil {
				return fmt.Errorf("security %s: %w", mode, err)
			}
			runs = append(runs, res)
		}
	}
	rep := bench.NewSecurityReport(runs)
	rep.WriteText(stdout)
	if c.jsonPath != "" {
		return bench.WriteJSON(c.jsonPath, rep)
	}
	return nil
}
