package chaos

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"silt/localstack"
)

// raceEnabled is set when the tests run with -race; the agents are then
// built with -race too.
var raceEnabled bool

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// siltBinary builds ./cmd/silt once per test run.
func siltBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "silt-chaos-bin-"); buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		root, err := localstack.ModuleRoot(ctx)
		if err != nil {
			buildErr = err
			return
		}
		buildErr = localstack.BuildSilt(ctx, root, filepath.Join(buildDir, "silt"), raceEnabled)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "silt")
}

// needBin returns the binary an environment variable names, or fails.
func needBin(t *testing.T, key, what string) string {
	t.Helper()
	v := os.Getenv(key)
	if v == "" {
		if testing.Short() {
			t.Skipf("%s not available under -short (%s unset)", what, key)
		}
		t.Fatalf("%s is required: %s is unset. Run the tests with `make test`.", what, key)
	}
	return v
}

// smokeDir returns a scratch directory the postgres user can enter when
// the tests run as root.
func smokeDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != filepath.Dir(d) && d != os.TempDir(); d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	return dir
}

// The smoke run of the fault suite: every kind of fault once, under all
// the workloads, then the checker. SILT_CHAOS_SEED repeats a run.
func TestChaosSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cluster of real processes under faults")
	}
	minio := needBin(t, localstack.EnvMinIOBin, "MinIO")
	toxi := needBin(t, localstack.EnvToxiproxyBin, "Toxiproxy")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := smokeDir(t)
	bin := siltBinary(t)
	cfg := SmokeConfig()
	cfg.Seed = uint64(time.Now().UnixNano() % 1_000_000_000)
	if s := os.Getenv("SILT_CHAOS_SEED"); s != "" {
		var err error
		if cfg.Seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("SILT_CHAOS_SEED: %v", err)
		}
	}
	t.Logf("seed %d (repeat with SILT_CHAOS_SEED=%d)", cfg.Seed, cfg.Seed)
	// The history outlives a failing test, for a look or to judge it
	// again (ReadHistory, Check).
	out, err := os.MkdirTemp("", "silt-chaos-smoke-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("history and verdict kept in %s", out)
			return
		}
		os.RemoveAll(out)
	})
	cfg.StateDir, cfg.Out = filepath.Join(dir, "state"), out
	cfg.SiltBin, cfg.MinIOBin, cfg.ToxiproxyBin = bin, minio, toxi
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Write(out); err != nil {
		t.Fatal(err)
	}
	md := res.Markdown()
	if !res.Verdict.Valid {
		t.Fatalf("the checker found violations (seed %d):\n%s", cfg.Seed, md)
	}
	st := res.Verdict.Stats
	for _, k := range AllKinds {
		if st.Faults[k] == 0 {
			t.Errorf("fault %s never ran", k)
		}
	}
	if st.RecordsAcked == 0 || st.RecordsHanded == 0 || st.RecordsTailed == 0 || st.Ops[FIdemProduce][OK] == 0 || st.Ops[FGroupCommit][OK] == 0 {
		t.Errorf("the workloads did too little to check anything: %+v", st)
	}
	t.Log(md)
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}
