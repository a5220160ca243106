package migrations_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
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

// applyUpTo applies the migrations up to version last as Apply would.
func applyUpTo(t *testing.T, pool *pgxpool.Pool, last int) {
	t.Helper()
	ctx := context.Background()
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE silt_schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		t.Fatal(err)
	}
	for _, m := range all {
		if m.Version > last {
			break
		}
		if _, err := pool.Exec(ctx, m.SQL); err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		if _, err := pool.Exec(ctx, "INSERT INTO silt_schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
			t.Fatal(err)
		}
	}
}

// Migration 0008 gives the index rows already there their running maximum
// timestamps, per partition in offset order, and each partition its
// greatest timestamp.
func TestTimeIndexBackfill(t *testing.T) {
	ctx := context.Background()
	pool, _ := setup(t)
	applyUpTo(t, pool, 7)
	var topic, seg int64
	if err := pool.QueryRow(ctx, `INSERT INTO topics (name, partitions) VALUES ('t', 3) RETURNING id`).Scan(&topic); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO partitions (topic_id, partition) SELECT $1, g FROM generate_series(0, 2) g`, topic); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO segments (key, size) VALUES ('s', 1) RETURNING id`).Scan(&seg); err != nil {
		t.Fatal(err)
	}
	// Partition 0 (inserted out of offset order) and 1 have rows;
	// partition 2 none.
	ts := map[int32][]int64{0: {300, 100, 500, 200, 600, 50}, 1: {7, 9, 8}}
	for _, part := range []int32{1, 0} {
		for i := len(ts[part]) - 1; i >= 0; i-- {
			if _, err := pool.Exec(ctx, `
				INSERT INTO batches (topic_id, partition, base_offset, last_offset, record_count, max_timestamp, segment_id, byte_offset, byte_length)
				VALUES ($1, $2, $3, $3, 1, $4, $5, 0, 1)`, topic, part, int64(i), ts[part][i], seg); err != nil {
				t.Fatal(err)
			}
		}
	}
	applied, err := migrations.Apply(ctx, pool)
	if err != nil || len(applied) == 0 || applied[0] != "0008_time_index.sql" {
		t.Fatalf("applied %v, %v; want 0008_time_index.sql first", applied, err)
	}
	want := map[int32][]int64{0: {300, 300, 500, 500, 600, 600}, 1: {7, 9, 9}}
	for part, w := range want {
		var got []int64
		if err := pool.QueryRow(ctx, `SELECT array_agg(running_max_ts ORDER BY last_offset) FROM batches WHERE topic_id = $1 AND partition = $2`,
			topic, part).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(w) {
			t.Fatalf("partition %d: running maxima %v, want %v", part, got, w)
		}
		for i := range w {
			if got[i] != w[i] {
				t.Fatalf("partition %d: running maxima %v, want %v", part, got, w)
			}
		}
	}
	rows, err := pool.Query(ctx, `SELECT max_timestamp FROM partitions WHERE topic_id = $1 ORDER BY partition`, topic)
	if err != nil {
		t.Fatal(err)
	}
	maxes, err := pgx.CollectRows(rows, pgx.RowTo[*int64])
	if err != nil {
		t.Fatal(err)
	}
	if len(maxes) != 3 || maxes[0] == nil || *maxes[0] != 600 || maxes[1] == nil || *maxes[1] != 9 || maxes[2] != nil {
		t.Fatalf("partitions' max timestamps %v, want 600, 9, none", maxes)
	}
}
