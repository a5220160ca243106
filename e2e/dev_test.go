package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
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
	// As root, the private Postgres runs as the postgres user: here the
	// data directory is made reachable, so it stays where it was asked to be
	// (TestDevInPrivateParentDir covers the other case).
	for d := base; d != filepath.Dir(d) && d != os.TempDir(); d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	dataDir := filepath.Join(base, "silt")
	dev := devRunner{bin: bin, dir: base, args: []string{"--data-dir", dataDir}, log: filepath.Join(base, "dev.log")}

	dev.run(t, func(url, kafka string) {
		produceOne(t, url, "kept", "first run")
		// The Kafka listener is on in dev, and creates topics on demand.
		kc.Run(t, []byte("k:over kafka\n"), "kcat", "-b", kafka, "-P", "-t", "auto", "-K:")
	})
	dev.run(t, func(url, kafka string) {
		expectOne(t, url, "kept", "first run")
		for topic, want := range map[string]string{"kept": `"first run"` /* the JSON value, as stored */, "auto": "over kafka"} {
			msgs := kc.KcatConsume(t, kc.Plain(kafka), topic)
			if len(msgs) != 1 || msgs[0].Payload == nil || *msgs[0].Payload != want {
				t.Fatalf("second run, over Kafka, topic %s: %+v, want %q", topic, msgs, want)
			}
		}
	})
	if _, err := os.Stat(filepath.Join(dataDir, "pg", "PG_VERSION")); err != nil {
		t.Errorf("the cluster is not in the data directory: %v", err)
	}
	if _, err := os.Stat(pgcluster.PointerFile(filepath.Join(dataDir, "pg"))); err == nil {
		t.Errorf("a reachable data directory was relocated")
	}
}

// `make run` in a checkout under a directory only its owner may enter (a
// mktemp -d folder, root's home on a fresh machine) works as it does
// elsewhere. As root, the postgres user cannot reach ./.silt/pg, so the
// cluster lives in a postgres-owned directory that ./.silt/pg.location
// names; as another user it stays in ./.silt/pg. Either way the data
// survives a restart.
func TestDevInPrivateParentDir(t *testing.T) {
	t.Parallel()
	bin := siltBinary(t)
	private := t.TempDir()
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	checkout := filepath.Join(private, "checkout")
	if err := os.Mkdir(checkout, 0o755); err != nil {
		t.Fatal(err)
	}
	pgDir := filepath.Join(checkout, ".silt", "pg")
	t.Cleanup(func() { cleanupDevCluster(t, pgDir) })
	// No --data-dir: the default ./.silt in the working directory, as make run.
	dev := devRunner{bin: bin, dir: checkout, log: filepath.Join(private, "dev.log")}

	dev.run(t, func(url, _ string) { produceOne(t, url, "private", "before restart") })

	pointer := pgcluster.PointerFile(pgDir)
	if os.Geteuid() != 0 {
		if _, err := os.Stat(filepath.Join(pgDir, "PG_VERSION")); err != nil {
			t.Fatalf("as uid %d the cluster should stay in %s: %v", os.Geteuid(), pgDir, err)
		}
		if _, err := os.Stat(pointer); err == nil {
			t.Fatalf("as uid %d the cluster was relocated (%s exists)", os.Geteuid(), pointer)
		}
	} else {
		b, err := os.ReadFile(pointer)
		if err != nil {
			t.Fatalf("as root with an unreachable ./.silt the pointer file should exist: %v", err)
		}
		target := strings.TrimSpace(string(b))
		if filepath.Dir(target) != pgcluster.DefaultRelocateRoot {
			t.Fatalf("pointer names %q, want a directory under %s", target, pgcluster.DefaultRelocateRoot)
		}
		fi, err := os.Stat(filepath.Join(target, "PG_VERSION"))
		if err != nil {
			t.Fatalf("relocated cluster: %v", err)
		}
		pgUser, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		if uid := strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Uid)); uid != pgUser.Uid {
			t.Fatalf("relocated cluster owned by uid %s, want postgres (%s)", uid, pgUser.Uid)
		}
		if _, err := os.Stat(filepath.Join(pgDir, "PG_VERSION")); err == nil {
			t.Fatalf("a cluster was initialized in the unreachable %s too", pgDir)
		}
	}

	dev.run(t, func(url, _ string) { expectOne(t, url, "private", "before restart") })
}

