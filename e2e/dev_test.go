package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	kc "silt/internal/kafkaclients"
	"silt/internal/pgcluster"
)

// `silt dev` (what `make run` starts) needs no flags or services: it
// serves /healthz and /readyz, stops cleanly on Ctrl-C, and a second run
// reuses the data of the first.
func TestDevRunsAndReusesData(t *testing.T) {
	t.Parallel()
	bin := siltBinary(t)
	base := t.TempDir()
	// As root, the private Postgres runs as the postgres user: it must be
	// able to reach the data directory.
	for d := base; d != filepath.Dir(d) && d != os.TempDir(); d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	dataDir := filepath.Join(base, "silt")

	run := func(check func(url, kafka string)) {
		t.Helper()
		port, err := pgcluster.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		kport, err := pgcluster.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		url := fmt.Sprintf("http://127.0.0.1:%d", port)
		kafka := fmt.Sprintf("127.0.0.1:%d", kport)
		cmd := exec.Command(bin, "dev", "--data-dir", dataDir, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--kafka-listen", kafka)
		logPath := filepath.Join(base, "dev.log")
		logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer logFile.Close()
		cmd.Stdout, cmd.Stderr = logFile, logFile
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		defer func() {
			if t.Failed() {
				b, _ := os.ReadFile(logPath)
				t.Logf("silt dev log:\n%s", b)
			}
		}()
		waitFor(t, "silt dev ready", 90*time.Second, func() bool {
			select {
			case err := <-exited:
				t.Fatalf("silt dev exited early: %v", err)
			default:
			}
			for _, path := range []string{"/healthz", "/readyz"} {
				resp, err := http.Get(url + path)
				if err != nil {
					return false
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return false
				}
			}
			return true
		})
		check(url, kafka)
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("silt dev after Ctrl-C: %v", err)
			}
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatal("silt dev did not stop within 60s of Ctrl-C")
		}
	}

	run(func(url, kafka string) {
		if _, err := request("POST", url+"/v1/topics", map[string]any{"name": "kept", "partitions": 1}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := request("POST", url+"/v1/topics/kept/records", map[string]any{"records": []map[string]any{{"value": "first run"}}}, nil); err != nil {
			t.Fatal(err)
		}
		// The Kafka listener is on in dev, and creates topics on demand.
		kc.Run(t, []byte("k:over kafka\n"), "kcat", "-b", kafka, "-P", "-t", "auto", "-K:")
	})
	run(func(url, kafka string) {
		for topic, want := range map[string]string{"kept": `"first run"` /* the JSON value, as stored */, "auto": "over kafka"} {
			msgs := kc.KcatConsume(t, kafka, topic)
			if len(msgs) != 1 || msgs[0].Payload == nil || *msgs[0].Payload != want {
				t.Fatalf("second run, over Kafka, topic %s: %+v, want %q", topic, msgs, want)
			}
		}
		var resp struct {
			Records []struct {
				Value string `json:"value"`
			} `json:"records"`
		}
		if _, err := request("GET", url+"/v1/topics/kept/partitions/0/records?offset=0", nil, &resp); err != nil {
			t.Fatal(err)
		}
		if len(resp.Records) != 1 || resp.Records[0].Value != "first run" {
			t.Fatalf("second run read %+v, want the first run's record", resp.Records)
		}
	})
}
