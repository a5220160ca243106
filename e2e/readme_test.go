package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"silt/auth"
)

// The README's shell examples that talk to an agent run as they are
// written, with the system's curl, against real `silt agent` processes on
// loopback: the quickstart's against an anonymous agent (what `make run`
// serves), the local cluster's against an agent that requires keys, with
// the admin key where `make localstack` keeps it. An edit that breaks an
// example fails here.
//
// The convention, in README.md: a fenced sh block right after a line
// `<!-- readme-test: anonymous ... -->` or `<!-- readme-test: keyed ... -->`
// is run, as one bash script (set -euo pipefail), in a scratch directory
// that holds ./bin/silt and .silt-services/localstack/admin-key. The test
// changes only the address: localhost:8080 becomes the agent's, and the
// CLI's default address is given as SILT_URL. curl fails on an HTTP error
// (--fail-with-body); a live tail (accept: text/event-stream) is read until
// its first record and then stopped. A comment line that is a JSON object
// (`# {...}`) is output the block must print. Every sh block that names
// localhost:8080 must carry a mark, so that no example goes untested.
func TestREADMEExamples(t *testing.T) {
	t.Parallel()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl is not installed; `make test` installs it (scripts/ensure-apt.sh)")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash is not installed")
	}
	_, file, _, _ := runtime.Caller(0)
	readme, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(file)), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeBlocks(t, string(readme))
	modes := map[string]int{}
	for _, b := range blocks {
		modes[b.mode]++
	}
	if modes["anonymous"] == 0 || modes["keyed"] == 0 {
		t.Fatalf("README.md has %d anonymous and %d keyed marked blocks; want both (see this test's comment)", modes["anonymous"], modes["keyed"])
	}

	bin := siltBinary(t)
	admin, _, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, filepath.Join(dir, "bin", "silt")); err != nil {
		t.Fatal(err)
	}
	keyDir := filepath.Join(dir, ".silt-services", "localstack")
	if err := os.MkdirAll(keyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keyDir, "admin-key"), []byte(admin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Each mode its own agent (and database): the examples name their own
	// topics, and the quickstart's must start empty.
	agents := map[string]string{
		"anonymous": newCluster(t).start("readme-anonymous").URL,
		"keyed":     newCluster(t, "SILT_AUTH=required", "SILT_BOOTSTRAP_ADMIN_KEY="+admin).start("readme-keyed").URL,
	}
	for i, b := range blocks {
		url := agents[b.mode]
		script := strings.ReplaceAll(b.text, "localhost:8080", strings.TrimPrefix(url, "http://"))
		out, errOut, err := runSnippet(t, bash, dir, curl, url, script)
		if err != nil {
			t.Fatalf("README block %d (line %d, %s) failed: %v\n--- script\n%s\n--- stdout\n%s\n--- stderr\n%s", i+1, b.line, b.mode, err, script, out, errOut)
		}
		for _, want := range b.outputs {
			if !strings.Contains(out, want) {
				t.Errorf("README block %d (line %d) should print %s; it printed:\n%s", i+1, b.line, want, out)
			}
		}
		t.Logf("README block %d (line %d, %s): ok, %d bytes of output", i+1, b.line, b.mode, len(out))
	}
}

type readmeBlock struct {
	mode    string // anonymous or keyed
	line    int    // of the fence
	text    string
	outputs []string // lines the block must print
}

var (
	readmeMark   = regexp.MustCompile(`^<!-- readme-test: (\w+)\b.*-->$`)
	readmeOutput = regexp.MustCompile(`^# (\{.*\})$`)
)

// readmeBlocks returns README.md's marked sh blocks, and fails on an
// unmarked sh block that talks to an agent or on a mark without a block.
func readmeBlocks(t *testing.T, readme string) []readmeBlock {
	t.Helper()
	lines := strings.Split(readme, "\n")
	var out []readmeBlock
	mode := ""
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if m := readmeMark.FindStringSubmatch(line); m != nil {
			if m[1] != "anonymous" && m[1] != "keyed" {
				t.Fatalf("README.md:%d: mode %q must be anonymous or keyed", i+1, m[1])
			}
			mode = m[1]
			continue
		}
		if !strings.HasPrefix(line, "```") {
			if line != "" {
				mode = ""
			}
			continue
		}
		fence, lang := i, strings.TrimPrefix(line, "```")
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, lines[i])
		}
		text := strings.Join(body, "\n") + "\n"
		switch {
		case mode != "" && lang != "sh":
			t.Fatalf("README.md:%d: a readme-test mark before a %q block, not sh", fence+1, lang)
		case mode != "":
			b := readmeBlock{mode: mode, line: fence + 1, text: text}
			for _, l := range body {
				if m := readmeOutput.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
					b.outputs = append(b.outputs, m[1])
				}
			}
			if !strings.Contains(text, "localhost:8080") && !strings.Contains(text, "./bin/silt") {
				t.Fatalf("README.md:%d: a marked block that talks to no agent", fence+1)
			}
			out = append(out, b)
		case lang == "sh" && strings.Contains(text, "localhost:8080"):
			t.Fatalf("README.md:%d: this sh block talks to an agent but has no readme-test mark, so nothing tests it", fence+1)
		}
		mode = ""
	}
	if mode != "" {
		t.Fatal("README.md: a readme-test mark at the end, without a block")
	}
	return out
}

// snippetPrelude makes curl fail on HTTP errors, and reads a live tail up
// to its first record, then stops it (a tail never ends by itself).
const snippetPrelude = `set -euo pipefail
curl() {
  case " $* " in
  *text/event-stream*)
    local out pid i=0
    out=$(mktemp "$TMPDIR/stream.XXXXXX")
    "$SNIPPET_CURL" --fail-with-body "$@" >"$out" &
    pid=$!
    until grep -q '^event: record' "$out"; do
      if ! kill -0 "$pid" 2>/dev/null; then
        cat "$out"; echo "the stream ended before its first record" >&2; return 1
      fi
      i=$((i+1))
      if [ "$i" -gt 600 ]; then
        kill "$pid"; cat "$out"; echo "no record on the stream within 60s" >&2; return 1
      fi
      sleep 0.1
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
    cat "$out";;
  *) "$SNIPPET_CURL" --fail-with-body "$@";;
  esac
}
`

// runSnippet runs a block with bash in dir, with a clean environment for
// curl and the CLI: no proxy, no curlrc, no key or address but the
// agent's (the CLI's default address becomes SILT_URL).
func runSnippet(t *testing.T, bash, dir, curl, url, script string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "-c", snippetPrelude+script)
	cmd.Dir = dir
	tmp := t.TempDir()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToLower(k) {
		case "http_proxy", "https_proxy", "all_proxy", "no_proxy", "curl_home", "silt_url", "silt_token", "silt_ca_file", "tmpdir":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, "SNIPPET_CURL="+curl, "CURL_HOME="+tmp, "TMPDIR="+tmp, "NO_PROXY=*", "SILT_URL="+url)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}
