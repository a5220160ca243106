package main

import (
	"strings"
	"testing"
)

// parseAgent parses agent flags as `silt agent` does and finishes the
// config.
func parseAgent(t *testing.T, args ...string) (agentConfig, error) {
	t.Helper()
	cfg := defaultAgentConfig()
	fs := newFlagSet("agent")
	agentFlags(fs, &cfg, true)
	args = append([]string{"--database-url", "postgres://x@127.0.0.1/x", "--objectstore", "mem://", "--agent-id", "m"}, args...)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return cfg, cfg.finish()
}

// --memory-limit (or its twin) sizes the budgets not given on their own;
// those given are kept, and must fit.
func TestMemoryLimitDerivesBudgets(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "off")
	cfg, err := parseAgent(t, "--memory-limit", "256MiB", "--max-buffer-bytes", "48MiB")
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Agent
	if a.MemoryLimit != 256<<20 || a.Batcher.MaxBufferBytes != 48<<20 || a.Fetch.CacheBytes != 4<<20 || a.Fetch.ObjectCacheBytes != 32<<20 ||
		a.Batcher.MaxInflightFlushes != 2 || a.HTTP.MaxInflightRequestBytes != 16<<20 || a.HTTP.MaxRequestBytes != 16<<20 {
		t.Fatalf("limit %d, buffer %d, cache %d, object cache %d, flushes %d, in-flight requests %d, request %d", a.MemoryLimit, a.Batcher.MaxBufferBytes,
			a.Fetch.CacheBytes, a.Fetch.ObjectCacheBytes, a.Batcher.MaxInflightFlushes, a.HTTP.MaxInflightRequestBytes, a.HTTP.MaxRequestBytes)
	}

	t.Setenv("SILT_MEMORY_LIMIT", "1GiB")
	t.Setenv("SILT_CACHE_BYTES", "100MiB")
	if cfg, err = parseAgent(t); err != nil {
		t.Fatal(err)
	}
	if cfg.Agent.MemoryLimit != 1<<30 || cfg.Agent.Fetch.CacheBytes != 100<<20 || cfg.Agent.Batcher.MaxBufferBytes != 128<<20 {
		t.Fatalf("from the environment: limit %d, cache %d, buffer %d", cfg.Agent.MemoryLimit, cfg.Agent.Fetch.CacheBytes, cfg.Agent.Batcher.MaxBufferBytes)
	}

	_, err = parseAgent(t, "--memory-limit", "256MiB", "--cache-bytes", "512MiB")
	if err == nil || !strings.Contains(err.Error(), "--cache-bytes 512MiB") || !strings.Contains(err.Error(), "--memory-limit 256MiB") {
		t.Fatalf("a cache over the limit: %v", err)
	}
}

// GOMEMLIMIT wins over --memory-limit: the runtime keeps it, and the
// budgets follow it.
func TestGOMEMLIMITWins(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "256MiB")
	cfg, err := parseAgent(t, "--memory-limit", "1GiB")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Agent.MemoryLimit != 256<<20 || cfg.memoryFrom != "GOMEMLIMIT" || cfg.Agent.Batcher.MaxBufferBytes != 32<<20 {
		t.Fatalf("limit %d from %s, buffer %d", cfg.Agent.MemoryLimit, cfg.memoryFrom, cfg.Agent.Batcher.MaxBufferBytes)
	}
	t.Setenv("GOMEMLIMIT", "lots")
	if _, err := parseAgent(t); err == nil || !strings.Contains(err.Error(), "GOMEMLIMIT") {
		t.Fatalf("a bad GOMEMLIMIT: %v", err)
	}
}
