package main

import (
	"bytes"
	"fmt"
)

// configReference renders docs/configuration.md from the flag definitions,
// so the reference cannot drift from the binary.
func configReference() []byte {
	var b bytes.Buffer
	b.WriteString("# Configuration reference\n\n")
	b.WriteString("Generated from the flag definitions by `go test ./cmd/silt -run TestConfigReference -update`; do not edit by hand.\n")
	b.WriteString("Every flag has an environment twin; a flag on the command line wins over the environment, which wins over the default.\n")
	b.WriteString("Sizes accept units (`512KiB`, `8MiB`, `1GB`); durations use Go syntax (`100ms`, `30s`, `5m`).\n\n")
	b.WriteString("## silt agent\n\n")
	b.WriteString("**Memory.** `--memory-limit` (512MiB) is the agent's resident memory: the Go runtime's soft memory limit is set 32MiB under it (for the program's code, which the runtime does not count), the collector runs at `GOGC=400` unless `GOGC` is set (the limit paces it under load), and the memory budgets follow the limit. ")
	b.WriteString("A budget whose meaning says *default: a fraction of --memory-limit* shows its value at 512MiB below; left unset, it follows the limit. ")
	b.WriteString("Budgets set on their own are kept, and all of them together (with in-flight flushes at 2 × `--max-segment-bytes` each and a merge at 2 × `--merge-target-bytes`) must leave a quarter of the limit, at least 48MiB, as headroom: otherwise the agent names them and refuses to start. ")
	b.WriteString("A `GOMEMLIMIT` in the environment wins over `--memory-limit`, for the runtime and the budgets alike. [deploy.md](deploy.md#memory) has the figures.\n\n")
	cfg := defaultAgentConfig()
	fs := newFlagSet("agent")
	agentFlags(fs, &cfg, true)
	fs.markdown(&b)
	b.WriteString("\n## silt dev\n\n`silt dev` takes the agent's flags except `--database-url` and `--objectstore`, which it provides; it defaults to `--auth none` and `--listen 127.0.0.1:8080`, and refuses a non-loopback address while anonymous. Plus:\n\n")
	dfs := newFlagSet("dev")
	var dataDir string
	dfs.StringVar(&dataDir, "data-dir", ".silt", "where the private Postgres and the objects live")
	dfs.markdown(&b)
	fmt.Fprintf(&b, "\n## silt migrate\n\n")
	mfs := newFlagSet("migrate")
	var url string
	mfs.StringVar(&url, "database-url", "", "Postgres URL")
	mfs.markdown(&b)
	return b.Bytes()
}
