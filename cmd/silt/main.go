// Command silt is Silt's single binary: the agent, a one-command local
// setup, migrations, and a CLI over the HTTP API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"agent", "run an agent (needs --database-url and --objectstore)", runAgentCmd},
		{"dev", "run a private Postgres, a local file object store and one agent; no flags needed", runDevCmd},
		{"migrate", "apply database migrations and exit", runMigrateCmd},
		{"version", "print the version", runVersionCmd},
		{"topic", "create, list, describe, alter and delete topics", runTopicCmd},
		{"produce", "produce the lines of stdin to a topic", runProduceCmd},
		{"consume", "print a topic's records, or follow them", runConsumeCmd},
		{"group", "list, describe, reset the offsets of and delete consumer groups", runGroupCmd},
		{"keys", "create, list and revoke API keys (offline with --database-url, or through an agent)", runKeysCmd},
		{"bench", "benchmark Silt, with the raw object store and NATS JetStream as baselines", runBenchCmd},
		{"scale", "simulate many agents against one Postgres: commits, leases, lookups and groups at scale", runScaleCmd},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		default:
			fmt.Fprintf(stderr, "silt %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "silt: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Silt: an event log on object storage and Postgres.\n\nUsage: silt <command> [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'silt <command> -h' for a command's flags.\n")
}
