package pgcluster

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// reachableTempDir returns a temporary directory the postgres user can
// enter when the tests run as root.
func reachableTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != filepath.Dir(d) && d != os.TempDir(); d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	return dir
}

func query(t *testing.T, url, sql string, args ...any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// A standby made with pg_basebackup and made synchronous holds every
// commit the primary acknowledged: after the primary is killed and the
// standby promoted, the rows are there and the new primary takes writes
// without waiting for a standby. A crashed server restarts with crash
// recovery.
func TestStandbyPromotionKeepsSynchronousCommits(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real PostgreSQL clusters")
	}
	t.Parallel()
	dir := reachableTempDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := DefaultConfig()
	cfg.RelocateRoot = ""
	cfg.DataDir = filepath.Join(dir, "a")
	primary, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = primary.Kill(context.Background()) })
	execSQL(t, primary, "CREATE TABLE t (n int)")
	scfg := cfg
	scfg.DataDir = filepath.Join(dir, "b")
	standby, err := StartStandby(ctx, scfg, primary)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = standby.Kill(context.Background()) })
	if err := SyncStandby(ctx, primary); err != nil {
		t.Fatal(err)
	}
	if got := query(t, primary.URL("postgres"), "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND sync_state = 'sync'", StandbyName); got != 1 {
		t.Fatalf("%d synchronous standbys, want 1", got)
	}
	execSQL(t, primary, "INSERT INTO t SELECT generate_series(1, 1000)")
	if err := primary.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if err := standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if got := query(t, standby.URL("postgres"), "SELECT count(*) FROM t"); got != 1000 {
		t.Fatalf("the promoted standby has %d rows, want 1000", got)
	}
	execSQL(t, standby, "INSERT INTO t VALUES (0)") // would hang if it waited for a standby
	if err := standby.StopImmediate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := standby.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := query(t, standby.URL("postgres"), "SELECT count(*) FROM t"); got != 1001 {
		t.Fatalf("after crash recovery %d rows, want 1001", got)
	}
	// The killed primary's directory is made into a standby of the new one.
	if err := primary.Remove(); err != nil {
		t.Fatal(err)
	}
	cfg.Port = primary.Port()
	again, err := StartStandby(ctx, cfg, standby)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = again.Kill(context.Background()) })
	if err := SyncStandby(ctx, standby); err != nil {
		t.Fatal(err)
	}
	execSQL(t, standby, "INSERT INTO t VALUES (0)")
	if got := query(t, again.URL("postgres"), "SELECT count(*) FROM t"); got != 1002 {
		t.Fatalf("the new standby has %d rows, want 1002", got)
	}
}
