package localstack

import (
	_ "embed"
	"fmt"
	"strings"
)

//go:embed agent.env
var agentEnvFile string

// SharedAgentEnv returns the settings of localstack/agent.env as
// KEY=VALUE pairs: the configuration every agent of the local cluster
// runs with, under docker-compose and natively alike.
func SharedAgentEnv() []string {
	env, err := ParseEnvFile(agentEnvFile)
	if err != nil {
		panic(err) // the embedded file is checked by the tests
	}
	return env
}

// ParseEnvFile reads the subset of the env-file format that both Docker
// Compose and this package understand: KEY=VALUE lines, blank lines and
// lines starting with #. Values are taken literally (no quotes, no
// interpolation).
func ParseEnvFile(text string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t\"'$") {
			return nil, fmt.Errorf("localstack: env file line %d: want KEY=VALUE, got %q", i+1, line)
		}
		if strings.ContainsAny(v, "\"'$#") {
			return nil, fmt.Errorf("localstack: env file line %d: value of %s must not need quoting or interpolation", i+1, k)
		}
		if seen[k] {
			return nil, fmt.Errorf("localstack: env file line %d: %s set twice", i+1, k)
		}
		seen[k] = true
		out = append(out, k+"="+v)
	}
	return out, nil
}
