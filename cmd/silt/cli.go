package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"silt/client"
)

// stdin is what `silt produce` reads; tests replace it.
var stdin io.Reader = os.Stdin

// defaultURL is where the CLI finds an agent unless told otherwise.
const defaultURL = "http://127.0.0.1:8080"

// apiFlags are the flags of every command that talks to an agent.
type apiFlags struct {
	url    string
	token  string
	caFile string
}

func addAPIFlags(fs *flagSet) *apiFlags {
	a := &apiFlags{}
	fs.StringVar(&a.url, "url", defaultURL, "base URL of an agent")
	fs.StringVar(&a.token, "token", "", "API key (silt_<id>_<secret>) sent as a bearer token")
	fs.StringVar(&a.caFile, "ca-file", "", "PEM file of the CA that signed the agent's TLS certificate (default: the system's roots)")
	return a
}

// client returns a client of the agent that retries what the agent marks
// retriable (backpressure, unavailability), within a bounded time.
func (a *apiFlags) client() (*client.Client, error) {
	opts := []client.Option{client.WithRetry(client.DefaultRetryPolicy())}
	if a.caFile != "" {
		cfg, err := client.TLSConfig(a.caFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithTLSConfig(cfg))
	}
	if a.token != "" {
		opts = append(opts, client.WithToken(a.token))
	}
	return client.New(a.url, opts...)
}

// listValue is a repeatable string flag.
type listValue struct{ p *[]string }

func (l listValue) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l listValue) Set(v string) error {
	*l.p = append(*l.p, v)
	return nil
}

// ListVar registers a repeatable flag. Its environment twin supplies one
// value, used only when the flag is not given.
func (fs *flagSet) ListVar(p *[]string, name, usage string) {
	fs.FlagSet.Var(listValue{p}, name, usage)
	fs.add(name, usage)
}

// parseArgs parses flags that may come before, between or after the
// positional arguments (`silt topic create orders --partitions 3`) and
// returns the positional ones. "--" ends the flags.
func parseArgs(fs *flagSet, args []string) ([]string, error) {
	var flags, positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil || isBoolFlag(f) || i+1 >= len(args) {
			continue // unknown flags and missing values: Parse reports them
		}
		i++
		flags = append(flags, args[i])
	}
	if err := fs.Parse(flags); err != nil {
		return nil, err
	}
	return positional, nil
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// usageError reports wrong arguments with the command's synopsis.
func usageError(synopsis, format string, args ...any) error {
	return fmt.Errorf("%s\nusage: %s", fmt.Sprintf(format, args...), synopsis)
}

// splitPair splits "key=value" at the first '='; the key must not be empty.
func splitPair(s string) (key, value string, err error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return "", "", fmt.Errorf("%q: want key=value", s)
	}
	return k, v, nil
}

// unescape turns the escapes \t \n \r \0 \\ and \xHH of a separator given
// on the command line into bytes.
func unescape(s string) ([]byte, error) {
	var out []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		if i+1 >= len(s) {
			return nil, fmt.Errorf("%q: trailing backslash", s)
		}
		i++
		switch s[i] {
		case 't':
			out = append(out, '\t')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case '0':
			out = append(out, 0)
		case '\\':
			out = append(out, '\\')
		case 'x':
			if i+2 >= len(s) {
				return nil, fmt.Errorf("%q: \\x needs two hex digits", s)
			}
			n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return nil, fmt.Errorf("%q: \\x needs two hex digits", s)
			}
			out = append(out, byte(n))
			i += 2
		default:
			return nil, fmt.Errorf("%q: unknown escape \\%c (use \\t \\n \\r \\0 \\\\ or \\xHH)", s, s[i])
		}
	}
	return out, nil
}

// parseSeparator unescapes a separator and rejects an empty one.
func parseSeparator(s string) ([]byte, error) {
	b, err := unescape(s)
	if err != nil {
		return nil, fmt.Errorf("key separator %w", err)
	}
	if len(b) == 0 {
		return nil, errors.New("key separator must not be empty")
	}
	return b, nil
}

// subcommand is a verb of a command that has verbs (topic, group).
type subcommand struct {
	name, synopsis string
	run            func(ctx context.Context, args []string, stdout io.Writer) error
}

// runSubcommand dispatches args to one of subs; usage prints the synopses
// followed by notes.
func runSubcommand(ctx context.Context, args []string, stdout io.Writer, subs []subcommand, notes string) error {
	usage := func() {
		fmt.Fprintf(stdout, "Usage:\n")
		for _, s := range subs {
			fmt.Fprintf(stdout, "  %s\n", s.synopsis)
		}
		fmt.Fprintf(stdout, "\nEvery subcommand takes --url (SILT_URL, default %s), --token (SILT_TOKEN), --ca-file (SILT_CA_FILE) and --output table|json.\n%s", defaultURL, notes)
	}
	if len(args) == 0 {
		usage()
		return errors.New("a subcommand is required")
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		return flag.ErrHelp
	}
	for _, s := range subs {
		if s.name == args[0] {
			return s.run(ctx, args[1:], stdout)
		}
	}
	usage()
	return fmt.Errorf("unknown subcommand %q", args[0])
}

// outputFlags are the flags every topic and group subcommand shares:
// --url and --output.
type outputFlags struct {
	api    *apiFlags
	output string
}

func newOutputFlags(fs *flagSet) *outputFlags {
	f := &outputFlags{api: addAPIFlags(fs)}
	fs.StringVar(&f.output, "output", "table", "table or json")
	return f
}

// parse parses flags and the positional arguments, of which there must be
// want, and returns them with a client.
func (f *outputFlags) parse(fs *flagSet, args []string, synopsis string, want int) ([]string, *client.Client, error) {
	pos, err := parseArgs(fs, args)
	if err != nil {
		return nil, nil, err
	}
	if len(pos) != want {
		return nil, nil, usageError(synopsis, "expected %d argument(s), got %d", want, len(pos))
	}
	if f.output != "table" && f.output != "json" {
		return nil, nil, fmt.Errorf("--output %q: want table or json", f.output)
	}
	c, err := f.api.client()
	return pos, c, err
}
