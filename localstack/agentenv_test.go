package localstack

import (
	"strings"
	"testing"
)

func TestSharedAgentEnv(t *testing.T) {
	env := SharedAgentEnv()
	if len(env) == 0 {
		t.Fatal("agent.env sets nothing")
	}
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "SILT_") {
			t.Errorf("%s: agent.env holds agent flags only", k)
		}
		switch k {
		case "SILT_AGENT_ID", "SILT_LISTEN", "SILT_ADVERTISE_ADDRESS", "SILT_DATABASE_URL", "SILT_OBJECTSTORE":
			t.Errorf("%s is per agent or per runner; it does not belong in agent.env", k)
		}
	}
}

func TestParseEnvFile(t *testing.T) {
	got, err := ParseEnvFile("# comment\n\nA=1\n  B=two words \nC=\n")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, "|") != "A=1|B=two words|C=" {
		t.Fatalf("got %q", got)
	}
	for _, bad := range []string{"NOEQUALS", "=x", "A=1\nA=2", `A="quoted"`, "A=$HOME", "A B=1"} {
		if _, err := ParseEnvFile(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestS3URL(t *testing.T) {
	got := S3URL("http://127.0.0.1:9000", "silt", "/p/")
	if got != "s3://silt/p?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=us-east-1" {
		t.Fatal(got)
	}
}
