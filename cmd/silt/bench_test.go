package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"silt/agent"
	"silt/auth"
	"silt/bench"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/internal/testcerts"
	"silt/internal/testenv"
)

// TestBenchSmoke runs `silt bench` for about a second with an agent in this
// process on real Postgres and MinIO, plus the raw object store baseline,
// so that the command cannot rot. The figures themselves are not checked:
// performance is measured by `make bench`, never asserted in a test.
func TestBenchSmoke(t *testing.T) {
	db := testenv.PostgresURL(t)
	srv, bucket := testenv.MinIOBucket(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	out := filepath.Join(t.TempDir(), "bench.json")
	r := silt(t, nil, "bench", "--database-url", db, "--objectstore", srv.URL("s3", bucket, "bench"),
		"--producers", "2", "--consumers", "2", "--partitions", "4", "--batch", "50", "--record-size", "512",
		"--duration", "1s", "--warmup", "200ms", "--linger", "20ms", "--keys", "uniform:10",
		"--baselines", "raw", "--raw-duration", "300ms", "--json", out).ok(t)
	for _, want := range []string{"Produce", "records/s", "End-to-end latency", "Catch-up read", "transactions per flush", "Targets", "resident memory peak", "VmHWM"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	s := rep.Silt
	switch {
	case s == nil || s.Produce.Records == 0 || s.Produce.Errors != 0:
		t.Fatalf("produce: %+v", s)
	case s.Agent == nil || s.Agent.Flushes == 0 || s.Agent.Commits != s.Agent.Flushes:
		t.Fatalf("agent figures: %+v", s.Agent)
	case s.EndToEnd == nil || s.EndToEnd.Records == 0:
		t.Fatalf("end to end: %+v", s.EndToEnd)
	case s.CatchUp == nil || !s.CatchUp.Complete || s.CatchUp.Records < s.Produce.Records:
		t.Fatalf("catch-up: %+v (produced %d in the window)", s.CatchUp, s.Produce.Records)
	case rep.Raw == nil || rep.Raw.Puts == 0 || rep.Raw.Gets == 0:
		t.Fatalf("raw baseline: %+v", rep.Raw)
	case rep.Comparison == nil || len(rep.Comparison.Targets) != 4:
		t.Fatalf("comparison: %+v", rep.Comparison)
	case s.Memory == nil || s.Memory.Source != "in-process" || s.Memory.PeakRSS < s.Memory.HWM || s.Memory.HWM <= 0 || s.Memory.GoPeak <= 0 || s.Memory.LivePeak <= 0:
		t.Fatalf("memory: %+v", s.Memory)
	}
}

// TestBenchExternalAgent benchmarks an agent reached by --url, reading its
// metrics from /metrics, with idempotent producers and a consumer of the
// binary records form.
func TestBenchExternalAgent(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	out := filepath.Join(t.TempDir(), "bench.json")
	r := silt(t, nil, "bench", "--url", a.URL, "--producers", "2", "--consumers", "1", "--partitions", "2",
		"--batch", "20", "--record-size", "100", "--duration", "500ms", "--warmup", "0s", "--idempotent",
		"--rate", "2000", "--baselines", "none", "--fetch-encoding", "records", "--json", out).ok(t)
	for _, want := range []string{"idempotent", "fetching records", "records/s", "transactions per flush", "Catch-up read", "process_resident_memory_bytes, scraped"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	// The agent's resident memory, scraped from its /metrics.
	if m := rep.Silt.Memory; m == nil || m.Source != "scraped" || m.PeakRSS <= 0 || m.Samples < 1 || m.HWM != 0 {
		t.Fatalf("memory: %+v", m)
	}
}

// TestBenchKafka drives the same workload over the Kafka listener with
// franz-go: an agent in this process (produce, tail, cold catch-up), then
// an agent reached by --url and --kafka-addr with idempotent producers.
func TestBenchKafka(t *testing.T) {
	db := testenv.PostgresURL(t)
	srv, bucket := testenv.MinIOBucket(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	out := filepath.Join(t.TempDir(), "bench.json")
	r := silt(t, nil, "bench", "--protocol", "kafka", "--kafka-compression", "lz4", "--database-url", db, "--objectstore", srv.URL("s3", bucket, "bench"),
		"--producers", "2", "--consumers", "2", "--partitions", "4", "--batch", "50", "--record-size", "512",
		"--duration", "1s", "--warmup", "200ms", "--linger", "20ms", "--baselines", "none", "--json", out).ok(t)
	if !strings.Contains(r.stdout, "over Kafka (franz-go, lz4 batches)") {
		t.Fatalf("output does not say Kafka:\n%s", r.stdout)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	s := rep.Silt
	switch {
	case s == nil || s.Options.Protocol != bench.ProtocolKafka || s.Produce.Records == 0 || s.Produce.Errors != 0:
		t.Fatalf("produce: %+v", s)
	case s.EndToEnd == nil || s.EndToEnd.Records == 0:
		t.Fatalf("end to end: %+v", s.EndToEnd)
	case s.CatchUp == nil || !s.CatchUp.Complete || s.CatchUp.Records < s.Produce.Records:
		t.Fatalf("catch-up: %+v (produced %d in the window)", s.CatchUp, s.Produce.Records)
	}

	a := agenttest.Start(t, agenttest.Options{Kafka: true})
	r = silt(t, nil, "bench", "--protocol", "kafka", "--url", a.URL, "--kafka-addr", a.KafkaAddr, "--producers", "2", "--consumers", "0",
		"--partitions", "2", "--batch", "20", "--record-size", "100", "--duration", "500ms", "--warmup", "0s", "--idempotent",
		"--rate", "2000", "--baselines", "none").ok(t)
	if !strings.Contains(r.stdout, "idempotent") || !strings.Contains(r.stdout, "records/s") {
		t.Fatalf("external Kafka run:\n%s", r.stdout)
	}
}

func TestBenchFlags(t *testing.T) {
	for _, args := range [][]string{
		{"bench"}, // neither --url nor stores
		{"bench", "--url", "http://127.0.0.1:1", "--keys", "zipf"},
		{"bench", "--url", "http://127.0.0.1:1", "--record-size", "4"},
		{"bench", "--url", "http://127.0.0.1:1", "--baselines", "kafka"},
		{"bench", "--url", "http://127.0.0.1:1", "--suite"},
		{"bench", "--url", "http://127.0.0.1:1", "--protocol", "grpc"},
		{"bench", "--url", "http://127.0.0.1:1", "--protocol", "kafka", "--kafka-compression", "brotli"},
	} {
		if r := silt(t, nil, args...); r.code == 0 {
			t.Fatalf("%q: exit 0", args)
		}
	}
}

// --token and --ca-file reach an agent that requires keys over TLS; the
// bench's key is not an admin, only allowed its topics. Several
// --security modes run the same workload on fresh agents of this process
// and compare them.
func TestBenchSecurity(t *testing.T) {
	ca := testcerts.NewCA(t, "bench")
	pair := ca.Server(t, "agent")
	admin, _, _ := auth.NewToken()
	a := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) {
		c.HTTP.Auth = agent.AuthRequired
		c.BootstrapAdminKey = admin
		c.TLS.CertFile, c.TLS.KeyFile = pair.CertFile, pair.KeyFile
	}})
	key := lastLine(silt(t, nil, "keys", "create", "--url", a.URL, "--ca-file", ca.File, "--token", admin, "--name", "bench",
		"--allow", "create,produce,consume,describe:topic:bench-*").ok(t).stdout)
	r := silt(t, nil, "bench", "--url", a.URL, "--token", key, "--ca-file", ca.File, "--producers", "2", "--consumers", "1",
		"--partitions", "2", "--batch", "20", "--record-size", "100", "--duration", "500ms", "--warmup", "0s", "--idempotent",
		"--rate", "2000", "--baselines", "none", "--catch-up=false").ok(t)
	if !strings.Contains(r.stdout, "transactions per flush") {
		t.Fatalf("output:\n%s", r.stdout)
	}

	db := testenv.PostgresURL(t)
	srv, bucket := testenv.MinIOBucket(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	out := filepath.Join(t.TempDir(), "security.json")
	r = silt(t, nil, "bench", "--database-url", db, "--objectstore", srv.URL("s3", bucket, "bench"), "--security", "none,auth,auth+tls",
		"--producers", "2", "--consumers", "1", "--partitions", "2", "--batch", "20", "--record-size", "100",
		"--duration", "500ms", "--warmup", "100ms", "--linger", "20ms", "--baselines", "none", "--catch-up=false", "--json", out).ok(t)
	var rep bench.SecurityReport
	b, err := os.ReadFile(out)
	if err != nil || json.Unmarshal(b, &rep) != nil {
		t.Fatalf("report: %v\n%s", err, b)
	}
	if len(rep.Modes) != 3 || rep.Modes[0].Mode != "none" || rep.Modes[2].Mode != "auth+tls" {
		t.Fatalf("modes %+v", rep.Modes)
	}
	for _, run := range rep.Runs {
		if run.Produce.Records == 0 || run.Produce.Errors != 0 {
			t.Fatalf("%s: %+v", run.Security, run.Produce)
		}
	}
	for _, want := range []string{"auth+tls", "p99 ms", "base"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("output lacks %q:\n%s", want, r.stdout)
		}
	}
}
