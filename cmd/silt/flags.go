package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// flagSet is a flag.FlagSet whose every flag has a SILT_* environment
// twin: a flag given on the command line wins, then the environment, then
// the default. It also renders the reference in docs/configuration.md.
type flagSet struct {
	*flag.FlagSet
	cmd  string
	envs map[string]string // flag name -> env var
	defs []flagDoc
}

type flagDoc struct {
	Name, Env, Default, Usage string
}

func newFlagSet(cmd string) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(cmd, flag.ContinueOnError), cmd: cmd, envs: map[string]string{}}
	fs.SetOutput(io.Discard)
	return fs
}

// envName derives SILT_FOO_BAR from foo-bar.
func envName(name string) string {
	return "SILT_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

func (fs *flagSet) add(name, usage string) {
	env := envName(name)
	fs.envs[name] = env
	def := fs.Lookup(name).DefValue
	fs.defs = append(fs.defs, flagDoc{Name: name, Env: env, Default: def, Usage: usage})
}

func (fs *flagSet) StringVar(p *string, name, def, usage string) {
	fs.FlagSet.StringVar(p, name, def, usage)
	fs.add(name, usage)
}

func (fs *flagSet) IntVar(p *int, name string, def int, usage string) {
	fs.FlagSet.IntVar(p, name, def, usage)
	fs.add(name, usage)
}

func (fs *flagSet) Int64Var(p *int64, name string, def int64, usage string) {
	fs.FlagSet.Int64Var(p, name, def, usage)
	fs.add(name, usage)
}

func (fs *flagSet) BoolVar(p *bool, name string, def bool, usage string) {
	fs.FlagSet.BoolVar(p, name, def, usage)
	fs.add(name, usage)
}

func (fs *flagSet) DurationVar(p *time.Duration, name string, def time.Duration, usage string) {
	fs.FlagSet.DurationVar(p, name, def, usage)
	fs.add(name, usage)
}

// BytesVar takes sizes such as 8MiB, 512KiB, 1GB or 4096.
func (fs *flagSet) BytesVar(p *int64, name string, def int64, usage string) {
	*p = def
	fs.FlagSet.Var((*byteSize)(p), name, usage)
	fs.add(name, usage)
}

// isSet reports whether flag name was given, on the command line or by
// its environment twin (or with Set), rather than left at its default.
func (fs *flagSet) isSet(name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// Parse parses args, then fills unset flags from the environment.
func (fs *flagSet) Parse(args []string) error {
	if err := fs.FlagSet.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.usage(os.Stdout)
			return err
		}
		return fmt.Errorf("%s: %w (see silt %s -h)", fs.cmd, err, fs.cmd)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, env := range fs.envs {
		v, ok := os.LookupEnv(env)
		if set[name] || !ok {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return fmt.Errorf("%s: environment %s=%q: %w", fs.cmd, env, v, err)
		}
	}
	return nil
}

func (fs *flagSet) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: silt %s [flags]\n\nFlags (each also read from its environment variable):\n", fs.cmd)
	for _, d := range fs.defs {
		def := ""
		if d.Default != "" {
			def = " (default " + d.Default + ")"
		}
		fmt.Fprintf(w, "  --%s  [%s]%s\n      %s\n", d.Name, d.Env, def, d.Usage)
	}
}

// markdown renders the flags as a table.
func (fs *flagSet) markdown(w io.Writer) {
	defs := append([]flagDoc(nil), fs.defs...)
	sort.Slice(defs, func(i, j int) bool { return defs[i].Name < defs[j].Name })
	fmt.Fprintf(w, "| flag | environment | default | meaning |\n|---|---|---|---|\n")
	for _, d := range defs {
		def := d.Default
		if def == "" {
			def = "—"
		} else {
			def = "`" + def + "`"
		}
		fmt.Fprintf(w, "| `--%s` | `%s` | %s | %s |\n", d.Name, d.Env, def, strings.ReplaceAll(d.Usage, "|", "\\|"))
	}
}

// byteSize is an int64 flag with binary and decimal unit suffixes.
type byteSize int64

func (b *byteSize) String() string { return formatBytes(int64(*b)) }

func (b *byteSize) Set(s string) error {
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	for _, u := range byteUnits {
		if strings.HasSuffix(s, u.suffix) {
			n, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), 64)
			if err != nil || n < 0 {
				return 0, fmt.Errorf("size %q: want a number with an optional unit (KiB, MiB, GiB, KB, MB, GB)", s)
			}
			return int64(n * float64(u.mult)), nil
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a number with an optional unit (KiB, MiB, GiB, KB, MB, GB)", s)
	}
	return n, nil
}

func formatBytes(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
