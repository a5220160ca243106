package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"

	"silt/auth"
	"silt/localstack"
	"silt/metadata"
)

// clusterFlags configure the cluster verb.
type clusterFlags struct {
	state, minioBin, siltBin, haproxyBin string
	agents, port, statsPort, kafkaPort   int
}

// runCluster runs the local cluster in the foreground until ctx ends (Ctrl-C
// or SIGTERM), then stops everything it started.
func runCluster(ctx context.Context, args []string, stdout io.Writer, logger *slog.Logger) int {
	var f clusterFlags
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	fs.StringVar(&f.state, "state", filepath.Join(".silt-services", "localstack"), "state directory: Postgres and MinIO data, logs, the silt binary (kept between runs; delete it to start afresh)")
	fs.StringVar(&f.minioBin, "minio-bin", os.Getenv("SILT_MINIO_BIN"), "path to the minio binary")
	fs.StringVar(&f.siltBin, "silt-bin", "", "the silt binary (default: go build ./cmd/silt into the state directory)")
	fs.StringVar(&f.haproxyBin, "haproxy-bin", "", "the haproxy binary (default: on PATH, else /usr/sbin/haproxy; `make haproxy` installs it)")
	fs.IntVar(&f.agents, "agents", localstack.ComposeAgents, "how many agents")
	fs.IntVar(&f.port, "port", 8080, "the load balancer's port on 127.0.0.1 (0 picks a free one)")
	fs.IntVar(&f.statsPort, "stats-port", 8404, "HAProxy's stats port on 127.0.0.1 (0 picks a free one)")
	fs.IntVar(&f.kafkaPort, "kafka-port", 9092, "the load balancer's Kafka port on 127.0.0.1 (0 picks a free one)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "localstack cluster: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if err := cluster(ctx, f, stdout, logger); err != nil {
		logger.Error("cluster", "err", err)
		return 1
	}
	return 0
}

func cluster(ctx context.Context, f clusterFlags, stdout io.Writer, logger *slog.Logger) (err error) {
	state, err := filepath.Abs(f.state)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if err := os.MkdirAll(state, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	_ = os.Chmod(state, 0o755) // the postgres user must traverse it when we are root
	haproxyBin := f.haproxyBin
	if haproxyBin == "" {
		if haproxyBin, err = localstack.FindHAProxy(); err != nil {
			return err
		}
	}
	siltBin := f.siltBin
	if siltBin == "" {
		root, err := localstack.ModuleRoot(ctx)
		if err != nil {
			return err
		}
		siltBin = filepath.Join(state, "bin", "silt")
		logger.Info("building silt", "out", siltBin)
		if err := localstack.BuildSilt(ctx, root, siltBin, false); err != nil {
			return err
		}
	}

	svc, err := localstack.StartServices(ctx, localstack.ServicesConfig{
		StateDir: state, Postgres: true, MinIO: true, MinIOBin: f.minioBin, Logger: logger,
	})
	if err != nil {
		return fmt.Errorf("start services: %w", err)
	}
	defer func() {
		if stopErr := svc.Stop(context.WithoutCancel(ctx)); stopErr != nil {
			err = errors.Join(err, fmt.Errorf("stop services: %w", stopErr))
		}
	}()
	const name = "silt"
	dbURL, err := localstack.EnsureDatabase(ctx, svc.PG.URL("postgres"), name)
	if err != nil {
		return err
	}
	if err := localstack.EnsureBucket(ctx, svc.MinIO.Endpoint, localstack.MinIOAccessKey, localstack.MinIOSecretKey, name); err != nil {
		return err
	}
	adminKey, err := localstack.AdminKeyFile(filepath.Join(state, "admin-key"))
	if err != nil {
		return err
	}
	c, err := localstack.StartCluster(ctx, localstack.ClusterConfig{
		AdminKey:    adminKey,
		StateDir:    filepath.Join(state, "cluster"),
		SiltBin:     siltBin,
		HAProxyBin:  haproxyBin,
		Agents:      f.agents,
		Port:        f.port,
		StatsPort:   f.statsPort,
		KafkaPort:   f.kafkaPort,
		DatabaseURL: dbURL,
		ObjectStore: localstack.S3URL(svc.MinIO.Endpoint, name, ""),
		Env: []string{
			"AWS_ACCESS_KEY_ID=" + localstack.MinIOAccessKey,
			"AWS_SECRET_ACCESS_KEY=" + localstack.MinIOSecretKey,
		},
		Logger: logger,
	})
	if err != nil {
		return fmt.Errorf("start cluster: %w", err)
	}
	defer func() {
		if stopErr := c.Stop(context.WithoutCancel(ctx)); stopErr != nil {
			err = errors.Join(err, fmt.Errorf("stop cluster: %w", stopErr))
		}
	}()
	printBanner(stdout, c, svc, dbURL, state)

	// Stay up until interrupted; a child that dies on its own ends the run.
	cases := []reflect.SelectCase{
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c.LB().Exited())},
	}
	agents := c.Agents()
	for _, a := range agents {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(a.Exited())})
	}
	i, _, _ := reflect.Select(cases)
	switch {
	case i == 0 || ctx.Err() != nil:
		logger.Info("stopping the cluster")
		return nil
	case i == 1:
		return fmt.Errorf("haproxy exited on its own; see %s", c.LB().Log)
	default:
		a := agents[i-2]
		return fmt.Errorf("agent %s exited on its own; see %s", a.ID, a.Log)
	}
}

