package migrations_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"silt/internal/testenv"
	"silt/migrations"
)

func setup(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	url := testenv.PostgresURL(t)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool, url
}

func TestAllOrderedAndNamed(t *testing.T) {
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) == 0 {
		t.Fatal("no migrations embedded")
	}
	want := 1
	for _, m := range all {
		if m.Version != want {
			t.Errorf("migration %s has version %d, want %d (contiguous from 1)", m.Name, m.Version, want)
		}
		want = m.Version + 1
	}
}

// Ten agents starting at once apply each migration exactly once.
func TestApplyConcurrentOnce(t *testing.T) {
	ctx := context.Background()
	_, url := setup(t)
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	const n = 10
	var wg sync.WaitGroup
	applied := make([][]string, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pool, err := pgxpool.New(ctx, url) // one pool per "agent"
			if err != nil {
				errs[i] = err
				return
			}
			defer pool.Close()
			applied[i], errs[i] = migrations.Apply(ctx, pool)
		}()
	}
	wg.Wait()
	total := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("agent %d: %v", i, errs[i])
		}
		total += len(applied[i])
	}
	if total != len(all) {
		t.Fatalf("applied %d migrations across agents, want exactly %d", total, len(all))
	}
	pool, _ := pgxpool.New(ctx, url)
	defer pool.Close()
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM silt_schema_migrations").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != len(all) {
		t.Fatalf("version table has %d rows, want %d", rows, len(all))
	}
	// Idempotent: a second run applies nothing.
	again, err := migrations.Apply(ctx, pool)
	if err != nil || len(again) != 0 {
		t.Fatalf("second apply = %v, %v; want nothing", again, err)
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	pool, _ := setup(t)
	if _, err := migrations.Apply(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "INSERT INTO silt_schema_migrations (version, name) VALUES (9999, '9999_future.sql')"); err != nil {
		t.Fatal(err)
	}
	_, err := migrations.Apply(ctx, pool)
	if !errors.Is(err, migrations.ErrNewerSchema) {
		t.Fatalf("err = %v, want ErrNewerSchema", err)
	}
}