// cleanupDevCluster stops a server left on pgDir (or where its pointer
// leads) and removes a relocated cluster directory.
func cleanupDevCluster(t *testing.T, pgDir string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := pgcluster.DefaultConfig()
	cfg.DataDir = pgDir
	if err := pgcluster.StopDataDir(ctx, cfg); err != nil {
		t.Errorf("stop leftover postgres: %v", err)
	}
	b, err := os.ReadFile(pgcluster.PointerFile(pgDir))
	if err != nil {
		return
	}
	target := strings.TrimSpace(string(b))
	if filepath.Dir(target) != pgcluster.DefaultRelocateRoot {
		t.Errorf("not removing %q: not under %s", target, pgcluster.DefaultRelocateRoot)
		return
	}
	if err := os.RemoveAll(target); err != nil {
		t.Errorf("remove relocated cluster: %v", err)
	}
}

// devRunner runs `silt dev` in a working directory.
type devRunner struct {
	bin  string
	dir  string   // working directory
	args []string // after "dev" and before --listen
	log  string   // appended to by every run; shown when the test fails
}

// run starts silt dev, waits for /healthz and /readyz, calls check with
// its HTTP URL and Kafka address, stops it with Ctrl-C (SIGINT) and
// expects a clean exit.
func (d devRunner) run(t *testing.T, check func(url, kafka string)) {
	t.Helper()
	// Free ports are free when picked, not always when silt dev binds
	// them (parallel tests pick too): a start lost to that race is retried
	// on other ports.
	for attempt := 1; ; attempt++ {
		if d.try(t, check, attempt == 3) {
			return
		}
		t.Logf("silt dev lost its ports to another process (attempt %d); again on others", attempt)
	}
}

// try is one run of silt dev; it returns false, having checked nothing,
// when silt dev could not bind its ports and retry is allowed.
func (d devRunner) try(t *testing.T, check func(url, kafka string), last bool) bool {
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
	args := append(append([]string{"dev"}, d.args...), "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--kafka-listen", kafka)
	cmd := exec.Command(d.bin, args...)
	cmd.Dir = d.dir
	logFile, err := os.OpenFile(d.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	logStart, _ := logFile.Seek(0, io.SeekEnd)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if t.Failed() {
			_ = cmd.Process.Kill()
			b, _ := os.ReadFile(d.log)
			t.Logf("silt dev log:\n%s", b)
		}
	}()
	portTaken := false
	waitFor(t, "silt dev ready", 90*time.Second, func() bool {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(d.log)
			if !last && int64(len(b)) > logStart && strings.Contains(string(b[logStart:]), "address already in use") {
				portTaken = true
				return true
			}
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
	if portTaken {
		return false
	}
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
	return true
}

// produceOne creates a one-partition topic and produces one record to it.
func produceOne(t *testing.T, url, topic, value string) {
	t.Helper()
	if _, err := request("POST", url+"/v1/topics", map[string]any{"name": topic, "partitions": 1}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := request("POST", url+"/v1/topics/"+topic+"/records", map[string]any{"records": []map[string]any{{"value": value}}}, nil); err != nil {
		t.Fatal(err)
	}
}

// expectOne reads partition 0 of topic from the start and expects exactly
// the one record produceOne wrote.
func expectOne(t *testing.T, url, topic, value string) {
	t.Helper()
	var resp struct {
		Records []struct {
			Value string `json:"value"`
		} `json:"records"`
	}
	if _, err := request("GET", url+"/v1/topics/"+topic+"/partitions/0/records?offset=0", nil, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Records) != 1 || resp.Records[0].Value != value {
		t.Fatalf("read %+v, want the one record %q of the first run", resp.Records, value)
	}
}
