package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/configuration.md from the flag definitions")

func TestConfigReference(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "configuration.md")
	want := configReference()
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (regenerate with: go test ./cmd/silt -run TestConfigReference -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("docs/configuration.md is out of date with the flags; regenerate with: go test ./cmd/silt -run TestConfigReference -update")
	}
}

// Every agent flag has a SILT_* twin that sets it.
func TestFlagsHaveEnvTwins(t *testing.T) {
	cfg := defaultAgentConfig()
	fs := newFlagSet("agent")
	agentFlags(fs, &cfg, true)
	t.Setenv("SILT_LINGER", "250ms")
	t.Setenv("SILT_MAX_SEGMENT_BYTES", "4MiB")
	t.Setenv("SILT_LISTEN", "127.0.0.1:9999")
	if err := fs.Parse([]string{"--listen", "127.0.0.1:7777"}); err != nil {
		t.Fatal(err)
	}
	if cfg.Agent.Batcher.Linger.String() != "250ms" || cfg.MaxSegmentBytes != 4<<20 {
		t.Fatalf("env not applied: linger %s, segment %d", cfg.Agent.Batcher.Linger, cfg.MaxSegmentBytes)
	}
	if cfg.Agent.HTTP.Listen != "127.0.0.1:7777" {
		t.Fatalf("the command line must win over the environment: %s", cfg.Agent.HTTP.Listen)
	}
	for name, env := range fs.envs {
		if env != envName(name) {
			t.Errorf("flag %s has env %s", name, env)
		}
	}
	t.Setenv("SILT_LINGER", "soon")
	fs2 := newFlagSet("agent")
	cfg2 := defaultAgentConfig()
	agentFlags(fs2, &cfg2, true)
	if err := fs2.Parse(nil); err == nil {
		t.Fatal("a bad environment value was accepted")
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "8MiB": 8 << 20, "1.5KiB": 1536, "2GB": 2e9, "10B": 10} {
		got, err := parseBytes(in)
		if err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "MiB", "8XB", "1e3"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) accepted", bad)
		}
	}
}
