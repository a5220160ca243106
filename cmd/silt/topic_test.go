package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"silt/client"
	"silt/internal/agenttest"
)

// cliResult is the outcome of one in-process `silt` run.
type cliResult struct {
	code           int
	stdout, stderr string
}

// silt runs the CLI in-process with input as its stdin.
func silt(t *testing.T, input io.Reader, args ...string) cliResult {
	t.Helper()
	if input == nil {
		input = strings.NewReader("")
	}
	old := stdin
	stdin = input
	defer func() { stdin = old }()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, args, &out, &errOut)
	return cliResult{code: code, stdout: out.String(), stderr: errOut.String()}
}

// ok fails the test unless the run succeeded.
func (r cliResult) ok(t *testing.T) cliResult {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	return r
}

// fails fails the test unless the run failed with stderr containing want.
func (r cliResult) fails(t *testing.T, want string) {
	t.Helper()
	if r.code == 0 || !strings.Contains(r.stderr, want) {
		t.Fatalf("exit %d, want failure mentioning %q\nstdout: %s\nstderr: %s", r.code, want, r.stdout, r.stderr)
	}
}

func TestTopicCommands(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	url := "--url=" + a.URL

	// Flags after the positional argument.
	r := silt(t, nil, "topic", "create", "orders", "--partitions", "3", url, "--config", "retention.ms=60000", "--config", "cleanup.policy=compact").ok(t)
	for _, want := range []string{"Created topic orders.", "Partitions:  3", "retention.ms                     60000", "cleanup.policy                   compact", "message.timestamp.type           CreateTime"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("create output lacks %q:\n%s", want, r.stdout)
		}
	}
	silt(t, nil, "topic", "create", url, "payments").ok(t)
	silt(t, nil, "topic", "create", "orders", url).fails(t, "topic_exists")
	silt(t, nil, "topic", "create", "bad name", url).fails(t, "invalid_topic_name")
	silt(t, nil, "topic", "create", url).fails(t, "expected 1 argument")
	silt(t, nil, "topic", "create", "x", "--config", "colour=blue", url).fails(t, "unknown key")

	r = silt(t, nil, "topic", "list", url).ok(t)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") {
		t.Fatalf("list:\n%s", r.stdout)
	}
	if f := strings.Fields(lines[1]); f[0] != "orders" || f[1] != "3" || f[2] != "60000" || f[4] != "compact" {
		t.Fatalf("list row %q", lines[1])
	}
	var list struct {
		Topics []client.Topic `json:"topics"`
	}
	r = silt(t, nil, "topic", "list", "--output", "json", url).ok(t)
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Topics) != 2 || list.Topics[1].Name != "payments" {
		t.Fatalf("list json %v: %s", err, r.stdout)
	}

	r = silt(t, nil, "topic", "describe", "orders", url).ok(t)
	if !strings.Contains(r.stdout, "PARTITION  LOG-START  HIGH-WATERMARK") || strings.Count(r.stdout, "\n2  ") != 1 {
		t.Fatalf("describe:\n%s", r.stdout)
	}
	var topic client.Topic
	r = silt(t, nil, "topic", "describe", "orders", "--output=json", url).ok(t)
	if err := json.Unmarshal([]byte(r.stdout), &topic); err != nil || len(topic.PartitionStates) != 3 || topic.Config.RetentionMs != 60000 {
		t.Fatalf("describe json %v: %s", err, r.stdout)
	}

	r = silt(t, nil, "topic", "alter", "orders", "--partitions", "5", "--config", "max.message.bytes=2KiB", "--output", "json", url).ok(t)
	if err := json.Unmarshal([]byte(r.stdout), &topic); err != nil || topic.Partitions != 5 || topic.Config.MaxMessageBytes != 2048 || topic.Config.CleanupPolicy != "compact" {
		t.Fatalf("alter json %v: %s", err, r.stdout)
	}
	silt(t, nil, "topic", "alter", "orders", url).fails(t, "nothing to change")
	silt(t, nil, "topic", "alter", "orders", "--partitions", "2", url).fails(t, "invalid_partition_count")

	r = silt(t, nil, "topic", "delete", "orders", url).ok(t)
	if r.stdout != "Deleted topic orders.\n" {
		t.Fatalf("delete: %q", r.stdout)
	}
	silt(t, nil, "topic", "describe", "orders", url).fails(t, "topic_not_found")
	silt(t, nil, "topic", "delete", "orders", url).fails(t, "topic_not_found")
	silt(t, nil, "topic", "frobnicate", url).fails(t, "unknown subcommand")
}

// The agent's address may come from SILT_URL.
func TestTopicURLFromEnvironment(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})
	t.Setenv("SILT_URL", a.URL)
	silt(t, nil, "topic", "create", "t").ok(t)
	r := silt(t, nil, "topic", "list", "--output", "json").ok(t)
	if !strings.Contains(r.stdout, `"name": "t"`) {
		t.Fatalf("list: %s", r.stdout)
	}
	// The flag wins over the environment.
	silt(t, nil, "topic", "list", "--url", "http://127.0.0.1:1").fails(t, "connection refused")
}
