package pgcluster

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestReadPointerAcceptsOnlyDirectoriesRightUnderRoot(t *testing.T) {
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "pg")
	root := "/var/lib/silt"
	if got, err := readPointer(dataDir, root); err != nil || got != "" {
		t.Fatalf("no pointer: got %q, %v; want none", got, err)
	}
	for _, tc := range []struct {
		content string
		want    string // "" means rejected
	}{
		{"/var/lib/silt/0123456789abcdef\n", "/var/lib/silt/0123456789abcdef"},
		{"/var/lib/silt/0123456789abcdef", "/var/lib/silt/0123456789abcdef"},
		{"/etc\n", ""},
		{"/var/lib/silt\n", ""},
		{"/var/lib/silt/a/b\n", ""},
		{"/var/lib/silt/../../etc\n", ""},
		{"var/lib/silt/x\n", ""},
		{"\n", ""},
	} {
		if err := os.WriteFile(PointerFile(dataDir), []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := readPointer(dataDir, root)
		if tc.want == "" {
			if err == nil {
				t.Errorf("pointer %q accepted as %q; want an error", tc.content, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("pointer %q: got %q, %v; want %q", tc.content, got, err, tc.want)
		}
	}
	if _, err := readPointer(dataDir, ""); err == nil {
		t.Errorf("a pointer was followed with relocation disabled")
	}
}

// A data directory the postgres user cannot reach (root only) gets its
// cluster under RelocateRoot; the pointer keeps later starts there, and
// without the pointer the old cluster is replaced by a fresh one. As any
// other user the cluster stays where it was asked to be.
func TestStartRelocatesUnreachableDataDir(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real PostgreSQL clusters")
	}
	private := t.TempDir()
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	reachable := t.TempDir()
	for d := reachable; d != filepath.Dir(d) && d != os.TempDir(); d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(private, "pg")
	cfg.RelocateRoot = filepath.Join(reachable, "root")
	cfg.Fast = true
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		_ = StopDataDir(context.Background(), cfg)
		_ = os.RemoveAll(cfg.RelocateRoot)
	})

	start := func() *Cluster {
		t.Helper()
		c, err := Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	stop := func(c *Cluster) {
		t.Helper()
		if err := c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}

	c := start()
	wantDir := cfg.DataDir
	if os.Geteuid() == 0 {
		wantDir = relocatedDir(cfg.RelocateRoot, cfg.DataDir)
		b, err := os.ReadFile(PointerFile(cfg.DataDir))
		if err != nil || strings.TrimSpace(string(b)) != wantDir {
			t.Fatalf("pointer file: %q, %v; want %s", b, err, wantDir)
		}
	} else if _, err := os.Stat(PointerFile(cfg.DataDir)); err == nil {
		t.Fatalf("as uid %d the cluster was relocated", os.Geteuid())
	}
	if c.DataDir() != wantDir {
		t.Fatalf("cluster in %s, want %s", c.DataDir(), wantDir)
	}
	if _, err := os.Stat(filepath.Join(wantDir, "PG_VERSION")); err != nil {
		t.Fatal(err)
	}
	execSQL(t, c, "CREATE DATABASE kept")
	stop(c)

	c = start()
	if c.DataDir() != wantDir {
		t.Fatalf("second start: cluster in %s, want %s", c.DataDir(), wantDir)
	}
	if !hasDatabase(t, c, "kept") {
		t.Fatal("second start lost the database of the first")
	}
	stop(c)

	if os.Geteuid() != 0 {
		return
	}
	// The data directory was deleted (rm -rf .silt): its old cluster must not come back.
	if err := os.Remove(PointerFile(cfg.DataDir)); err != nil {
		t.Fatal(err)
	}
	c = start()
	if c.DataDir() != wantDir {
		t.Fatalf("fresh start: cluster in %s, want %s", c.DataDir(), wantDir)
	}
	if hasDatabase(t, c, "kept") {
		t.Fatal("without its pointer the old relocated cluster was reused")
	}
	stop(c)
}

func execSQL(t *testing.T, c *Cluster, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
}

func hasDatabase(t *testing.T, c *Cluster, name string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// A fast cluster trades durability away; a cluster that is not fast runs
// durable even on a data directory a fast one used before (benchmarks
// depend on it).
func TestFastOnlyTurnsDurabilityOff(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real PostgreSQL cluster")
	}
	dir := t.TempDir()
	for d := dir; d != filepath.Dir(d) && d != os.TempDir(); d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "pg")
	cfg.RelocateRoot = filepath.Join(dir, "root")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t.Cleanup(func() { _ = StopDataDir(context.Background(), cfg) })
	for _, fast := range []bool{true, false} {
		cfg.Fast = fast
		c, err := Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		want := "on"
		if fast {
			want = "off"
		}
		for _, setting := range []string{"fsync", "synchronous_commit", "full_page_writes"} {
			if got := showSetting(t, c, setting); got != want {
				t.Errorf("fast=%v: %s = %q, want %q", fast, setting, got, want)
			}
		}
		if err := c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func showSetting(t *testing.T, c *Cluster, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}