// keyID is a key's id, the SASL user name of Kafka clients.
func keyID(key string) string {
	id, _ := auth.ParseToken(key)
	return id
}

func printBanner(w io.Writer, c *localstack.Cluster, svc *localstack.Services, dbURL, state string) {
	lb := c.LBURL
	fmt.Fprintf(w, "\nSilt local cluster: %d agents behind HAProxy, Postgres and MinIO, all on 127.0.0.1.\n\n", len(c.Agents()))
	fmt.Fprintf(w, "  load balancer   %s   (Kafka protocol %s)\n", lb, c.KafkaAddr)
	fmt.Fprintf(w, "  haproxy stats   %s/stats   (health %s/healthz, metrics %s/metrics)\n", c.StatsURL, c.StatsURL, c.StatsURL)
	for _, a := range c.Agents() {
		fmt.Fprintf(w, "  %-15s %s   (log %s)\n", a.ID, a.URL, a.Log)
	}
	fmt.Fprintf(w, "  postgres        %s\n", metadata.RedactURL(dbURL))
	fmt.Fprintf(w, "  minio           %s   (bucket silt; access key %s, secret %s)\n", svc.MinIO.Endpoint, localstack.MinIOAccessKey, localstack.MinIOSecretKey)
	fmt.Fprintf(w, "  state           %s   (haproxy log %s)\n", state, c.LB().Log)
	fmt.Fprintf(w, `
The agents require API keys. An admin key (kept in %[2]s/admin-key):

  export SILT_TOKEN=%[3]s

Try it (every request goes through the load balancer; X-Silt-Agent says which agent answered):

  curl -s -XPOST %[1]s/v1/topics -H "authorization: Bearer $SILT_TOKEN" -H 'content-type: application/json' -d '{"name":"demo","partitions":3}'
  curl -si -XPOST %[1]s/v1/topics/demo/records -H "authorization: Bearer $SILT_TOKEN" -H 'content-type: application/json' \
    -d '{"records":[{"key":"user-1","value":{"amount":5},"partition":0},{"value":"hi","partition":0}]}'
  curl -si -H "authorization: Bearer $SILT_TOKEN" '%[1]s/v1/topics/demo/partitions/0/records?offset=0&wait_ms=5000'
  curl -N -H "authorization: Bearer $SILT_TOKEN" -H 'accept: text/event-stream' '%[1]s/v1/topics/demo/partitions/0/stream?offset=earliest'
  curl -s -H "authorization: Bearer $SILT_TOKEN" %[1]s/v1/cluster
  SILT_URL=%[1]s ./bin/silt topic list
  SILT_URL=%[1]s ./bin/silt keys create --name demo-reader --allow consume:topic:demo
  # Kafka clients bootstrap from the load balancer too, with SASL PLAIN: user name the key's id, password the key
  kcat -b %[4]s -X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=PLAIN -X sasl.username=%[5]s -X sasl.password=$SILT_TOKEN -L
  kcat -b %[4]s -X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=PLAIN -X sasl.username=%[5]s -X sasl.password=$SILT_TOKEN -G demo-readers demo

Ctrl-C stops the agents, HAProxy, MinIO and Postgres.
`, lb, state, c.AdminKey, c.KafkaAddr, keyID(c.AdminKey))
}
